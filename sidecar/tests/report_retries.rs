//! The report queue decides on retries by the kind of error: a storage that refuses for good
//! (S3's `AccessDenied`) is tried once and counted as a failure, an operator that is away is
//! tried again. Against the operator stand-in (tests/operator_peer) and the sidecar's own queue.

mod operator_peer;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use api::wire::{Firing, Identity, Manifest, ProcessEntry};
use operator_peer::Peer;
use serde_json::json;
use sidecar::metrics::{Metrics, UploadLabels};
use sidecar::operator_client::{OperatorClient, OperatorConfig};
use sidecar::report::{self, Report};

fn manifest(id: &str) -> Manifest {
    Manifest {
        version: 1,
        id: id.into(),
        created: "2026-11-28T02:15:00Z".into(),
        identity: Identity::default(),
        process: ProcessEntry {
            pid: 42,
            ns_pid: 1,
            name: "Orders".into(),
            command_line: String::new(),
            runtime_version: None,
        },
        trigger: Firing {
            index: None,
            trigger: api::TriggerKind::OnDemand,
            value: 1.0,
            threshold: None,
            detail: String::new(),
        },
        dump_type: "heap".into(),
        files: Vec::new(),
        failures: Vec::new(),
        finding: None,
        seconds: 0.1,
    }
}

/// A capture `c1` with one small file, queued for S3 storage through `peer`; the queue's
/// `dumpwatch_uploads_total` after `wait`.
async fn report_one(peer: &Arc<Peer>, wait: Duration) -> (Metrics, tempfile::TempDir) {
    let storage = json!({"s3": {"storeRef": "dumps"}});
    peer.set_policy("1", json!({"storage": storage}));
    let url = peer.serve();
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t").unwrap();
    let config = OperatorConfig { url, ca_pem: None, token_file: token, policy_refresh: Duration::from_secs(10) };
    let spec: api::DumpPolicySpec = serde_json::from_value(json!({"storage": storage})).unwrap();
    let (_policy_tx, policy) = tokio::sync::watch::channel(Arc::new(spec));
    let metrics = Metrics::new();
    let (reporter, queue) = report::queue(metrics.uploads.clone());
    let captures = dir.path().join("captures");
    let capture = captures.join("c1");
    std::fs::create_dir_all(&capture).unwrap();
    std::fs::write(capture.join("stacks.json"), b"[]").unwrap();
    reporter.submit(Report { dir: capture, manifest: manifest("c1"), snapshot: None, findings: None });
    let ctx = report::Context {
        policy,
        identity: Identity::default(),
        captures,
        claim: None,
        client: Arc::new(OperatorClient::new(&config).unwrap()),
        storage_http: store::HttpClient::new(),
        uploads: metrics.uploads.clone(),
    };
    let running = tokio::spawn(report::run(ctx, queue));
    tokio::time::sleep(wait).await;
    running.abort();
    (metrics, dir)
}

fn uploads(m: &Metrics, result: &str) -> u64 {
    m.uploads.get_or_create(&UploadLabels { result: result.into() }).get()
}

/// Failed before the fix: a presigned PUT answered 403 (`AccessDenied`) was retried after 2 s,
/// 6 s, ... ten times over six minutes (`retriable` took 403 for a token being rotated).
#[tokio::test]
async fn an_upload_s3_refuses_for_good_is_tried_once() {
    let peer = Peer::new("http://127.0.0.1:9", "dumps", u64::MAX, 5 << 20);
    peer.deny_uploads.store(true, Ordering::Relaxed);
    // Retries would come after 2 s and 6 s.
    let (metrics, _dir) = report_one(&peer, Duration::from_secs(7)).await;
    let puts = peer.log.lock().unwrap().iter().filter(|r| r.method == "PUT" && r.path.starts_with("/s3/")).count();
    assert_eq!(puts, 1, "S3 answered AccessDenied: a refusal, tried once, not {puts} times");
    assert_eq!((uploads(&metrics, "failure"), uploads(&metrics, "retry")), (1, 0));
    assert!(peer.recorded("POST", api::wire::CAPTURES.path).is_empty(), "nothing stored, nothing reported");
}

/// An operator that answers 503 for a while is tried again until it takes the report.
#[tokio::test]
async fn a_report_the_operator_cannot_take_yet_is_retried() {
    let peer = Peer::new("http://127.0.0.1:9", "dumps", u64::MAX, 5 << 20);
    peer.deny_uploads.store(true, Ordering::Relaxed);
    peer.down.store(true, Ordering::Relaxed);
    let flip = {
        let peer = peer.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            peer.down.store(false, Ordering::Relaxed);
        })
    };
    let (metrics, _dir) = report_one(&peer, Duration::from_secs(4)).await;
    flip.await.unwrap();
    assert!(uploads(&metrics, "retry") >= 1, "503 is an outage: tried again");
    let asked = peer.recorded("POST", api::wire::UPLOADS.path).len();
    assert!(asked >= 2, "the upload URLs were asked for again after the outage: {asked}");
}
