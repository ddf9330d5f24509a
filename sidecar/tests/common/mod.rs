//! Test support: run the real sidecar binary against real workloads, scoped to this test's
//! processes only (`--select-env`): the machine runs other people's .NET processes too.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use testbed::{Isolation, Runtime, Value, Workload};

pub struct Sidecar {
    pub child: Child,
    pub port: u16,
    pub store: PathBuf,
    pub policy: PathBuf,
    pub marker: String,
    /// The sidecar's log (`--json-logs`), one JSON object per line.
    pub log: PathBuf,
    scan_ms: u64,
    _dir: tempfile::TempDir,
}

/// A fresh folder outside `/tmp`: a workload in its own mount namespace has a private `/tmp`,
/// and in listen mode it must see our socket, as it would see a shared volume.
pub fn shared_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("sidecar-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Sidecar {
    /// Start with `policy` (YAML; the storage path is set by us).
    pub fn start(name: &str, policy: &str) -> Sidecar {
        // Tests scan /proc 5× a second to pick up workloads quickly; production's default is 1 s.
        Self::start_with_scan(name, policy, 200)
    }

    pub fn start_with_scan(name: &str, policy: &str, scan_ms: u64) -> Sidecar {
        let dir = shared_dir();
        let store = dir.path().join("store");
        let policy_path = dir.path().join("policy.yaml");
        std::fs::write(&policy_path, policy).unwrap();
        let marker = format!("DUMPWATCH_TEST={name}-{}", std::process::id());
        let log = dir.path().join("sidecar.log");
        let mut s = Sidecar {
            child: spawn_placeholder(),
            port: 0,
            store,
            policy: policy_path,
            marker,
            log,
            scan_ms,
            _dir: dir,
        };
        s.child = s.spawn();
        s
    }

    fn spawn(&mut self) -> Child {
        self.port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_dumpwatch-sidecar"))
            .args(["--policy", self.policy.to_str().unwrap(), "--storage", self.store.to_str().unwrap()])
            .args(["--http", &format!("127.0.0.1:{}", self.port), "--select-env", &self.marker])
            .args(["--pod", "test-pod", "--container", "app", "--scan-interval-ms", &self.scan_ms.to_string()])
            .arg("--json-logs")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.get("/readyz").is_none_or(|(s, _)| s != 200) {
            assert!(Instant::now() < deadline, "sidecar not ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        child
    }

    /// Kill (SIGKILL, no clean-up) and start again with the same store and policy.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn restart(&mut self) {
        self.kill();
        self.child = self.spawn();
    }

    pub fn socket(&self) -> PathBuf {
        self.store.join("dumpwatch.sock")
    }

    /// The environment a workload needs to be watched by this sidecar.
    pub fn isolation(&self, own_namespaces: bool, listen: bool) -> Isolation {
        let (k, v) = self.marker.split_once('=').unwrap();
        let mut env = vec![(k.to_string(), v.to_string())];
        if listen {
            env.push(("DOTNET_DiagnosticPorts".into(), format!("{},suspend", self.socket().display())));
        }
        Isolation { own_namespaces, env }
    }

    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        testbed::http_get(self.port, path, Duration::from_secs(10)).ok()
    }

    pub fn metrics(&self) -> String {
        self.get("/metrics").map(|(_, b)| b).unwrap_or_default()
    }

    /// Value of `name{...}` whose labels contain every `labels` fragment.
    pub fn metric(&self, name: &str, labels: &[&str]) -> Option<f64> {
        metric_in(&self.metrics(), name, labels)
    }

    /// The log lines so far whose message is `message` (their `fields` objects).
    pub fn logged(&self, message: &str) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["fields"]["message"] == message)
            .map(|v| v["fields"].clone())
            .collect()
    }

    pub fn findings(&self) -> Vec<Value> {
        self.get("/findings").and_then(|(_, b)| serde_json::from_str(&b).ok()).unwrap_or_default()
    }

    /// Completed captures (directories with a manifest), oldest first.
    pub fn captures(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&self.store)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.join("manifest.json").exists() && !hidden(p))
            .collect();
        v.sort();
        v
    }

    /// Wait until `f` returns `Some`, or panic with `what`.
    pub fn wait_for<T>(&self, what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
        wait_for(what, timeout, &mut f)
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn hidden(p: &Path) -> bool {
    p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

pub fn wait_for<T>(what: &str, timeout: Duration, f: &mut dyn FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn spawn_placeholder() -> Child {
    Command::new("true").spawn().unwrap()
}

pub fn metric_in(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .find(|l| labels.iter().all(|f| l.contains(f)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

pub fn start(sc: &Sidecar, runtime: Runtime, own_namespaces: bool, listen: bool, args: &[&str]) -> Workload {
    Workload::start_with(runtime, "DiagScenarios", args, &sc.isolation(own_namespaces, listen))
}

pub fn manifest(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

pub fn dir_bytes(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| if e.path().is_dir() { dir_bytes(&e.path()) } else { e.metadata().map(|m| m.len()).unwrap_or(0) })
        .sum()
}
