//! `dumpwatch analyze` of stored artifacts, as the analysis Job runs it: a real .NET 8 dump and
//! its DAC, zstd-compressed, uploaded to a real S3 server (moto), fetched through presigned
//! URLs, checked, analyzed (the right deadlock threads), the findings POSTed to an operator
//! stand-in; and the failures (checksum mismatch, 403, short download) as typed errors that
//! leave no file in the temp dir.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use serde_json::{Value, json};
use testbed::{Runtime, Workload};

/// `file` stored as the sidecar stores it (the artifact codec): the stored bytes and their SHA-256.
fn stored(file: &std::path::Path) -> (Vec<u8>, String) {
    let (bytes, c) = store::compress_and_hash(std::fs::File::open(file).unwrap(), Vec::new()).unwrap();
    (bytes, c.sha256)
}

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn dumpwatch(args: &[&str], tmpdir: &Path) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_dumpwatch")).args(args).env("TMPDIR", tmpdir).output().unwrap();
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).unwrap().next().is_none()
}

/// A one-request HTTP server: answers 204 and hands over (request head, body).
fn findings_receiver() -> (String, mpsc::Receiver<(String, Value)>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut head = String::new();
        loop {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            head.push_str(&line);
        }
        let len: usize = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
            .unwrap_or(0);
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap();
        (&s).write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n").unwrap();
        tx.send((head, serde_json::from_slice(&body).unwrap())).unwrap();
    });
    (url, rx)
}

fn tids(list: &Value, key: &str) -> BTreeSet<u64> {
    list.as_array().unwrap().iter().map(|t| t[key]["os_tid"].as_u64().unwrap()).collect()
}

fn truth(list: &Value) -> BTreeSet<u64> {
    list.as_array().unwrap().iter().map(|t| t["os_tid"].as_u64().unwrap()).collect()
}

#[test]
fn analyzes_a_compressed_dump_from_s3_and_reports_the_findings() {
    let work = tempfile::tempdir().unwrap();
    let w = Workload::start(Runtime::Net8, "DiagScenarios", &[]);
    let dl = w.get("/deadlock?waiters=2");
    let core = work.path().join("core");
    let mut attempt = 0;
    loop {
        // createdump can lose a race with an exiting thread: retry (see analyze_real.rs).
        let r = dumpwatch(&["dump", &w.pid.to_string(), "-o", core.to_str().unwrap(), "--type", "heap"], work.path());
        if r.ok {
            break;
        }
        attempt += 1;
        assert!(attempt < 3 && r.stderr.contains("ptrace"), "dump failed: {}", r.stderr);
    }
    drop(w);
    let dac = work.path().join("libmscordaccore.so");
    assert!(dac.exists(), "dump copies the DAC beside the core");

    // Store both as the sidecar does: zstd, checksum of the stored bytes, presigned PUT.
    let s3 = harness::S3Server::start("dumps").unwrap();
    let bucket = Bucket::new(s3.endpoint().parse().unwrap(), UrlStyle::Path, "dumps", "us-east-1").unwrap();
    let creds = Credentials::new(harness::S3Server::ACCESS_KEY, harness::S3Server::SECRET_KEY);
    let hour = Duration::from_secs(3600);
    let mut artifacts = Vec::new();
    for (file, name) in [(&core, "core.42.zst"), (&dac, "libmscordaccore.so.zst")] {
        let started = std::time::Instant::now();
        let (stored, sha256) = stored(file);
        let plain = std::fs::metadata(file).unwrap().len();
        eprintln!(
            "{name}: {:.1} MiB -> {:.1} MiB with zstd level 1 (the sidecar's) in {:.2} s",
            plain as f64 / 1048576.0,
            stored.len() as f64 / 1048576.0,
            started.elapsed().as_secs_f64()
        );
        let key = format!("dumps/default/app-0/c1/{name}");
        let put = bucket.put_object(Some(&creds), &key).sign(hour).to_string();
        let tmp = work.path().join(name);
        std::fs::write(&tmp, &stored).unwrap();
        let code = Command::new("curl")
            .args(["-sf", "-X", "PUT", "-H", "Content-Type: application/octet-stream", "--data-binary"])
            .arg(format!("@{}", tmp.display()))
            .arg(&put)
            .status()
            .unwrap();
        assert!(code.success(), "PUT {name}");
        let get = bucket.get_object(Some(&creds), &key).sign(hour).to_string();
        artifacts.push(json!({"kind": "dump", "uri": get, "size": stored.len(), "sha256": sha256}));
        std::fs::remove_file(&tmp).unwrap();
    }
    std::fs::remove_file(&core).unwrap();
    std::fs::remove_file(&dac).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let token = work.path().join("token");
    std::fs::write(&token, "analyzer-token\n").unwrap();

    // As the analysis Job: --artifacts, --report-to.
    let (url, received) = findings_receiver();
    let list = serde_json::to_string(&artifacts).unwrap();
    let args =
        ["analyze", "--artifacts", &list, "--json", "--report-to", &url, "--snapshot", "app-0-c1", "--token-file"];
    let mut args = args.to_vec();
    args.push(token.to_str().unwrap());
    // The stored DAC is this test's own copy of the runtime's: trusted on purpose (the chart's
    // analysis.trustCapturedDacs).
    args.push("--trust-dac-beside-dump");
    let r = dumpwatch(&args, scratch.path());
    assert!(r.ok, "analyze failed: {}", r.stderr);
    assert!(r.stderr.contains("downloaded core.42.zst"), "progress on stderr: {}", r.stderr);
    let f: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(f["summary"]["deadlocks"], 1, "{}", f["deadlocks"]);
    assert_eq!(tids(&f["deadlocks"][0]["cycle"], "thread"), truth(&dl["owners"]));
    assert_eq!(tids(&f["deadlocks"][0]["victims"], "thread"), truth(&dl["waiters"]));
    let path = f["source"]["path"].as_str().unwrap();
    assert!(path.ends_with("/core.42.zst") && !path.contains("Signature"), "no signature in the report: {path}");
    assert!(empty(scratch.path()), "the fetched files are gone");
    let (head, body) = received.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(head.starts_with("POST /v1/jobs/findings "), "{head}");
    assert!(head.to_ascii_lowercase().contains("authorization: bearer analyzer-token"), "{head}");
    assert_eq!(body["snapshot"], "app-0-c1");
    assert_eq!(body["findings"], f, "the document printed is the document sent");

    let core_url = artifacts[0]["uri"].as_str().unwrap();
    let core_sha = artifacts[0]["sha256"].as_str().unwrap();
    // A wrong checksum: refused before any analysis, nothing left.
    let wrong = "0".repeat(64);
    let r = dumpwatch(&["analyze", core_url, "--sha256", &wrong, "--json"], scratch.path());
    assert!(!r.ok);
    assert!(r.stderr.contains("core.42.zst: checksum mismatch: expected sha256 0000"), "{}", r.stderr);
    assert!(r.stdout.is_empty(), "no findings from unverified bytes");
    assert!(empty(scratch.path()), "no half file after a mismatch");
    // No valid signature (moto checks none, but refuses anonymous reads): S3 says 403, and we
    // say why it may be.
    let unsigned = core_url.split('?').next().unwrap();
    let r = dumpwatch(&["analyze", unsigned, "--sha256", core_sha], scratch.path());
    assert!(!r.ok);
    assert!(r.stderr.contains("HTTP 403") && r.stderr.contains("presigned URL expired"), "{}", r.stderr);
    assert!(empty(scratch.path()));
    // Fewer bytes than the snapshot recorded: a short download.
    let mut short = artifacts.clone();
    short[0]["size"] = json!(short[0]["size"].as_u64().unwrap() + 10);
    let r = dumpwatch(&["analyze", "--artifacts", &serde_json::to_string(&short).unwrap()], scratch.path());
    assert!(!r.ok);
    assert!(r.stderr.contains("core.42.zst: truncated download"), "{}", r.stderr);
    assert!(empty(scratch.path()));

    // A volume: file:// to the compressed dump, the DAC found beside it.
    let vol = work.path().join("vol/c1");
    std::fs::create_dir_all(&vol).unwrap();
    for a in &artifacts {
        let name = a["uri"].as_str().unwrap().split('?').next().unwrap().rsplit('/').next().unwrap().to_string();
        let bytes = Command::new("curl").args(["-sf", a["uri"].as_str().unwrap()]).output().unwrap().stdout;
        std::fs::write(vol.join(name), bytes).unwrap();
    }
    let file_url = format!("file://{}", vol.join("core.42.zst").display());
    let r = dumpwatch(
        &["analyze", &file_url, "--sha256", core_sha, "--json", "--histogram-only", "--trust-dac-beside-dump"],
        scratch.path(),
    );
    assert!(r.ok, "{}", r.stderr);
    let f: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(tids(&f["deadlocks"][0]["cycle"], "thread"), truth(&dl["owners"]));
    assert!(f["source"]["dac"].as_str().is_some(), "the DAC beside the dump was used");
    assert!(empty(scratch.path()));
}

/// A gcdump-only capture (what a heap trigger with `capture: [gcdump]` stores): the Job analyzes
/// the compressed heap snapshot itself: histogram and leak suspect, from a real .NET 8 leak.
#[test]
fn analyzes_a_compressed_heap_snapshot_from_the_volume() {
    let w = Workload::start(Runtime::Net8, "DiagScenarios", &[]);
    let total = w.get("/leak?count=150000")["total_customers"].as_u64().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("heap.nettrace");
    let r = dumpwatch(&["gcdump", &w.pid.to_string(), "-o", raw.to_str().unwrap(), "--json"], dir.path());
    assert!(r.ok, "{}", r.stderr);
    drop(w);
    let capture = dir.path().join("vol/c1");
    std::fs::create_dir_all(&capture).unwrap();
    let (heap, sha256) = stored(&raw);
    std::fs::write(capture.join("heap.nettrace.zst"), &heap).unwrap();
    let (histogram, _) = store::compress_and_hash(&b"{}"[..], Vec::new()).unwrap();
    std::fs::write(capture.join("histogram.json.zst"), histogram).unwrap();
    std::fs::remove_file(&raw).unwrap();
    let list = json!([
        {"kind": "gcdump", "uri": format!("file://{}", capture.join("histogram.json.zst").display())},
        {"kind": "gcdump", "uri": format!("file://{}", capture.join("heap.nettrace.zst").display()),
         "size": heap.len(), "sha256": sha256},
    ]);
    let scratch = tempfile::tempdir().unwrap();
    let r = dumpwatch(&["analyze", "--artifacts", &list.to_string(), "--json"], scratch.path());
    assert!(r.ok, "{}", r.stderr);
    let f: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(f["source"]["kind"], "gcdump");
    let types = f["heap"]["top_types"].as_array().unwrap();
    let customer = types.iter().find(|t| t["type_name"] == "DiagScenarios.Customer").expect("Customer listed");
    assert_eq!(customer["count"].as_u64().unwrap(), total);
    let top = &f["leak_suspects"][0];
    assert_eq!(top["type_name"], "DiagScenarios.Customer", "{}", f["leak_suspects"]);
    let path: Vec<&str> = top["path"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    assert!(path.contains(&"DiagScenarios.CustomerCache"), "{path:?}");
    assert!(empty(scratch.path()), "the decompressed snapshot is gone");
}
