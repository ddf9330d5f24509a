//! Admission webhooks are on: a real HTTPS webhook (Python's http.server with TLS, certificate
//! from the harness's CA) mutates and denies ConfigMaps through a MutatingWebhookConfiguration.

use std::process::Command;
use std::time::Duration;

use harness::proc::Proc;
use harness::{ControlPlane, Options, free_port, wait_for};

const WEBHOOK: &str = r#"
import base64, http.server, json, ssl, sys
cert, key, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        req = review["request"]
        labels = req["object"]["metadata"].get("labels") or {}
        resp = {"uid": req["uid"], "allowed": labels.get("forbidden") != "true"}
        if resp["allowed"]:
            patch = [{"op": "add", "path": "/metadata/annotations", "value": {"webhook.dumpwatch.io/seen": "true"}}]
            resp["patchType"] = "JSONPatch"
            resp["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
        else:
            resp["status"] = {"code": 403, "message": "the test webhook says no"}
        body = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": resp}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
srv = http.server.HTTPServer(("127.0.0.1", port), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
"#;

#[test]
fn mutating_webhook_over_tls() {
    // Only etcd + kube-apiserver: admission needs nothing else.
    let cp = ControlPlane::start_with(Options { controller_manager: false, node_agent: false, ..Options::default() })
        .expect("control plane starts");
    let (cert, key) = cp.serving_cert("webhook").unwrap();
    let port = free_port();
    let mut cmd = Command::new("python3");
    cmd.args(["-c", WEBHOOK]).arg(&cert).arg(&key).arg(port.to_string());
    let _webhook = Proc::spawn("webhook", cmd, &cp.dir().join("webhook.log")).unwrap();

    cp.kubectl(&["create", "namespace", "hooked"]).unwrap();
    cp.apply(&format!(
        r#"{{"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
  "metadata": {{"name": "test-hook"}},
  "webhooks": [{{"name": "test.webhook.dumpwatch.io", "admissionReviewVersions": ["v1"], "sideEffects": "None",
    "failurePolicy": "Fail", "timeoutSeconds": 5,
    "clientConfig": {{"url": "https://127.0.0.1:{port}/mutate", "caBundle": "{ca}"}},
    "namespaceSelector": {{"matchLabels": {{"kubernetes.io/metadata.name": "hooked"}}}},
    "rules": [{{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["configmaps"]}}]}}]}}"#,
        ca = cp.ca_bundle().unwrap()
    ))
    .unwrap();

    // The configuration and the webhook server both take a moment to be live.
    wait_for("the webhook to mutate a ConfigMap", Duration::from_secs(30), || {
        let name = format!("cm-{}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos());
        let created = cp.kubectl(&["create", "configmap", &name, "-n", "hooked", "-o", "json"]);
        Ok(created.ok().filter(|o| o.contains("webhook.dumpwatch.io/seen")))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", std::fs::read_to_string(cp.dir().join("webhook.log")).unwrap_or_default()));
    let denied = cp
        .kubectl_stdin(
            &["create", "-f", "-"],
            r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "no", "namespace": "hooked", "labels": {"forbidden": "true"}}}"#,
        )
        .unwrap_err()
        .to_string();
    assert!(denied.contains("the test webhook says no"), "{denied}");
    // Other namespaces are not sent to the webhook.
    let plain = cp.kubectl(&["create", "configmap", "plain", "-n", "default", "-o", "json"]).unwrap();
    assert!(!plain.contains("webhook.dumpwatch.io/seen"));
}
