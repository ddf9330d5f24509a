//! `certificates.mode=cert-manager` against a real cert-manager (v1.21.2: its CRDs, its
//! controllers and CA injector as processes, `harness::CertManager`) on the real control plane,
//! with the operator running as the chart's Deployment's pod on the test node (its Secret volume
//! written from the Secret cert-manager filled):
//!
//! - the chart's self-signed Issuer → CA Certificate → CA Issuer → serving Certificate chain
//!   becomes Ready, and the TLS Secret holds `tls.crt`/`tls.key`/`ca.crt` signed by that CA;
//! - cert-manager's CA injector writes that CA into the webhook configuration's `caBundle`
//!   (`cert-manager.io/inject-ca-from`, here on a `url` clientConfig, see below);
//! - the operator serves HTTPS with exactly that certificate, verified with the injected bundle;
//! - the API server itself calls the webhook (verifying TLS with the injected `caBundle`) and a pod
//!   in an opted-in namespace gets the sidecar, with that CA handed to the sidecar;
//! - a renewal (what `cmctl renew` does: the Certificate's `Issuing` condition) issues a new
//!   certificate and key under the same CA; the operator serves it without a restart.
//!
//! What differs from a cluster: the webhook's `service` is swapped for `url: https://127.0.0.1:<port>`
//! (no Services on the test node, `chart_tests::webhook_by_url`), and the node agent, standing in
//! for the kubelet, brings the re-issued Secret into the running pod's volume within 2 s (a
//! kubelet: up to about a minute), in the kubelet's `..data` symlink layout.
//!
//! The operator binary is the workspace's `target/<profile>/dumpwatch-operator`
//! (`cargo test --workspace` builds it; alone, `cargo build -p operator` first).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chart_tests::{
    NAMESPACE, OPERATOR, TLS_SECRET, Value, WEBHOOK_CONFIGURATION, chart_dir, containers, ready, webhook_by_url,
};
use harness::{CertManager, ControlPlane, Options, free_port, wait_for, workspace_bin};

const OPERATOR_IMAGE: &str = "ghcr.io/dumpwatch/operator";
const TAG: &str = "e2e";
const S: Duration = Duration::from_secs(1);

/// Runs a command with `stdin`; stdout, or an error with stderr.
fn run(program: &str, args: &[&str], stdin: &[u8]) -> Result<String, String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{program}: {e}"))?;
    child.stdin.take().expect("stdin").write_all(stdin).map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "{program} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn base64_decode(s: &str) -> String {
    run("base64", &["-d"], s.as_bytes()).unwrap()
}

/// The first PEM certificate of `pem`, for comparing chains.
fn first_cert(pem: &str) -> String {
    let begin = pem.find("-----BEGIN CERTIFICATE-----").unwrap_or_else(|| panic!("no certificate in {pem:?}"));
    let end = pem[begin..].find("-----END CERTIFICATE-----").expect("END") + begin;
    pem[begin..end + "-----END CERTIFICATE-----".len()].to_string()
}

/// The Secret's keys, decoded.
fn secret(cp: &ControlPlane, name: &str) -> Value {
    let s = cp.kubectl_json(&["get", "secret", name, "-n", NAMESPACE]).unwrap();
    let mut out = serde_json::Map::new();
    for (k, v) in s["data"].as_object().into_iter().flatten() {
        out.insert(k.clone(), Value::String(base64_decode(v.as_str().unwrap_or_default())));
    }
    Value::Object(out)
}

fn condition(obj: &Value, kind: &str) -> Option<Value> {
    obj["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == kind).cloned()
}

/// The certificate the server on `port` presents, after verifying it against `ca_file` and
/// 127.0.0.1 (what the API server checks); an error when the handshake or verification fails.
fn served_cert(port: u16, ca_file: &Path) -> Result<String, String> {
    let ca = ca_file.display().to_string();
    let out = run(
        "openssl",
        &[
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-CAfile",
            &ca,
            "-verify_return_error",
            "-verify_ip",
            "127.0.0.1",
        ],
        b"",
    )?;
    Ok(first_cert(&out))
}

fn openssl_text(cert: &str) -> String {
    run("openssl", &["x509", "-noout", "-issuer", "-subject", "-ext", "subjectAltName"], cert.as_bytes()).unwrap()
}

/// `openssl verify`: is `cert` signed by `ca`?
fn verify(cert: &str, ca: &str, dir: &Path) -> Result<String, String> {
    let ca_file = dir.join("verify-ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    run("openssl", &["verify", "-CAfile", &ca_file.display().to_string()], cert.as_bytes())
}

/// The running operator pod's directory on the test node (`<node state>/pods/<ns>_<name>_<uid>`).
fn operator_pod_dir(cp: &ControlPlane, pod: &Value) -> PathBuf {
    let m = &pod["metadata"];
    let name = format!("{}_{}_{}", NAMESPACE, m["name"].as_str().unwrap(), m["uid"].as_str().unwrap());
    let dir = cp.dir().join("node/pods").join(name);
    assert!(dir.is_dir(), "{} is not there", dir.display());
    dir
}

/// The operator pods' status and logs, and the node agent's log, for a failure message.
fn operator_pods(cp: &ControlPlane) -> String {
    let pods = cp.kubectl(&["get", "pods", "-n", NAMESPACE, "-o", "yaml"]).unwrap_or_default();
    let mut logs = String::new();
    for e in std::fs::read_dir(cp.dir().join("node/pods")).into_iter().flatten().flatten() {
        let log = std::fs::read_to_string(e.path().join("logs/operator.log")).unwrap_or_default();
        logs += &format!("--- {}:\n{}\n", e.file_name().to_string_lossy(), tail(&log, 3000));
    }
    format!("{}\n{logs}--- node agent:\n{}", tail(&pods, 6000), tail(&cp.log("nodeagent"), 3000))
}

fn operator_log(cp: &ControlPlane, pod: &Value) -> String {
    std::fs::read_to_string(operator_pod_dir(cp, pod).join("logs/operator.log")).unwrap_or_default()
}

/// An opted-in namespace with a DumpPolicy selecting `app=orders`, and a pod created there:
/// the pod as the API server stored it (after the webhook).
fn create_pod(cp: &ControlPlane, name: &str) -> Value {
    cp.apply(&format!(
        r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "{name}", "namespace": "shop", "labels": {{"app": "orders"}}}},
            "spec": {{"restartPolicy": "Never", "containers": [{{"name": "app", "image": "shop/orders:1", "command": ["sleep", "600"]}}]}}}}"#
    ))
    .unwrap();
    cp.kubectl_json(&["get", "pod", name, "-n", "shop"]).unwrap()
}

fn sidecar_env(pod: &Value, name: &str) -> Option<String> {
    let sidecar = pod["spec"]["containers"].as_array()?.iter().find(|c| c["name"] == "dumpwatch-sidecar")?;
    sidecar["env"].as_array()?.iter().find(|e| e["name"] == name)?["value"].as_str().map(String::from)
}

#[test]
fn cert_manager_issues_injects_and_rotates_the_operators_certificate() {
    let t0 = Instant::now();
    let https = free_port();
    let metrics = free_port();
    let opts = || Options {
        images: vec![(format!("{OPERATOR_IMAGE}:{TAG}"), workspace_bin("dumpwatch-operator"))],
        ..Options::default()
    };
    let cp = ControlPlane::start_with(opts()).unwrap();
    let mut cm = CertManager::start(&cp).unwrap();
    for crd in ["crds/dumppolicy.yaml", "crds/dumpsnapshot.yaml", "crds/dumpstore.yaml"] {
        cp.kubectl(&["apply", "-f", &chart_dir().join(crd).display().to_string()]).unwrap();
    }
    cp.kubectl(&["wait", "--for=condition=Established", "crd", "--all", "--timeout=60s"]).unwrap();
    cp.kubectl(&["create", "namespace", NAMESPACE]).unwrap();
    let started = t0.elapsed();

    // The chart as a user installs it in cert-manager mode, everything at once (the operator's
    // pod waits for its Secret as it would on a kubelet).
    let values = [
        "certificates.mode=cert-manager".to_string(),
        format!("operator.image.repository={OPERATOR_IMAGE}"),
        format!("operator.image.tag={TAG}"),
        "operator.replicas=1".into(),
        format!("service.port={https}"),
        format!("service.metricsPort={metrics}"),
        format!("operator.url=https://127.0.0.1:{https}"),
        // The API server and the sidecars reach the operator at 127.0.0.1 here.
        "certificates.extraSANs={127.0.0.1}".into(),
        // The node agent runs init containers to completion: no native sidecar there.
        "sidecar.native=never".into(),
    ];
    let set: Vec<&str> = values.iter().map(String::as_str).collect();
    let manifest = webhook_by_url(&chart_tests::render_text(&set, &["--skip-crds"]).unwrap(), https).unwrap();
    let applied = Instant::now();
    cp.kubectl_stdin(&["apply", "-f", "-"], &manifest).unwrap();

    let cert = wait_for("the serving Certificate Ready", 90 * S, || {
        cm.check_alive()?;
        let cert = cp.kubectl_json(&["get", "certificate", OPERATOR, "-n", NAMESPACE])?;
        // Ready and the revision are written by different controllers: wait for both.
        let issued =
            condition(&cert, "Ready").is_some_and(|c| c["status"] == "True") && cert["status"]["revision"].is_i64();
        Ok(issued.then_some(cert))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", cm.logs(6000)));
    let to_ready = applied.elapsed();
    let revision = cert["status"]["revision"].as_i64().unwrap();

    // The TLS Secret: issued by the chart's CA Issuer (whose Secret is the CA Certificate's).
    let tls = secret(&cp, TLS_SECRET);
    let ca = secret(&cp, &format!("{OPERATOR}-ca"));
    let (tls_crt, tls_key, ca_crt) =
        (tls["tls.crt"].as_str().unwrap(), tls["tls.key"].as_str().unwrap(), tls["ca.crt"].as_str().unwrap());
    assert!(tls_key.contains("PRIVATE KEY"), "tls.key: {tls_key:.40}");
    assert_eq!(first_cert(ca_crt), first_cert(ca["tls.crt"].as_str().unwrap()), "ca.crt is the chart's CA");
    let tmp = tempfile::tempdir().unwrap();
    verify(tls_crt, ca_crt, tmp.path()).unwrap();
    let text = openssl_text(tls_crt);
    assert!(text.contains(&format!("issuer=CN = {OPERATOR}-ca")), "{text}");
    for san in ["IP Address:127.0.0.1", "DNS:dumpwatch-operator.dumpwatch.svc"] {
        assert!(text.contains(san), "{san} missing: {text}");
    }

    // cainjector: the CA in caBundle, on the url-based clientConfig.
    let bundle = wait_for("the injected caBundle", 60 * S, || {
        let hook = cp.kubectl_json(&["get", "mutatingwebhookconfiguration", WEBHOOK_CONFIGURATION])?;
        Ok(hook["webhooks"][0]["clientConfig"]["caBundle"].as_str().filter(|b| !b.is_empty()).map(base64_decode))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", cm.logs(6000)));
    let to_injected = applied.elapsed();
    assert_eq!(first_cert(&bundle), first_cert(ca_crt), "caBundle is the chart's CA");
    let bundle_file = tmp.path().join("ca-bundle.pem");
    std::fs::write(&bundle_file, &bundle).unwrap();

    // The operator: Ready, serving exactly the issued certificate, verified with the bundle.
    let pod = wait_for("the operator Ready", 90 * S, || {
        let pods = cp.kubectl_json(&["get", "pods", "-n", NAMESPACE, "-l", "dumpwatch.dev/component=operator"])?;
        Ok(pods["items"].as_array().into_iter().flatten().find(|p| ready(p)).cloned())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", operator_pods(&cp)));
    let served = wait_for("the operator's HTTPS", 60 * S, || Ok(served_cert(https, &bundle_file).ok()))
        .unwrap_or_else(|e| panic!("{e}\n{}", operator_log(&cp, &pod)));
    assert_eq!(served, first_cert(tls_crt), "the operator serves the Secret's certificate");

    // The API server calls the webhook over TLS verified with the injected caBundle.
    cp.kubectl(&["create", "namespace", "shop"]).unwrap();
    cp.kubectl(&["label", "namespace", "shop", "dumpwatch.dev/inject=enabled"]).unwrap();
    cp.apply(
        "apiVersion: dumpwatch.dev/v1alpha1\nkind: DumpPolicy\nmetadata: {name: orders, namespace: shop}\n\
         spec:\n  selector: {matchLabels: {app: orders}}\n  triggers: [{type: deadlock}]\n  capture: {kinds: [stacks]}\n\
         \x20 storage: {volume: {path: /dumps}}\n",
    )
    .unwrap();
    let attempts = std::cell::Cell::new(0);
    let injected = |name: &str| {
        // The operator's policy cache sees the new policy within moments; a pod created before that
        // is not injected, so a few pods may be needed.
        wait_for(&format!("{name} injected"), 30 * S, || {
            attempts.set(attempts.get() + 1);
            let pod = create_pod(&cp, &format!("{name}-{}", attempts.get()));
            Ok(containers(&pod).contains(&"dumpwatch-sidecar".to_string()).then_some(pod))
        })
        .unwrap_or_else(|e| panic!("{e}\napiserver log:\n{}", tail(&cp.log("kube-apiserver"), 4000)))
    };
    let orders = injected("orders");
    assert_eq!(containers(&orders), ["app", "dumpwatch-sidecar"]);
    assert_eq!(
        sidecar_env(&orders, "DUMPWATCH_OPERATOR_CA").map(|p| first_cert(&p)),
        Some(first_cert(ca_crt)),
        "the sidecar trusts cert-manager's CA"
    );
    assert!(!cp.log("kube-apiserver").contains("failing open"), "the API server never failed open");

    // Renewal, as `cmctl renew` asks for it: the Issuing condition on the Certificate's status.
    let cert = cp.kubectl_json(&["get", "certificate", OPERATOR, "-n", NAMESPACE]).unwrap();
    let mut conditions: Vec<Value> = cert["status"]["conditions"].as_array().cloned().unwrap_or_default();
    conditions.push(serde_json::json!({
        "type": "Issuing", "status": "True", "reason": "ManuallyTriggered",
        "message": "Certificate re-issuance manually triggered", "lastTransitionTime": "2026-01-01T00:00:00Z",
    }));
    let patch = serde_json::json!({"status": {"conditions": conditions}}).to_string();
    let renew = Instant::now();
    cp.kubectl(&[
        "patch",
        "certificate",
        OPERATOR,
        "-n",
        NAMESPACE,
        "--subresource=status",
        "--type=merge",
        "-p",
        &patch,
    ])
    .unwrap();
    wait_for("the renewed Certificate", 90 * S, || {
        cm.check_alive()?;
        let cert = cp.kubectl_json(&["get", "certificate", OPERATOR, "-n", NAMESPACE])?;
        let done = cert["status"]["revision"].as_i64() > Some(revision)
            && condition(&cert, "Ready").is_some_and(|c| c["status"] == "True")
            && condition(&cert, "Issuing").is_none();
        Ok(done.then_some(()))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", cm.logs(6000)));
    let to_renewed = renew.elapsed();
    let renewed = secret(&cp, TLS_SECRET);
    let (new_crt, new_key) = (renewed["tls.crt"].as_str().unwrap(), renewed["tls.key"].as_str().unwrap());
    assert_ne!(first_cert(new_crt), first_cert(tls_crt), "a new certificate");
    assert_ne!(new_key, tls_key, "rotationPolicy Always: a new key");
    verify(new_crt, renewed["ca.crt"].as_str().unwrap(), tmp.path()).unwrap();
    assert_eq!(first_cert(renewed["ca.crt"].as_str().unwrap()), first_cert(ca_crt), "same CA");

    // The node agent updates the pod's Secret volume as a kubelet does (atomically, `..data`
    // switched); the operator re-reads it and serves the new certificate, same process.
    let served = wait_for("the operator serving the renewed certificate", 60 * S, || {
        Ok(served_cert(https, &bundle_file).ok().filter(|c| *c == first_cert(new_crt)))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", operator_log(&cp, &pod)));
    assert_eq!(served, first_cert(new_crt));
    let to_served = renew.elapsed();
    let same_pod =
        cp.kubectl_json(&["get", "pod", "-n", NAMESPACE, pod["metadata"]["name"].as_str().unwrap()]).unwrap();
    assert_eq!(same_pod["status"]["containerStatuses"][0]["restartCount"], 0, "no restart: {same_pod}");
    assert!(operator_log(&cp, &pod).contains("serving certificate reloaded"));
    let volume = operator_pod_dir(&cp, &pod).join("volumes/tls");
    assert!(volume.join("..data").is_symlink() && volume.join("tls.crt").is_symlink(), "the kubelet's layout");
    // And the API server still reaches the webhook with the (unchanged) injected CA.
    injected("orders-after-renewal");
    assert!(!cp.log("kube-apiserver").contains("failing open"), "the API server never failed open");

    eprintln!(
        "figures: control plane + cert-manager + CRDs {started:?}; after apply: Certificate Ready {to_ready:?}, \
         caBundle injected {to_injected:?}; renewal: Ready {to_renewed:?}, served {to_served:?}; whole test {:?}",
        t0.elapsed()
    );
    drop(cm);
}

fn tail(s: &str, n: usize) -> &str {
    let mut start = s.len().saturating_sub(n);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}
