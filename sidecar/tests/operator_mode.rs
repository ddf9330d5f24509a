//! The sidecar in operator mode against a stand-in of the operator's API (tests/operator_peer,
//! written to docs/operator.md) and a real S3 server (moto), watching a real .NET 8 workload:
//! the policy comes from the operator, an on-demand request is captured, compressed, uploaded
//! through presigned URLs (multipart for the dump) and reported; a deadlock is reported with
//! its live finding; a policy switched to volume storage reports `file://` artifacts; an
//! operator outage is logged once and the last policy stays in force.

mod operator_peer;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use operator_peer::Peer;
use serde_json::{Value, json};
use testbed::{Isolation, Runtime, Workload};

struct Sidecar {
    child: Child,
    stderr: PathBuf,
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.stderr).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- sidecar log (last 60 lines) ---");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn metric(port: u16, name: &str, label: &str) -> f64 {
    let text = testbed::http_get(port, "/metrics", Duration::from_secs(10)).map(|(_, b)| b).unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

fn spec(storage: Value) -> Value {
    json!({
        "mode": "connect",
        "triggers": [{"type": "deadlock", "capture": ["stacks"]}, {"type": "onDemand"}],
        "capture": {"kinds": ["dump", "stacks"], "dumpType": "heap"},
        "limits": {"maxPerHour": 20, "cooldown": "1s", "maxBytes": "4Gi", "minFreeDisk": "64Mi"},
        "storage": storage,
    })
}

/// The stored bytes checked against their SHA-256 and decompressed, by the artifact codec.
fn unpack(stored: &[u8], sha256: &str) -> Vec<u8> {
    let mut plain = Vec::new();
    store::verify_and_decompress(stored, sha256, &mut plain).expect("the stored bytes have the reported SHA-256");
    plain
}

fn download(url: &str) -> Vec<u8> {
    let out = Command::new("curl").args(["-sf", url]).output().unwrap();
    assert!(out.status.success(), "GET {url}");
    out.stdout
}

fn store_dirs(store: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(store)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("manifest.json").exists())
        .collect()
}

#[test]
fn captures_go_to_s3_or_the_volume_and_are_reported_to_the_operator() {
    let s3 = harness::S3Server::start("dumps").unwrap();
    // The core dump (tens of MB compressed) goes multipart in 5 MiB parts (S3's minimum).
    let peer = Peer::new(&s3.endpoint(), s3.bucket(), 1 << 20, 5 << 20);
    let s3_storage = json!({"s3": {"storeRef": "dumps"}});
    peer.set_policy("1", spec(s3_storage));
    let url = peer.serve();

    let dir = tempfile::Builder::new().prefix("sidecar-op-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let store = dir.path().join("store");
    let token = dir.path().join("token");
    std::fs::write(&token, "token-1\n").unwrap();
    let marker = format!("DUMPWATCH_TEST=operator-{}", std::process::id());
    let port = free_port();
    let stderr = dir.path().join("sidecar.log");
    let spawn = |log: &Path| {
        let child = Command::new(env!("CARGO_BIN_EXE_dumpwatch-sidecar"))
            .args(["--operator-url", &url, "--token-file", token.to_str().unwrap()])
            .args(["--policy-refresh-ms", "300", "--storage", store.to_str().unwrap()])
            .args(["--http", &format!("127.0.0.1:{port}"), "--select-env", &marker, "--scan-interval-ms", "200"])
            .args(["--pod", "test-pod", "--namespace", "default", "--container", "app"])
            // The webhook sets DUMPWATCH_POLICY to the policy's name: operator mode must not read it.
            .env("DUMPWATCH_POLICY", "orders")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        let sc = Sidecar { child, stderr: log.to_path_buf() };
        wait_for("the sidecar ready", Duration::from_secs(30), || {
            testbed::http_get(port, "/readyz", Duration::from_secs(5)).ok().filter(|(s, _)| *s == 200)
        });
        sc
    };
    let mut sc = spawn(&stderr);
    // The app's stacks are not served to whoever reaches the pod: /findings is off in operator mode.
    let (status, body) = testbed::http_get(port, "/findings", Duration::from_secs(5)).unwrap();
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("DUMPWATCH_FINDINGS_TOKEN_FILE"), "{body}");

    let (k, v) = marker.split_once('=').unwrap();
    let iso = Isolation { own_namespaces: false, env: vec![(k.into(), v.into())] };
    let w = Workload::start_with(Runtime::Net8, "DiagScenarios", &[], &iso);
    // 1. An on-demand request naming the process: dump + stacks to S3, the dump multipart. The
    //    first two reports fail (503): the capture stays local until the third is accepted.
    std::fs::write(&token, "token-2\n").unwrap(); // rotated: the next requests carry the new one
    peer.fail_reports.store(2, Ordering::Relaxed);
    // Sent before the sidecar watches the process: it must keep the request until it does
    // (the operator hands each request out once).
    peer.request("req-1", Some(w.pid));
    wait_for("the workload watched", Duration::from_secs(60), || {
        // Published once its session runs, right before the watcher listens for requests (a
        // request broadcast before that would find nobody to capture).
        let pid = format!("pid=\"{}\"", w.pid);
        let text = testbed::http_get(port, "/metrics", Duration::from_secs(5)).ok()?.1;
        text.lines().any(|l| l.starts_with("dumpwatch_deadlocked_threads{") && l.contains(&pid)).then_some(())
    });

    let report = wait_for("the on-demand capture reported", Duration::from_secs(180), || {
        let r = peer.recorded("POST", "/v1/sidecar/captures");
        r.iter().find(|r| r.body["snapshot"] == "req-1").cloned().filter(|_| r.len() >= 3)
    });
    assert_eq!(report.token, "token-2", "the token file is read again on every request");
    assert_eq!(report.body["manifest"]["process"]["pid"], w.pid);
    assert_eq!(report.body["manifest"]["trigger"]["trigger"], "onDemand");
    let artifacts = report.body["artifacts"].as_array().unwrap();
    let names: Vec<&str> = artifacts.iter().map(|a| a["uri"].as_str().unwrap().rsplit('/').next().unwrap()).collect();
    assert!(names.contains(&format!("core.{}.zst", w.pid).as_str()), "{names:?}");
    assert!(names.contains(&"stacks.json.zst"), "{names:?}");
    assert!(names.iter().any(|n| n.starts_with("libmscordaccore")), "the DAC travels with the dump: {names:?}");
    for a in artifacts {
        let uri = a["uri"].as_str().unwrap();
        assert!(uri.starts_with("s3://dumps/dumps/default/test-pod/"), "{uri}");
        let stored = download(&peer.get_url(uri));
        assert_eq!(stored.len() as u64, a["size"].as_u64().unwrap(), "{uri}: size of the stored bytes");
        let plain = unpack(&stored, a["sha256"].as_str().unwrap());
        if uri.contains("/core.") {
            assert_eq!(a["kind"], "dump");
            assert_eq!(&plain[..4], b"\x7fELF", "a core dump");
            assert!(plain.len() > 5 * stored.len() / 2, "compressed: {} -> {}", plain.len(), stored.len());
        }
        if uri.ends_with("stacks.json.zst") {
            assert_eq!(a["kind"], "stacks");
            let stacks: Value = serde_json::from_slice(&plain).unwrap();
            assert!(stacks.as_array().is_some_and(|t| t.len() > 2), "stacks of every thread");
        }
    }
    let completes = peer.recorded("POST", "/v1/sidecar/uploads/complete");
    assert!(
        completes.iter().any(|c| c.body["name"] == format!("core.{}.zst", w.pid) && !c.body["etags"].as_array().unwrap().is_empty()),
        "the dump went up as a multipart upload: {:?}",
        completes.iter().map(|c| &c.body).collect::<Vec<_>>()
    );
    wait_for("the uploaded capture removed from the app's disk", Duration::from_secs(10), || {
        store_dirs(&store).is_empty().then_some(())
    });
    // Streaming: the ~100 MB dump never sits in the sidecar's memory.
    let status = std::fs::read_to_string(format!("/proc/{}/status", sc.child.id())).unwrap();
    let peak_kib: u64 =
        status.lines().find_map(|l| l.strip_prefix("VmHWM:")).unwrap().trim().trim_end_matches(" kB").parse().unwrap();
    let core_bytes = report.body["manifest"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"].as_str().unwrap().starts_with("core."))
        .unwrap()["bytes"]
        .as_u64()
        .unwrap();
    eprintln!("sidecar peak RSS {} MiB after capturing and uploading a {} MiB dump", peak_kib / 1024, core_bytes >> 20);
    assert!(peak_kib < 64 * 1024, "peak RSS {peak_kib} kB");
    assert!(core_bytes > 64 << 20, "a dump larger than the memory bound: {core_bytes}");
    assert_eq!(metric(port, "dumpwatch_uploads_total", "result=\"retry\""), 2.0);
    assert_eq!(metric(port, "dumpwatch_uploads_total", "result=\"success\""), 1.0);

    // 2. A deadlock: the live finding goes with the report (stacks only, as the trigger says).
    let dl = w.get("/deadlock?waiters=1");
    let owners: Vec<u64> = dl["owners"].as_array().unwrap().iter().map(|o| o["os_tid"].as_u64().unwrap()).collect();
    let report = wait_for("the deadlock reported", Duration::from_secs(90), || {
        peer.recorded("POST", "/v1/sidecar/captures").into_iter().find(|r| r.body["findings"]["kind"] == "deadlock")
    });
    let mut cycle: Vec<u64> =
        report.body["findings"]["cycle"].as_array().unwrap().iter().map(|e| e["thread"].as_u64().unwrap()).collect();
    cycle.sort();
    let mut owners_sorted = owners.clone();
    owners_sorted.sort();
    assert_eq!(cycle, owners_sorted, "the live finding names the deadlocked threads");
    assert!(report.body.get("snapshot").is_none(), "a triggered capture answers no request");
    let kinds: Vec<&str> =
        report.body["artifacts"].as_array().unwrap().iter().map(|a| a["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, vec!["stacks"]);

    // 3. The operator switches the policy to volume storage: file:// artifacts, no upload.
    let uploads_before = peer.recorded("POST", "/v1/sidecar/uploads").len();
    let mut vol = spec(json!({"volume": {"path": store.to_str().unwrap()}}));
    vol["capture"]["kinds"] = json!(["stacks"]);
    peer.set_policy("2", vol);
    wait_for("the new policy applied", Duration::from_secs(20), || {
        std::fs::read_to_string(&sc.stderr).unwrap().contains("policy changed").then_some(())
    });
    std::thread::sleep(Duration::from_millis(1500)); // the cooldown of the deadlock capture
    peer.request("req-2", None);
    let report = wait_for("the volume capture reported", Duration::from_secs(60), || {
        peer.recorded("POST", "/v1/sidecar/captures").into_iter().find(|r| r.body["snapshot"] == "req-2")
    });
    assert_eq!(peer.recorded("POST", "/v1/sidecar/uploads").len(), uploads_before, "volume storage uploads nothing");
    let a = &report.body["artifacts"][0];
    let path = a["uri"].as_str().unwrap().strip_prefix("file://").expect("a file:// URI");
    let stored = std::fs::read(path).unwrap();
    unpack(&stored, a["sha256"].as_str().unwrap());
    assert_eq!(stored.len() as u64, a["size"].as_u64().unwrap());
    assert!(Path::new(path).starts_with(&store) && path.ends_with("/stacks.json.zst"), "{path}");
    assert!(!Path::new(path).with_file_name("stacks.json").exists(), "the uncompressed file is gone");

    // 4. An operator outage: logged once, the last policy stays in force, then logged back.
    peer.down.store(true, Ordering::Relaxed);
    let polls = peer.recorded("GET", "/v1/sidecar/policy").len();
    wait_for("several failed policy fetches", Duration::from_secs(20), || {
        (peer.recorded("GET", "/v1/sidecar/policy").len() >= polls + 5).then_some(())
    });
    peer.down.store(false, Ordering::Relaxed);
    wait_for("the operator back", Duration::from_secs(20), || {
        std::fs::read_to_string(&sc.stderr).unwrap().contains("the operator answers again").then_some(())
    });
    let log = std::fs::read_to_string(&sc.stderr).unwrap();
    assert_eq!(log.matches("fetching the policy failed").count(), 1, "one line per outage:\n{log}");
    assert!(sc.child.try_wait().unwrap().is_none(), "the sidecar died:\n{log}");
    assert_eq!(metric(port, "dumpwatch_watched_processes", ""), 1.0, "still watching");

    // 5. Killed while its report cannot get through: the next start reports the capture.
    peer.fail_reports.store(1000, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(1500)); // the cooldown
    peer.request("req-3", None);
    let attempt = wait_for("a report attempted", Duration::from_secs(60), || {
        peer.recorded("POST", "/v1/sidecar/captures").into_iter().find(|r| r.body["snapshot"] == "req-3")
    });
    let id = attempt.body["manifest"]["id"].clone();
    drop(sc);
    peer.fail_reports.store(0, Ordering::Relaxed);
    let before = peer.recorded("POST", "/v1/sidecar/captures").len();
    let _sc = spawn(&dir.path().join("sidecar-2.log"));
    wait_for("the leftover reported after the restart", Duration::from_secs(60), || {
        peer.recorded("POST", "/v1/sidecar/captures")[before..].iter().find(|r| r.body["manifest"]["id"] == id).cloned()
    });
    assert_eq!(metric(port, "dumpwatch_uploads_total", "result=\"success\""), 1.0);
}

/// A file larger than several parts (incompressible, so it stays large) goes up in exactly
/// `ceil(size / partSize)` parts whose ETags complete the upload; what S3 holds is what was
/// measured.
#[test]
fn a_large_file_is_uploaded_in_parts() {
    let s3 = harness::S3Server::start("dumps").unwrap();
    let peer = Peer::new(&s3.endpoint(), s3.bucket(), 1 << 20, 5 << 20);
    let url = peer.serve();
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t").unwrap();
    let capture = dir.path().join("c1");
    std::fs::create_dir(&capture).unwrap();
    let mut x = 0x9E3779B97F4A7C15u64;
    let data: Vec<u8> = (0..12 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(capture.join("core.7"), &data).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let cfg = sidecar::operator_client::OperatorConfig {
        url,
        ca_pem: None,
        token_file: token,
        policy_refresh: Duration::from_secs(10),
    };
    let client = sidecar::operator_client::OperatorClient::new(&cfg).unwrap();
    let planned = sidecar::report::plan(&capture).unwrap();
    let http = store::HttpClient::new();
    let arts = rt.block_on(sidecar::report::s3::upload_files(&client, &http, "c1", &planned)).unwrap();
    assert_eq!(arts.len(), 1);
    let completes = peer.recorded("POST", "/v1/sidecar/uploads/complete");
    assert_eq!(completes.len(), 1);
    let size = arts[0].size;
    assert!(size > 12 << 20, "incompressible: {size}");
    assert_eq!(completes[0].body["etags"].as_array().unwrap().len() as u64, size.div_ceil(5 << 20));
    let stored = download(&peer.get_url(&arts[0].uri));
    assert_eq!(stored.len() as u64, size);
    assert_eq!(unpack(&stored, &arts[0].sha256), data);
}
