//! The webhook on the real kube-apiserver, with certificates the operator provisioned itself:
//! the Secret and the `caBundle` are written by `SelfProvisioned`, the API server calls
//! `https://127.0.0.1:<port>/mutate` and stores what the patch made of the pod.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::Request;
use harness::{ControlPlane, Options};
use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, WebhookClientConfig};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, PostParams};
use operator::webhook::certs;
use operator::webhook::config::mutating_webhook_configuration;
use operator::webhook::provision::{SelfProvisioned, read_secret};
use operator::webhook::{self, CertSource, WebhookState};
use operator::{SIDECAR_NAME, SidecarSettings, TOKEN_VOLUME_NAME};
use serde_json::Value;

const CRD: &str = include_str!("../../crds/dumppolicy.yaml");

const SETUP: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {dumpwatch.dev/inject: enabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: plain}
---
apiVersion: v1
kind: Namespace
metadata: {name: dumpwatch}
---
# As the chart makes it: empty, for the operator to fill.
apiVersion: v1
kind: Secret
metadata: {name: dumpwatch-operator-tls, namespace: dumpwatch, annotations: {helm.sh/resource-policy: keep}}
type: Opaque
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: default, namespace: shop}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: default, namespace: plain}
---
apiVersion: dumpwatch.dev/v1alpha1
kind: DumpPolicy
metadata: {name: orders, namespace: shop}
spec:
  selector: {matchLabels: {app: orders}}
  mode: listen
  triggers: [{type: deadlock}]
---
apiVersion: dumpwatch.dev/v1alpha1
kind: DumpPolicy
metadata: {name: orders, namespace: plain}
spec:
  selector: {matchLabels: {app: orders}}
  mode: listen
  triggers: [{type: deadlock}]
"#;

/// A bare apiserver (the harness retries a start whose port was taken in between).
fn start_apiserver() -> ControlPlane {
    ControlPlane::start_with(Options { controller_manager: false, node_agent: false, ..Options::default() })
        .expect("control plane starts")
}

fn pod_manifest(namespace: &str, name: &str, app: &str) -> String {
    format!(
        r#"{{"apiVersion": "v1", "kind": "Pod",
            "metadata": {{"name": "{name}", "namespace": "{namespace}", "labels": {{"app": "{app}"}}}},
            "spec": {{"containers": [{{"name": "api", "image": "orders:1"}}]}}}}"#
    )
}

fn containers(pod: &Value) -> Vec<String> {
    pod["spec"]["containers"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap().to_string()).collect()
}

/// Starts the webhook server on a free loopback port; the body of every `/mutate` request
/// is kept in `seen` (the real AdmissionReview the API server sends).
async fn start_server(
    state: WebhookState,
    certs: CertSource,
    seen: Arc<Mutex<Vec<Bytes>>>,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let capture = axum::middleware::from_fn(move |req: Request, next: axum::middleware::Next| {
        let seen = seen.clone();
        async move {
            let (parts, body) = req.into_parts();
            let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
            if parts.uri.path() == "/mutate" {
                seen.lock().unwrap().push(bytes.clone());
            }
            next.run(Request::from_parts(parts, Body::from(bytes))).await
        }
    });
    let router = webhook::router(state).layer(capture);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { webhook::serve_on(listener, certs, router).await.unwrap() });
    (addr, server)
}

async fn wait_until<F: Future<Output = bool>>(what: &str, timeout: Duration, mut check: impl FnMut() -> F) {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The serial of the certificate served at `addr`, checked against `ca_pem` for 127.0.0.1.
async fn served_serial(addr: SocketAddr, ca_pem: &str) -> Vec<u8> {
    let conn = support::https::connect(addr, "127.0.0.1", ca_pem).await.expect("a TLS connection trusting our CA");
    certs::inspect_der(&conn.server_cert).unwrap().serial
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apiserver_injects_through_self_provisioned_certificates() {
    let cp = tokio::task::spawn_blocking(start_apiserver).await.unwrap();
    cp.apply(CRD).unwrap();
    cp.kubectl(&["wait", "--for=condition=Established", "crd/dumppolicies.dumpwatch.dev", "--timeout=60s"]).unwrap();
    cp.apply(SETUP).unwrap();

    let kubeconfig = kube::config::Kubeconfig::read_from(cp.kubeconfig()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap();
    let client = kube::Client::try_from(config).unwrap();

    // The server starts without a certificate; the provisioner gives it one.
    let certs = CertSource::awaiting_ca_bundle();
    let (policies, reflect) = webhook::policy_cache(client.clone());
    tokio::spawn(reflect);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sidecar =
        SidecarSettings { operator_url: "https://dumpwatch-operator.dumpwatch.svc:8443".into(), ..Default::default() };
    let state = WebhookState {
        policies: policies.clone(),
        sidecar,
        certs: certs.clone(),
        latency: operator::webhook::latency_histogram(),
    };
    let (addr, server) = start_server(state, certs.clone(), seen.clone()).await;

    let provisioner = SelfProvisioned {
        client: client.clone(),
        namespace: "dumpwatch".into(),
        secret_name: "dumpwatch-operator-tls".into(),
        webhook_config_name: "dumpwatch".into(),
        sans: certs::serving_sans("dumpwatch-operator", "dumpwatch", &["127.0.0.1".into()]),
    };
    // Before the webhook configuration exists: a certificate is served, but the API server could
    // not verify it, so the operator must not be ready (a pod created now would go uninjected).
    provisioner.ensure(&certs).await.expect("certificates provisioned");
    assert!(certs.is_loaded() && !certs.is_trusted(), "{certs:?}");

    // Registered by URL (the API server runs outside any cluster network), caBundle empty.
    let url = format!("https://127.0.0.1:{}/mutate", addr.port());
    let mwc = mutating_webhook_configuration("dumpwatch", WebhookClientConfig { url: Some(url), ..Default::default() });
    let configs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    configs.create(&PostParams::default(), &mwc).await.unwrap();

    let provisioned = provisioner.ensure(&certs).await.expect("certificates provisioned");
    assert!(certs.is_trusted(), "the caBundle holds the served CA: {certs:?}");

    // Ground truth: the Secret and the configuration as the API server stores them.
    let secret = Api::<Secret>::namespaced(client.clone(), "dumpwatch").get("dumpwatch-operator-tls").await.unwrap();
    let (ca, serving) = read_secret(&secret).unwrap();
    assert_eq!((&ca, serving.as_ref()), (&provisioned.ca, Some(&provisioned.serving)));
    assert_eq!(secret.metadata.annotations.unwrap()["helm.sh/resource-policy"], "keep", "the chart's Secret, filled");
    let stored_mwc = configs.get("dumpwatch").await.unwrap();
    let bundle = stored_mwc.webhooks.unwrap()[0].client_config.ca_bundle.clone().expect("caBundle patched");
    assert_eq!(bundle.0, ca.cert.as_bytes());
    // A second replica (or a restart) adopts the same CA and serving certificate: no write.
    let again = provisioner.ensure(&CertSource::empty()).await.unwrap();
    assert_eq!(again, provisioned);
    let first_serial = served_serial(addr, &ca.cert).await;

    let pods: Api<Pod> = Api::all(client.clone());
    wait_until("the policy cache", Duration::from_secs(30), || {
        let n = policies.state().len();
        async move { n == 2 }
    })
    .await;

    // Opted-in namespace, matching labels: injected.
    cp.apply(&pod_manifest("shop", "orders-1", "orders")).unwrap();
    let stored = cp.kubectl_json(&["get", "pod", "orders-1", "-n", "shop"]).unwrap();
    assert_eq!(containers(&stored), ["api", SIDECAR_NAME], "{stored:#}");
    assert_eq!(stored["metadata"]["annotations"]["dumpwatch.dev/injected"], "orders");
    let volumes: Vec<&str> =
        stored["spec"]["volumes"].as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert!(volumes.contains(&TOKEN_VOLUME_NAME), "{volumes:?}");
    let sidecar_env = &stored["spec"]["containers"][1]["env"];
    let ca_env = sidecar_env.as_array().unwrap().iter().find(|e| e["name"] == "DUMPWATCH_OPERATOR_CA").unwrap();
    assert_eq!(ca_env["value"].as_str().unwrap(), ca.cert, "the sidecar is told the CA the operator serves with");

    // The request as the API server sent it, answered by the pure function alone.
    let body = seen.lock().unwrap().first().cloned().expect("the API server called the webhook");
    // To refresh the unit tests' fixtures (operator/src/webhook/testdata/): the first call and
    // the reinvocation on the patched pod.
    if let Ok(prefix) = std::env::var("DUMPWATCH_SAVE_ADMISSION_REVIEWS") {
        for (i, body) in seen.lock().unwrap().iter().enumerate() {
            std::fs::write(format!("{prefix}{i}.json"), body).unwrap();
        }
    }
    let review: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(review["request"]["operation"], "CREATE");
    assert_eq!(review["request"]["namespace"], "shop");

    // Not opted in: the API server does not even ask.
    let calls = seen.lock().unwrap().len();
    cp.apply(&pod_manifest("plain", "orders-1", "orders")).unwrap();
    let stored = cp.kubectl_json(&["get", "pod", "orders-1", "-n", "plain"]).unwrap();
    assert_eq!(containers(&stored), ["api"]);
    assert_eq!(seen.lock().unwrap().len(), calls, "an unlabeled namespace is not sent to the webhook");

    // Opted in, but no policy selects the pod.
    cp.apply(&pod_manifest("shop", "billing-1", "billing")).unwrap();
    let stored = cp.kubectl_json(&["get", "pod", "billing-1", "-n", "shop"]).unwrap();
    assert_eq!(containers(&stored), ["api"]);
    assert_eq!(seen.lock().unwrap().len(), calls + 1, "asked, and answered without a patch");

    // A server-side dry run is injected too (sideEffects: None), and nothing is stored.
    let dry = cp
        .kubectl_stdin(
            &["create", "--dry-run=server", "-o", "json", "-f", "-"],
            &pod_manifest("shop", "orders-dry", "orders"),
        )
        .unwrap();
    let dry: Value = serde_json::from_str(&dry).unwrap();
    assert_eq!(containers(&dry), ["api", SIDECAR_NAME]);
    assert!(cp.kubectl(&["get", "pod", "orders-dry", "-n", "shop"]).is_err());

    // Rotation: a new serving certificate is served without a restart, and the API server
    // (whose kept-alive connections the swap closes) trusts it: the next pod is injected.
    let rotated = provisioner.rotate_now(&certs).await.unwrap();
    assert_eq!(rotated.ca, provisioned.ca, "the CA stays");
    assert_ne!(rotated.serving, provisioned.serving);
    let second_serial = served_serial(addr, &ca.cert).await;
    assert_ne!(second_serial, first_serial, "the new certificate is served");
    assert_eq!(second_serial, certs::inspect(&rotated.serving.cert).unwrap().serial);
    let secret = Api::<Secret>::namespaced(client.clone(), "dumpwatch").get("dumpwatch-operator-tls").await.unwrap();
    assert_eq!(read_secret(&secret).unwrap().1.as_ref(), Some(&rotated.serving), "stored for the other replicas");
    let calls = seen.lock().unwrap().len();
    cp.apply(&pod_manifest("shop", "orders-2", "orders")).unwrap();
    let stored = cp.kubectl_json(&["get", "pod", "orders-2", "-n", "shop"]).unwrap();
    assert_eq!(containers(&stored), ["api", SIDECAR_NAME], "injected through the rotated certificate");
    // (The API server may call again: reinvocationPolicy IfNeeded; the second answer adds nothing.)
    assert!(seen.lock().unwrap().len() > calls);

    // Server down: failurePolicy Ignore, the pod is created as it is.
    server.abort();
    let _ = server.await;
    let started = Instant::now();
    cp.apply(&pod_manifest("shop", "orders-3", "orders")).unwrap();
    let stored = cp.kubectl_json(&["get", "pod", "orders-3", "-n", "shop"]).unwrap();
    assert_eq!(containers(&stored), ["api"], "created without the sidecar while the webhook is down");
    eprintln!("pod created with the webhook down in {:?}", started.elapsed());
    let _ = pods;
}
