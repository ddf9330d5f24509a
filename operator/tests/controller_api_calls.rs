//! What the controllers ask of the API server, counted on the kube client's own request stack
//! against a real kube-apiserver: once the caches are full, pod events in a namespace without
//! policies cost no request at all, and a pod event a policy selects costs one status write; a
//! policy's DumpStore comes from the cache, not a GET per reconcile.

mod controller_support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::DumpPolicy;
use controller_support::{client, eventually, run_controllers, start, stop};
use harness::Options;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use operator::controller::AnalysisSettings;
use serde_json::json;

/// Requests by "METHOD path" (watches apart: a watch is one long request, not a call per event).
type Counts = Arc<Mutex<BTreeMap<String, u64>>>;

async fn counting_client(cp: &harness::ControlPlane, counts: Counts) -> kube::Client {
    let kubeconfig = Kubeconfig::read_from(cp.kubeconfig()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap();
    let count = tower::util::MapRequestLayer::new(move |req: http::Request<kube::client::Body>| {
        let watch = req.uri().query().is_some_and(|q| q.split('&').any(|kv| kv == "watch=true"));
        let key = format!("{}{} {}", if watch { "WATCH " } else { "" }, req.method(), req.uri().path());
        *counts.lock().unwrap().entry(key).or_default() += 1;
        req
    });
    kube::client::ClientBuilder::try_from(config).unwrap().with_layer(&count).build()
}

fn calls(counts: &Counts) -> BTreeMap<String, u64> {
    counts.lock().unwrap().iter().filter(|(k, _)| !k.starts_with("WATCH ")).map(|(k, v)| (k.clone(), *v)).collect()
}

fn diff(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after.iter().map(|(k, v)| (k.clone(), v - before.get(k).unwrap_or(&0))).filter(|(_, n)| *n > 0).collect()
}

/// Waits until no request was made for `quiet` (the reconciles after start are done).
async fn settle(counts: &Counts, quiet: Duration) -> BTreeMap<String, u64> {
    let mut last = calls(counts);
    loop {
        tokio::time::sleep(quiet).await;
        let now = calls(counts);
        if now == last {
            return now;
        }
        last = now;
    }
}

/// A pod as the webhook leaves it (label, annotation, sidecar), or as it comes without it.
fn pod(ns: &str, name: &str, injected: bool) -> Pod {
    let mut pod = json!({
        "metadata": {"name": name, "namespace": ns, "labels": {"app": "orders"}},
        "spec": {"containers": [{"name": "app", "image": "none"}]},
    });
    if injected {
        pod["metadata"]["labels"][operator::INJECTED_LABEL] = json!("true");
        pod["metadata"]["annotations"] = json!({operator::INJECTED_ANNOTATION: "orders"});
        pod["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": operator::SIDECAR_NAME, "image": "none"}));
    }
    serde_json::from_value(pod).unwrap()
}

/// Creates the pod and marks it running, as a kubelet would (there is no node here).
async fn create_running(client: &kube::Client, pod: Pod) {
    let ns = pod.metadata.namespace.clone().unwrap();
    let name = pod.metadata.name.clone().unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    pods.create(&PostParams::default(), &pod).await.unwrap();
    pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": {"phase": "Running"}})))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_event_in_a_namespace_without_policies_costs_no_api_call() {
    let cp = start(Options { controller_manager: false, node_agent: false, ..Options::default() }).await;
    cp.install_dumpwatch_crds().unwrap();
    cp.apply(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\n\
         apiVersion: v1\nkind: Namespace\nmetadata: {name: plain}\n---\n\
         apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: default, namespace: shop}\n---\n\
         apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: default, namespace: plain}\n---\n\
         apiVersion: dumpwatch.dev/v1alpha1\nkind: DumpPolicy\nmetadata: {name: orders, namespace: shop}\n\
         spec: {selector: {matchLabels: {app: orders}}, triggers: [{type: deadlock}]}\n",
    )
    .unwrap();
    let client = client(&cp).await;
    let counts = Counts::default();
    let (stop_controllers, ctx, controllers) =
        run_controllers(counting_client(&cp, counts.clone()).await, AnalysisSettings::default());

    let policies: Api<DumpPolicy> = Api::namespaced(client.clone(), "shop");
    eventually("the policy has a status", Duration::from_secs(120), || async {
        let p = policies.get("orders").await.map_err(|e| e.to_string())?;
        p.status.map(|_| ()).ok_or_else(|| "no status yet".to_string())
    })
    .await;
    let before = settle(&counts, Duration::from_secs(3)).await;

    // Ten pods the same selector would match, in a namespace without policies: half labelled
    // as injected (the whole-pod cache), half not (the metadata cache).
    for i in 0..10 {
        create_running(&client, pod("plain", &format!("orders-{i}"), i % 2 == 0)).await;
    }
    eventually("the caches hold the pods", Duration::from_secs(30), || async {
        let stores = ctx.stores().await.map_err(|e| e.to_string())?;
        let mut probe = api::DumpPolicy::new("probe", Default::default());
        probe.metadata.namespace = Some("plain".into());
        let n = stores.pods_selected_by(&probe).len();
        if n == 10 { Ok(()) } else { Err(format!("{n} cached")) }
    })
    .await;
    // Longer than the status debounce: a deferred write would have happened by now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = calls(&counts);
    assert_eq!(diff(&before, &after), BTreeMap::new(), "requests for pods of a namespace without policies");

    // The control: a pod the policy selects costs its status write (and nothing else).
    create_running(&client, pod("shop", "orders-0", true)).await;
    eventually("the policy counts the pod", Duration::from_secs(30), || async {
        let p = policies.get("orders").await.map_err(|e| e.to_string())?;
        let s = p.status.unwrap_or_default();
        if (s.matched_pods, s.injected_pods) == (1, 1) { Ok(()) } else { Err(format!("{s:?}")) }
    })
    .await;
    let written = diff(&after, &settle(&counts, Duration::from_secs(3)).await);
    assert_eq!(
        written,
        BTreeMap::from([("PATCH /apis/dumpwatch.dev/v1alpha1/namespaces/shop/dumppolicies/orders/status".into(), 1)]),
    );

    stop_controllers.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(20), controllers).await.expect("controllers stop").unwrap();
    stop(cp).await;
}

/// A policy naming a DumpStore reads the store from the controllers' cache: invalid while the
/// store does not exist, valid once an admin creates it (the store's own event reconciles the
/// policy, without waiting for a resync), and no reconcile GETs the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_reads_its_dump_store_from_the_cache() {
    let cp = start(Options { controller_manager: false, node_agent: false, ..Options::default() }).await;
    cp.install_dumpwatch_crds().unwrap();
    cp.apply(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\n\
         apiVersion: dumpwatch.dev/v1alpha1\nkind: DumpPolicy\nmetadata: {name: orders, namespace: shop}\n\
         spec: {selector: {matchLabels: {app: orders}}, triggers: [{type: deadlock}], storage: {s3: {storeRef: team}}}\n",
    )
    .unwrap();
    let client = client(&cp).await;
    let counts = Counts::default();
    let (stop_controllers, _ctx, controllers) =
        run_controllers(counting_client(&cp, counts.clone()).await, AnalysisSettings::default());

    let policies: Api<DumpPolicy> = Api::namespaced(client.clone(), "shop");
    let ready = |want: &'static str| {
        let policies = policies.clone();
        async move {
            let p = policies.get("orders").await.map_err(|e| e.to_string())?;
            let c = p.status.unwrap_or_default().conditions.into_iter().find(|c| c.type_ == "Ready");
            match c {
                Some(c) if c.reason == want => Ok(c.message),
                other => Err(format!("{other:?}")),
            }
        }
    };
    let message =
        eventually("Ready=False: the store does not exist", Duration::from_secs(120), || ready("InvalidPolicy")).await;
    assert!(message.contains("DumpStore team does not exist"), "{message}");

    cp.apply(
        "apiVersion: dumpwatch.dev/v1alpha1\nkind: DumpStore\nmetadata: {name: team}\n\
         spec:\n  s3: {endpoint: 'https://s3.example.invalid', region: us-east-1, bucket: dumps, prefix: t, secretRef: s3-creds}\n",
    )
    .unwrap();
    // Well within the policy's resync (5 min): the store's event brought it.
    eventually("Ready once the store exists", Duration::from_secs(20), || ready("NoMatchingPods")).await;
    let gets: Vec<String> = calls(&counts).into_keys().filter(|k| k.contains("/dumpstores/")).collect();
    assert_eq!(gets, Vec::<String>::new(), "DumpStores read by name");

    stop_controllers.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(20), controllers).await.expect("controllers stop").unwrap();
    stop(cp).await;
}
