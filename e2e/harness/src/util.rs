use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::Result;

/// `$DUMPWATCH_CACHE`, else `<repo>/.cache` (where `scripts/setup` installs everything).
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("DUMPWATCH_CACHE") {
        return PathBuf::from(d);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache")
}

/// `<repo>/crds`: the CRDs `crdgen` generates, as committed.
pub fn crds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crds")
}

/// The files of [`crds_dir`], one per kind.
pub const DUMPWATCH_CRDS: [&str; 3] = ["dumppolicy.yaml", "dumpsnapshot.yaml", "dumpstore.yaml"];

/// `<cache>/e2e/bin`: links to the binaries `e2e/controlplane/build`, `e2e/nodeagent/build` and
/// `e2e/certmanager/build` made.
pub(crate) fn e2e_bin(name: &str) -> Result<PathBuf> {
    let p = cache_dir().join("e2e/bin").join(name);
    if !p.exists() {
        return Err(format!("{} is missing: run scripts/setup (it builds the e2e binaries)", p.display()).into());
    }
    Ok(p)
}

/// `target/<profile>/<name>`: a binary of the workspace, built before the test runs (`scripts/test`
/// builds them all; alone, e.g. `cargo build -p operator`). `$DUMPWATCH_E2E_BIN_DIR` points
/// elsewhere, e.g. at a copy that a concurrent build cannot replace mid-run.
pub fn workspace_bin(name: &str) -> PathBuf {
    let dir = match std::env::var_os("DUMPWATCH_E2E_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let exe = std::env::current_exe().expect("test executable");
            exe.parent().and_then(|deps| deps.parent()).expect("target dir").to_path_buf()
        }
    };
    let bin = dir.join(name);
    assert!(bin.exists(), "{} missing: build the workspace first (scripts/test does)", bin.display());
    bin
}

/// A loopback TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("no free loopback port")
}

/// Polls `f` every 100 ms until it returns `Ok(Some(v))`. `Ok(None)` means "not yet"; an error
/// ends the wait at once (a component died, a request was refused); so does `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().map_err(|e| format!("while waiting for {what}: {e}"))? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(format!("timed out after {timeout:?} waiting for {what}").into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs a command, returning stdout, or an error with stderr.
pub(crate) fn run(cmd: &mut std::process::Command) -> Result<String> {
    let out = cmd.output().map_err(|e| format!("{:?}: {e}", cmd.get_program()))?;
    if !out.status.success() {
        return Err(format!(
            "{:?} {:?} failed ({}): {}",
            cmd.get_program(),
            cmd.get_args().collect::<Vec<_>>(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// An HTTP GET through curl, answering `(status, body)`; status 0 when nothing answered.
pub(crate) fn curl(args: &[&str], url: &str) -> (u16, String) {
    let out = std::process::Command::new("curl")
        .args(["-s", "-m", "5", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .arg(url)
        .output();
    let Ok(out) = out else { return (0, String::new()) };
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}
