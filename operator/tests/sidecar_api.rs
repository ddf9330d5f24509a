//! The sidecar API on a real kube-apiserver (TokenReview of tokens bound to real Pod objects)
//! and a real S3 server (moto). The operator's client is the admin kubeconfig; the app's
//! ServiceAccount has no RBAC at all: its token only proves which pod is calling.

use std::time::Duration;

use bytes::Bytes;
use harness::{ControlPlane, Options, S3Server};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use operator::sidecar_api::{self, SidecarApi};
use serde_json::{Value, json};

const MIB: u64 = 1 << 20;
const SIDECAR: &str = "dumpwatch.dev/sidecar";
const ANALYZER: &str = "dumpwatch.dev/analyzer";

struct World {
    cp: ControlPlane,
    s3: S3Server,
    base: String,
    client: kube::Client,
    http: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

fn start_apiserver() -> ControlPlane {
    ControlPlane::start_with(Options { controller_manager: false, node_agent: false, ..Options::default() })
        .expect("control plane starts")
}

fn pod_yaml(name: &str, annotations: &str, extra_meta: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: shop\n  annotations: {annotations}\n{extra_meta}\
         spec:\n  serviceAccountName: app\n  containers: [{{name: app, image: app:1}}]\n"
    )
}

/// A bare apiserver with the CRDs, namespaces `dumpwatch` (operator, S3 Secret) and `shop` (a
/// policy, an RBAC-less ServiceAccount, pods cart-1, cart-2 injected and plain-1 not), moto,
/// and the API served on loopback with 5 MiB parts.
/// The functional tests call far faster than a sidecar (latency loops): a generous rate.
async fn world() -> World {
    world_with(sidecar_api::limit::Rate { per_second: 100.0, burst: 100.0 }).await
}

async fn world_with(rate: sidecar_api::limit::Rate) -> World {
    let cp = start_apiserver();
    let s3 = S3Server::start("dumps").unwrap();
    cp.install_dumpwatch_crds().unwrap();
    let endpoint = s3.endpoint();
    let manifest = format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{name: dumpwatch}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: shop}}
---
apiVersion: v1
kind: Secret
metadata: {{name: s3-creds, namespace: dumpwatch}}
stringData: {{accessKeyId: {ak}, secretAccessKey: {sk}}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: app, namespace: shop}}
---
apiVersion: dumpwatch.dev/v1alpha1
kind: DumpStore
metadata: {{name: dumps}}
spec: {{s3: {{endpoint: "{endpoint}", region: us-east-1, bucket: dumps, prefix: dw, secretRef: s3-creds, insecure: true}}}}
---
apiVersion: dumpwatch.dev/v1alpha1
kind: DumpPolicy
metadata: {{name: leaks, namespace: shop}}
spec:
  selector: {{matchLabels: {{app: cart}}}}
  triggers: [{{type: gcHeapBytes, above: 500Mi}}]
  limits: {{maxBytes: 1Gi}}
  storage: {{s3: {{storeRef: dumps}}}}
"#,
        ak = S3Server::ACCESS_KEY,
        sk = S3Server::SECRET_KEY,
    );
    cp.apply(&manifest).unwrap();
    let injected = "{dumpwatch.dev/injected: leaks}";
    for p in [pod_yaml("cart-1", injected, ""), pod_yaml("cart-2", injected, ""), pod_yaml("plain-1", "{}", "")] {
        cp.apply(&p).unwrap();
    }

    let kubeconfig = kube::config::Kubeconfig::read_from(cp.kubeconfig()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let state = SidecarApi::new(client.clone(), "dumpwatch").with_part_size(5 * MIB).with_rate(rate);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, sidecar_api::router(state)).await.unwrap() });
    let http = Client::builder(TokioExecutor::new()).build_http();
    World { cp, s3, base, client, http }
}

impl World {
    /// A projected-style token of `app`, bound to `pod`, for `audience`.
    fn token(&self, pod: &str, audience: &str) -> String {
        let args = ["-n", "shop", "create", "token", "app", "--audience", audience];
        let bound = ["--bound-object-kind", "Pod", "--bound-object-name", pod, "--duration", "10m"];
        self.cp.kubectl(&[&args[..], &bound[..]].concat()).unwrap().trim().to_string()
    }

    async fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
        let mut req = http::Request::builder().method(method).uri(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let req = req.header("content-type", "application/json").body(Full::new(body)).unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(90), self.http.request(req)).await.unwrap().unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    fn snapshot(&self, name: &str) -> Value {
        self.cp.kubectl_json(&["-n", "shop", "get", "dsnap", name]).unwrap()
    }

    /// A store with the operator's credentials, to check what landed in S3.
    fn s3_store(&self) -> store::S3Store {
        let config = store::S3Config {
            endpoint: self.s3.endpoint(),
            region: S3Server::REGION.into(),
            bucket: "dumps".into(),
            prefix: "dw".into(),
            path_style: true,
        };
        let creds = store::Credentials {
            access_key_id: S3Server::ACCESS_KEY.into(),
            secret_access_key: S3Server::SECRET_KEY.into(),
            session_token: None,
        };
        store::S3Store::new(config, creds).unwrap()
    }
}

fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 56) as u8
        })
        .collect()
}

fn manifest(id: &str, pod: &str) -> Value {
    json!({"version": 1, "id": id, "created": "2026-11-28T02:15:00Z", "pod": pod, "namespace": "shop", "container": "app",
        "process": {"pid": 42, "ns_pid": 1, "name": "Cart", "command_line": "dotnet Cart.dll", "runtime_version": "8.0.4"},
        "trigger": {"index": 0, "trigger": "gcHeapBytes", "value": 6.1e8, "threshold": 5.24288e8, "detail": ""},
        "dump_type": "heap", "files": [], "failures": [], "seconds": 2.0})
}

#[tokio::test]
async fn tokens_policies_uploads_and_capture_reports() {
    let w = world().await;
    let cart1 = w.token("cart-1", SIDECAR);

    // Authentication: no token, a forged one, another audience, an unbound pod.
    let (status, body) = w.call("GET", "/v1/sidecar/policy", None, None).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("Unauthorized")), "{body}");
    // A changed signature (the middle of it: the last base64 digit may carry unused bits).
    let sig = cart1.rfind('.').unwrap() + 10;
    let swapped = if &cart1[sig..=sig] == "A" { "B" } else { "A" };
    let forged = format!("{}{swapped}{}", &cart1[..sig], &cart1[sig + 1..]);
    assert_eq!(w.call("GET", "/v1/sidecar/policy", Some(&forged), None).await.0, 401);
    let analyzer = w.token("cart-1", ANALYZER);
    let (status, body) = w.call("GET", "/v1/sidecar/policy", Some(&analyzer), None).await;
    assert_eq!(status, 403, "a token of the analyzer audience is not a sidecar's: {body}");
    let (status, body) = w.call("GET", "/v1/sidecar/policy", Some(&w.token("plain-1", SIDECAR)), None).await;
    assert_eq!(status, 404, "{body}");
    assert!(body["message"].as_str().unwrap().contains("not injected"), "{body}");

    // The policy of the pod the token is bound to. The first call reviews the token, the next
    // ones use the cached review (figures printed with --nocapture).
    let t0 = std::time::Instant::now();
    let (status, body) = w.call("GET", "/v1/sidecar/policy", Some(&cart1), None).await;
    assert_eq!(status, 200, "{body}");
    let first = t0.elapsed();
    let mut cached = Vec::new();
    for _ in 0..20 {
        let t = std::time::Instant::now();
        assert_eq!(w.call("GET", "/v1/sidecar/policy", Some(&cart1), None).await.0, 200);
        cached.push(t.elapsed());
    }
    cached.sort();
    eprintln!(
        "GET /v1/sidecar/policy: first {first:?} (TokenReview), cached p50 {:?} max {:?}",
        cached[10], cached[19]
    );
    assert_eq!(body["name"], "leaks");
    assert_eq!(body["spec"]["storage"]["s3"]["storeRef"], "dumps");
    assert!(!body["resourceVersion"].as_str().unwrap().is_empty());

    // Absurd sizes are refused before anything is signed.
    let huge = json!({"capture": "c0", "files": [{"name": "core.1.zst", "size": 2u64 << 30}]});
    let (status, body) = w.call("POST", "/v1/sidecar/uploads", Some(&cart1), Some(huge)).await;
    assert_eq!(status, 413, "{body}");

    // Two artifacts: a small one by presigned PUT, a 12 MiB one in three 5 MiB parts.
    let dir = tempfile::tempdir().unwrap();
    let heap_raw = dir.path().join("heap.nettrace");
    std::fs::write(&heap_raw, [noise(100_000, 3), vec![0u8; 3_000_000]].concat()).unwrap();
    let heap = store::compress_file(&heap_raw, &dir.path().join("heap.nettrace.zst"), u64::MAX).unwrap();
    let core_raw = dir.path().join("core.42");
    std::fs::write(&core_raw, noise(12 * MIB as usize, 4)).unwrap();
    let core = store::compress_file(&core_raw, &dir.path().join("core.42.zst"), u64::MAX).unwrap();
    let files = json!({"capture": "c1", "files": [
        {"name": "heap.nettrace.zst", "size": heap.size}, {"name": "core.42.zst", "size": core.size}]});
    let (status, plan) = w.call("POST", "/v1/sidecar/uploads", Some(&cart1), Some(files)).await;
    assert_eq!(status, 200, "{plan}");
    let heap_uri = "s3://dumps/dw/shop/cart-1/c1/heap.nettrace.zst";
    let core_uri = "s3://dumps/dw/shop/cart-1/c1/core.42.zst";
    assert_eq!(plan["files"][0]["uri"], heap_uri);
    assert_eq!(plan["files"][1]["uri"], core_uri);
    let uploader = store::HttpClient::new(); // holds no credentials
    let url = plan["files"][0]["url"].as_str().expect("a small file gets one URL");
    uploader.put_file_range(url, &dir.path().join("heap.nettrace.zst"), 0, heap.size).await.unwrap();
    let mp = &plan["files"][1]["multipart"];
    let (part_size, parts) = (mp["partSize"].as_u64().unwrap(), mp["parts"].as_array().unwrap());
    assert_eq!((part_size, parts.len()), (5 * MIB, 3), "{mp}");
    let mut etags = Vec::new();
    for (i, url) in parts.iter().enumerate() {
        let offset = i as u64 * part_size;
        let len = part_size.min(core.size - offset);
        etags.push(
            uploader.put_file_range(url.as_str().unwrap(), &dir.path().join("core.42.zst"), offset, len).await.unwrap(),
        );
    }
    // Reporting before completing: the operator vouches only for what is in storage.
    let artifacts = json!([
        {"kind": "gcdump", "uri": heap_uri, "size": heap.size, "sha256": heap.sha256},
        {"kind": "dump", "uri": core_uri, "size": core.size, "sha256": core.sha256}]);
    let report = json!({"manifest": manifest("c1", "cart-1"), "artifacts": artifacts});
    let (status, body) = w.call("POST", "/v1/sidecar/captures", Some(&cart1), Some(report.clone())).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("was not uploaded"), "{body}");
    let done = json!({"capture": "c1", "name": "core.42.zst", "uploadId": mp["uploadId"], "etags": etags});
    let (status, body) = w.call("POST", "/v1/sidecar/uploads/complete", Some(&cart1), Some(done)).await;
    assert_eq!(status, 204, "{body}");

    // Another pod cannot claim cart-1's objects, whatever its manifest says.
    let cart2 = w.token("cart-2", SIDECAR);
    let (status, body) = w.call("POST", "/v1/sidecar/captures", Some(&cart2), Some(report.clone())).await;
    assert_eq!(status, 403, "{body}");

    // The report becomes a DumpSnapshot with the stored artifacts, ready for analysis.
    let (status, body) = w.call("POST", "/v1/sidecar/captures", Some(&cart1), Some(report.clone())).await;
    assert_eq!(status, 200, "{body}");
    let name = body["snapshot"].as_str().unwrap().to_string();
    let snap = w.snapshot(&name);
    assert_eq!(snap["spec"]["pod"], "cart-1");
    assert_eq!(snap["spec"]["policy"], "leaks");
    assert_eq!(snap["spec"]["trigger"], "gcHeapBytes");
    assert_eq!(snap["spec"]["artifacts"][1]["uri"], core_uri);
    assert_eq!(snap["spec"]["artifacts"][1]["size"], core.size);
    assert_eq!(snap["spec"]["artifacts"][1]["sha256"], core.sha256.as_str());
    assert_eq!(snap["status"]["phase"], "Uploaded");
    assert_eq!(snap["spec"]["store"], "dumps", "the store is recorded with the artifacts");
    // A retried report is the same snapshot.
    let (status, again) = w.call("POST", "/v1/sidecar/captures", Some(&cart1), Some(report)).await;
    assert_eq!((status, again["snapshot"].as_str()), (200, Some(name.as_str())));

    // What S3 holds is what the snapshot says: download and check.
    let s3 = w.s3_store();
    let get = s3.presign_get("dw/shop/cart-1/c1/core.42.zst", Duration::from_secs(60));
    let downloaded = dir.path().join("downloaded.zst");
    uploader.get_to_file(&get, &downloaded).await.unwrap();
    store::verify_and_decompress_file(&downloaded, &core.sha256, &dir.path().join("back")).unwrap();
    assert_eq!(std::fs::read(dir.path().join("back")).unwrap(), std::fs::read(&core_raw).unwrap());

    // The controller's view: a presigned GET for the analysis Job, then the finalizer's delete,
    // with the policy and, once the policy is gone, without it.
    use operator::controller::{ArtifactDeleter, ArtifactUrls};
    let objects = sidecar_api::ObjectStorage::new(w.client.clone(), "dumpwatch");
    let policy: api::DumpPolicy = kube::Api::namespaced(w.client.clone(), "shop").get("leaks").await.unwrap();
    let snapshot: api::DumpSnapshot = kube::Api::namespaced(w.client.clone(), "shop").get(&name).await.unwrap();
    let url = objects.fetchable(&snapshot, Some(&policy), heap_uri).await.unwrap();
    assert!(url.starts_with(&format!("{}/dumps/dw/shop/cart-1/c1/heap.nettrace.zst?", w.s3.endpoint())), "{url}");
    let fetched = dir.path().join("fetched.zst");
    uploader.get_to_file(&url, &fetched).await.unwrap();
    assert_eq!(store::sha256_file(&fetched).unwrap(), (heap.size, heap.sha256.clone()));
    objects.delete(&snapshot, Some(&policy), heap_uri).await.unwrap();
    assert!(s3.head("dw/shop/cart-1/c1/heap.nettrace.zst").await.unwrap().is_none());
    let mut unrecorded = snapshot.clone();
    unrecorded.spec.store = None;
    objects.delete(&unrecorded, None, core_uri).await.expect("found through the store that holds the key");
    assert!(s3.head("dw/shop/cart-1/c1/core.42.zst").await.unwrap().is_none());
    let err = objects.delete(&unrecorded, None, "s3://elsewhere/x").await.unwrap_err();
    assert!(err.to_string().contains("no DumpStore holds"), "{err}");

    // A live deadlock with only stacks is final at once; its pod is the token's (cart-2), not the manifest's.
    let stacks_raw = dir.path().join("stacks.json");
    std::fs::write(&stacks_raw, b"[]").unwrap();
    let stacks = store::compress_file(&stacks_raw, &dir.path().join("stacks.json.zst"), u64::MAX).unwrap();
    let files = json!({"capture": "d1", "files": [{"name": "stacks.json.zst", "size": stacks.size}]});
    let (_, plan) = w.call("POST", "/v1/sidecar/uploads", Some(&cart2), Some(files)).await;
    assert_eq!(plan["files"][0]["uri"], "s3://dumps/dw/shop/cart-2/d1/stacks.json.zst", "the key is the token's pod");
    let url = plan["files"][0]["url"].as_str().unwrap();
    uploader.put_file_range(url, &dir.path().join("stacks.json.zst"), 0, stacks.size).await.unwrap();
    let live = json!({"kind": "deadlock", "cycle": [
        {"thread": 7, "waits_for_lock": 1, "lock_object": 9, "held_by": 8, "stack": ["Cart.A"]},
        {"thread": 8, "waits_for_lock": 2, "lock_object": 10, "held_by": 7, "stack": ["Cart.B"]}], "victims": []});
    let report = json!({"manifest": manifest("d1", "cart-1"), "findings": live, "artifacts": [
        {"kind": "stacks", "uri": plan["files"][0]["uri"], "size": stacks.size, "sha256": stacks.sha256}]});
    let (status, body) = w.call("POST", "/v1/sidecar/captures", Some(&cart2), Some(report)).await;
    assert_eq!(status, 200, "{body}");
    let snap = w.snapshot(body["snapshot"].as_str().unwrap());
    assert_eq!(snap["spec"]["pod"], "cart-2");
    assert_eq!(snap["status"]["phase"], "Analyzed");
    assert_eq!(snap["status"]["findings"]["deadlocks"], 1);

    // Only the operator's credentials called the API: the app's ServiceAccount may do nothing.
    for (verb, resource) in [("create", "tokenreviews"), ("get", "dumpsnapshots"), ("get", "secrets"), ("get", "pods")]
    {
        let out =
            w.cp.kubectl_cmd()
                .args(["auth", "can-i", verb, resource, "-n", "shop", "--as", "system:serviceaccount:shop:app"])
                .output()
                .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no", "{verb} {resource}");
    }
}

#[tokio::test]
async fn on_demand_requests_are_handed_out_once_and_jobs_report_findings() {
    let w = world().await;
    let cart1 = w.token("cart-1", SIDECAR);
    let request = |name: &str, pod: &str| {
        format!(
            "apiVersion: dumpwatch.dev/v1alpha1\nkind: DumpSnapshot\nmetadata: {{name: {name}, namespace: shop}}\n\
             spec: {{pod: {pod}, pid: 42, trigger: onDemand}}\n"
        )
    };
    w.cp.apply(&request("req-1", "cart-1")).unwrap();
    w.cp.apply(&request("req-other", "cart-2")).unwrap();

    let (status, body) = w.call("GET", "/v1/sidecar/requests?wait=5", Some(&cart1), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["requests"], json!([{"snapshot": "req-1", "pid": 42}]), "only cart-1's request");
    assert_eq!(w.snapshot("req-1")["status"]["phase"], "Capturing");
    assert!(w.snapshot("req-other").get("status").is_none(), "cart-2's request is untouched");
    let (_, body) = w.call("GET", "/v1/sidecar/requests?wait=1", Some(&cart1), None).await;
    assert_eq!(body["requests"], json!([]), "handed out once");

    // The long poll answers when a request appears.
    let created = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        w.cp.apply(&request("req-2", "cart-1")).unwrap();
    };
    let t0 = std::time::Instant::now();
    let ((status, body), ()) = tokio::join!(w.call("GET", "/v1/sidecar/requests?wait=30", Some(&cart1), None), created);
    assert_eq!((status, &body["requests"][0]["snapshot"]), (200, &json!("req-2")), "{body}");
    assert!(t0.elapsed() < Duration::from_secs(20), "answered after {:?}", t0.elapsed());

    // The capture answering req-1 fills it in; cart-2 cannot answer it.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("core.42"), noise(200_000, 5)).unwrap();
    let core = store::compress_file(&dir.path().join("core.42"), &dir.path().join("core.42.zst"), u64::MAX).unwrap();
    let files = json!({"capture": "r1", "files": [{"name": "core.42.zst", "size": core.size}]});
    let (_, plan) = w.call("POST", "/v1/sidecar/uploads", Some(&cart1), Some(files)).await;
    let uploader = store::HttpClient::new();
    uploader
        .put_file_range(plan["files"][0]["url"].as_str().unwrap(), &dir.path().join("core.42.zst"), 0, core.size)
        .await
        .unwrap();
    let mut m = manifest("r1", "cart-1");
    m["trigger"] = json!({"index": null, "trigger": "onDemand", "value": 0.0, "threshold": null, "detail": "req-1"});
    let artifacts = json!([{"kind": "dump", "uri": plan["files"][0]["uri"], "size": core.size, "sha256": core.sha256}]);
    let cart2 = w.token("cart-2", SIDECAR);
    let foreign = json!({"manifest": m, "artifacts": [], "snapshot": "req-1"});
    assert_eq!(w.call("POST", "/v1/sidecar/captures", Some(&cart2), Some(foreign)).await.0, 403);
    let report = json!({"manifest": m, "artifacts": artifacts, "snapshot": "req-1"});
    let (status, body) = w.call("POST", "/v1/sidecar/captures", Some(&cart1), Some(report)).await;
    assert_eq!((status, &body["snapshot"]), (200, &json!("req-1")), "{body}");
    let snap = w.snapshot("req-1");
    assert_eq!(snap["status"]["phase"], "Uploaded");
    assert_eq!(snap["spec"]["trigger"], "onDemand");
    assert_eq!(snap["spec"]["artifacts"][0]["sha256"], core.sha256.as_str());

    // A failed capture: req-2 (handed out above) ends Failed with the reason, at once; only
    // its own pod can say so, and only while it waits.
    let failure = |snapshot: Option<&str>| {
        json!({"id": "20261128T090000Z-Cart-42-onDemand-failed", "trigger": "onDemand", "value": 1.0,
            "pid": 42, "process": "Cart", "container": "app", "snapshot": snapshot,
            "reason": "capture failed: capturing pid 42: dump: disk guard: 3.1 GiB free on /dumpwatch, \
                       the dump needs ~300.0 MiB and limits.minFreeDisk keeps 1000.0 TiB free"})
    };
    assert_eq!(w.call("POST", "/v1/sidecar/failures", Some(&cart2), Some(failure(Some("req-2")))).await.0, 403);
    let (status, body) = w.call("POST", "/v1/sidecar/failures", Some(&cart1), Some(failure(Some("req-2")))).await;
    assert_eq!((status, &body["snapshot"]), (200, &json!("req-2")), "{body}");
    let failed = w.snapshot("req-2");
    assert_eq!(failed["status"]["phase"], "Failed", "{failed}");
    let message = failed["status"]["message"].as_str().unwrap();
    assert!(message.starts_with("Cart (pid 42): capture failed") && message.contains("minFreeDisk"), "{message}");
    assert_eq!(w.call("POST", "/v1/sidecar/failures", Some(&cart1), Some(failure(Some("req-2")))).await.0, 409);
    // A trigger's failure becomes a Failed snapshot of its own (a retry finds the same one),
    // which is never handed out as a request.
    let mut trigger = failure(None);
    trigger["trigger"] = json!("gcHeapBytes");
    trigger["value"] = json!(6.1e8);
    let (status, body) = w.call("POST", "/v1/sidecar/failures", Some(&cart1), Some(trigger.clone())).await;
    assert_eq!(status, 200, "{body}");
    let name = body["snapshot"].as_str().unwrap().to_string();
    let (status, again) = w.call("POST", "/v1/sidecar/failures", Some(&cart1), Some(trigger)).await;
    assert_eq!((status, &again["snapshot"]), (200, &json!(name)), "{again}");
    let own = w.snapshot(&name);
    assert_eq!((&own["status"]["phase"], &own["spec"]["pod"]), (&json!("Failed"), &json!("cart-1")), "{own}");
    assert_eq!((&own["spec"]["trigger"], &own["spec"]["observed"]), (&json!("gcHeapBytes"), &json!("610000000")));
    let (_, body) = w.call("GET", "/v1/sidecar/requests?wait=1", Some(&cart1), None).await;
    assert_eq!(body["requests"], json!([]), "{body}");

    // The controller's part, by hand: a Job for req-1 (owned by it, as the operator makes it),
    // its pod (owned by the Job, as the Job controller makes it), the snapshot Analyzing.
    let snap_uid = w.cp.kubectl(&["-n", "shop", "get", "dsnap", "req-1", "-o", "jsonpath={.metadata.uid}"]).unwrap();
    w.cp.apply(&format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: dsnap-req-1-analyze\n  namespace: shop\n  \
         ownerReferences: [{{apiVersion: dumpwatch.dev/v1alpha1, kind: DumpSnapshot, name: req-1, uid: {snap_uid}, \
         controller: true}}]\nspec:\n  template:\n    \
         spec: {{restartPolicy: Never, serviceAccountName: app, containers: [{{name: analyze, image: dumpwatch:1}}]}}\n",
    ))
    .unwrap();
    let job_uid =
        w.cp.kubectl(&["-n", "shop", "get", "job", "dsnap-req-1-analyze", "-o", "jsonpath={.metadata.uid}"]).unwrap();
    let owner = format!(
        "  labels: {{job-name: dsnap-req-1-analyze}}\n  ownerReferences: [{{apiVersion: batch/v1, kind: Job, \
         name: dsnap-req-1-analyze, uid: {job_uid}, controller: true}}]\n"
    );
    w.cp.apply(&pod_yaml("dsnap-req-1-analyze-x7k2p", "{}", &owner)).unwrap();
    // An app pod dressed as the Job's: its labels, and the Job as a (non-controller) owner.
    let dressed = format!(
        "  labels: {{job-name: dsnap-req-1-analyze, batch.kubernetes.io/job-name: dsnap-req-1-analyze}}\n  \
         ownerReferences: [{{apiVersion: batch/v1, kind: Job, name: dsnap-req-1-analyze, uid: {job_uid}}}]\n"
    );
    w.cp.apply(&pod_yaml("dressed-up", "{}", &dressed)).unwrap();
    let analyzing = r#"{"status": {"phase": "Analyzing", "job": "dsnap-req-1-analyze"}}"#;
    w.cp.kubectl(&["-n", "shop", "patch", "dsnap", "req-1", "--subresource=status", "--type=merge", "-p", analyzing])
        .unwrap();

    let findings = json!({"snapshot": "req-1", "findings": {
        "schema": "dumpwatch.findings", "version": 1,
        "source": {"kind": "core_dump", "path": "core.42", "runtime_version": "8.0.4", "dac": null, "threads": 3},
        "summary": {"deadlocks": 1, "deadlocked_threads": 2, "victims": 0, "leak_suspects": 0},
        "deadlocks": [{"cycle": [
            {"thread": {"os_tid": 7, "managed_id": 3}, "waits_for": {"lock_id": 1, "object": 2, "object_type": "System.Object"},
             "held_by": {"os_tid": 8, "managed_id": 4}, "stack": ["Cart.Transfer"]},
            {"thread": {"os_tid": 8, "managed_id": 4}, "waits_for": {"lock_id": 3, "object": 4, "object_type": "System.Object"},
             "held_by": {"os_tid": 7, "managed_id": 3}, "stack": ["Cart.Refund"]}], "victims": []}],
        "long_waits": [], "heap": {"objects": 10, "bytes": 1000, "top_types": [{"type_name": "System.String", "count": 5, "bytes": 500}]},
        "leak_suspects": null, "warnings": []}});
    // Not from the sidecar's audience, not from another pod: only the Job's pod.
    let job_pod_sidecar = w.token("dsnap-req-1-analyze-x7k2p", SIDECAR);
    assert_eq!(w.call("POST", "/v1/jobs/findings", Some(&job_pod_sidecar), Some(findings.clone())).await.0, 403);
    let (status, body) =
        w.call("POST", "/v1/jobs/findings", Some(&w.token("cart-1", ANALYZER)), Some(findings.clone())).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) =
        w.call("POST", "/v1/jobs/findings", Some(&w.token("dressed-up", ANALYZER)), Some(findings.clone())).await;
    assert_eq!(status, 403, "labels and a name are not the Job's pod: {body}");
    assert!(body["message"].as_str().unwrap().contains("not a pod of the analysis Job"), "{body}");
    let job_pod = w.token("dsnap-req-1-analyze-x7k2p", ANALYZER);
    let (status, body) = w.call("POST", "/v1/jobs/findings", Some(&job_pod), Some(findings.clone())).await;
    assert_eq!(status, 204, "{body}");
    let snap = w.snapshot("req-1");
    assert_eq!(snap["status"]["phase"], "Analyzed");
    assert_eq!(snap["status"]["findings"]["deadlocks"], 1);
    assert_eq!(snap["status"]["findings"]["topType"], "System.String");
    assert_eq!(snap["status"]["findings"]["deadlockCycles"][0]["threads"][0]["topFrames"], json!(["Cart.Transfer"]));
    // Once analyzed, a second report is refused.
    assert_eq!(w.call("POST", "/v1/jobs/findings", Some(&job_pod), Some(findings)).await.0, 409);

    // Volume storage: no upload URLs; the sidecar reports file:// artifacts it wrote itself.
    w.cp.apply(
        "apiVersion: dumpwatch.dev/v1alpha1\nkind: DumpPolicy\nmetadata: {name: local, namespace: shop}\n\
         spec: {storage: {volume: {path: /dumpwatch}}}\n",
    )
    .unwrap();
    w.cp.apply(&pod_yaml("vol-1", "{dumpwatch.dev/injected: local}", "")).unwrap();
    let vol = w.token("vol-1", SIDECAR);
    let files = json!({"capture": "v1", "files": [{"name": "core.42.zst", "size": 10}]});
    let (status, body) = w.call("POST", "/v1/sidecar/uploads", Some(&vol), Some(files)).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["message"].as_str().unwrap().contains("file://"), "{body}");
    let sha = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    let artifacts = json!([{"kind": "dump", "uri": "file:///dumpwatch/v1/core.42.zst", "size": 10, "sha256": sha}]);
    let report = json!({"manifest": manifest("v1", "vol-1"), "artifacts": artifacts});
    let (status, body) = w.call("POST", "/v1/sidecar/captures", Some(&vol), Some(report)).await;
    assert_eq!(status, 200, "{body}");
    let snap = w.snapshot(body["snapshot"].as_str().unwrap());
    assert_eq!(snap["spec"]["artifacts"][0]["uri"], "file:///dumpwatch/v1/core.42.zst");
    assert_eq!((&snap["spec"]["policy"], &snap["status"]["phase"]), (&json!("local"), &json!("Uploaded")));
}

/// Tenant isolation in storage: a snapshot in `shop` that lists another tenant's key (written
/// there by anyone who can edit snapshots) gets that key neither deleted nor presigned for its
/// analysis Job; the key stays.
#[tokio::test]
async fn tenant_a_snapshot_listing_tenant_b_key_cannot_delete_or_read_it() {
    use operator::controller::{ArtifactDeleter, ArtifactUrls};
    let w = world().await;
    // Tenant B's object, under B's namespace in the same store.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("core.zst");
    std::fs::write(&path, noise(10_000, 9)).unwrap();
    let s3 = w.s3_store();
    let theirs_key = "dw/other/db-0/c1/core.zst";
    let put = s3.presign_put(theirs_key, 10_000, Duration::from_secs(60));
    store::HttpClient::new().put_file_range(&put, &path, 0, 10_000).await.unwrap();

    let objects = sidecar_api::ObjectStorage::new(w.client.clone(), "dumpwatch");
    let sha = "ab".repeat(32);
    for (i, uri) in
        [format!("s3://dumps/{theirs_key}"), "s3://dumps/dw/shop/cart-1/../../other/db-0/c1/core.zst".to_string()]
            .iter()
            .enumerate()
    {
        let name = format!("stolen-{i}");
        w.cp.apply(&format!(
            "apiVersion: dumpwatch.dev/v1alpha1\nkind: DumpSnapshot\nmetadata: {{name: {name}, namespace: shop}}\n\
             spec: {{pod: cart-1, policy: leaks, store: dumps, trigger: onDemand,\n  \
             artifacts: [{{kind: dump, uri: '{uri}', size: 10000, sha256: '{sha}'}}]}}\n"
        ))
        .unwrap();
        let snapshot: api::DumpSnapshot = kube::Api::namespaced(w.client.clone(), "shop").get(&name).await.unwrap();
        let err = objects.delete(&snapshot, None, uri).await.expect_err("another tenant's key is not deleted");
        assert!(err.to_string().contains("is not under this snapshot's own s3://dumps/dw/shop/cart-1/"), "{err}");
        let err = objects.fetchable(&snapshot, None, uri).await.expect_err("nor presigned for a Job");
        assert!(err.to_string().contains("not under this snapshot's own"), "{err}");
        // Without a recorded store, no store "holds" it for this snapshot either.
        let mut unrecorded = snapshot.clone();
        unrecorded.spec.store = None;
        assert!(objects.delete(&unrecorded, None, uri).await.is_err());
    }
    assert_eq!(s3.head(theirs_key).await.unwrap().map(|o| o.size), Some(10_000), "tenant B's key is still there");
}

/// A store whose `allowedNamespaces` does not select the policy's namespace serves none of its
/// pods (with a message saying how to proceed) until the namespace carries the label.
#[tokio::test]
async fn tenant_cannot_use_a_store_not_allowed_for_its_namespace() {
    let w = world().await;
    w.cp.apply(&format!(
        "apiVersion: dumpwatch.dev/v1alpha1\nkind: DumpStore\nmetadata: {{name: team-b}}\n\
         spec:\n  s3: {{endpoint: '{}', region: us-east-1, bucket: dumps, prefix: b, secretRef: s3-creds, insecure: true}}\n  \
         allowedNamespaces: {{matchLabels: {{team: b}}}}\n",
        w.s3.endpoint()
    ))
    .unwrap();
    w.cp.kubectl(&[
        "-n",
        "shop",
        "patch",
        "dpol",
        "leaks",
        "--type=merge",
        "-p",
        r#"{"spec":{"storage":{"s3":{"storeRef":"team-b"}}}}"#,
    ])
    .unwrap();
    let cart1 = w.token("cart-1", SIDECAR);
    let files = json!({"capture": "c1", "files": [{"name": "core.1.zst", "size": 1000}]});
    let (status, body) = w.call("POST", "/v1/sidecar/uploads", Some(&cart1), Some(files.clone())).await;
    assert_eq!(status, 409, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("DumpStore team-b does not allow namespace shop") && message.contains("ask a cluster admin")
    );

    // The admin labels the namespace: the same request is served, under the store's prefix.
    w.cp.kubectl(&["label", "namespace", "shop", "team=b"]).unwrap();
    let (status, plan) = w.call("POST", "/v1/sidecar/uploads", Some(&cart1), Some(files)).await;
    assert_eq!(status, 200, "{plan}");
    assert_eq!(plan["files"][0]["uri"], "s3://dumps/b/shop/cart-1/c1/core.1.zst");
}

/// One pod cannot flood the operator: past its burst it gets 429 (another pod is still served),
/// and a body over the API's limit is refused with 413 before anything is parsed.
#[tokio::test]
async fn a_pod_flooding_the_api_is_rate_limited_and_oversized_bodies_refused() {
    let w = world_with(sidecar_api::limit::Rate { per_second: 0.5, burst: 3.0 }).await;
    let (cart1, cart2) = (w.token("cart-1", SIDECAR), w.token("cart-2", SIDECAR));
    for i in 0..3 {
        assert_eq!(w.call("GET", "/v1/sidecar/policy", Some(&cart1), None).await.0, 200, "call {i}");
    }
    let (status, body) = w.call("GET", "/v1/sidecar/policy", Some(&cart1), None).await;
    assert_eq!((status, body["error"].as_str()), (429, Some("TooManyRequests")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("try again in"), "{body}");
    assert_eq!(w.call("GET", "/v1/sidecar/policy", Some(&cart2), None).await.0, 200, "cart-2 has its own budget");

    let huge = json!({"capture": "c1", "files": [{"name": "x".repeat(sidecar_api::MAX_BODY), "size": 1}]});
    let (status, body) = w.call("POST", "/v1/sidecar/uploads", Some(&cart2), Some(huge)).await;
    assert_eq!((status, body["error"].as_str()), (413, Some("TooLarge")), "{body}");
}
