//! Finding processes and handing each to a watcher exactly once.
//!
//! - Connect mode: scan `/proc` every `scan_interval` (a pod's processes come and go: restarts,
//!   short-lived tools). The key is the diagnostics socket path, which holds the runtime's
//!   start key: a restarted app with a reused pid is a new process.
//! - Listen mode: runtimes connect to our socket; a suspended one is resumed first, before
//!   anything else, because the app is not running until we do. Runtimes older than .NET 5
//!   ignore `DOTNET_DiagnosticPorts`, so the `/proc` scan still picks those up.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diag::client::{DiagnosticsClient, Endpoint};
use diag::discovery::{DotnetProcess, ProcFs};
use diag::reverse::{ReverseRuntime, ReverseServer};
use tokio::task::JoinHandle;

use crate::Error;
use crate::capture::{Target, process_name};
use crate::watcher::{Shared, watch};

/// Only processes whose environment holds `KEY=VALUE` (standalone sidecars on a shared host,
/// and tests, which must not touch other processes on the machine).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Select {
    pub env: Option<String>,
}

impl Select {
    /// Parse `KEY=VALUE`.
    pub fn env(kv: &str) -> Option<Self> {
        kv.contains('=').then(|| Self { env: Some(kv.to_string()) })
    }

    pub fn matches_environ(&self, environ: &[u8]) -> bool {
        match &self.env {
            None => true,
            Some(kv) => environ.split(|&b| b == 0).any(|e| e == kv.as_bytes()),
        }
    }

    fn matches_pid(&self, proc_root: &Path, pid: u32) -> bool {
        self.env.is_none()
            || self.matches_environ(&std::fs::read(proc_root.join(format!("{pid}/environ"))).unwrap_or_default())
    }
}

/// Which `/proc` processes to watch in the given mode.
pub fn wanted(mode: api::Mode, p: &DotnetProcess) -> bool {
    match mode {
        api::Mode::Connect => true,
        // Diagnostic ports exist from .NET 5; older runtimes are only reachable by connecting.
        api::Mode::Listen => p.runtime_major().is_some_and(|m| m < 5),
    }
}

pub fn connect_target(p: &DotnetProcess) -> Target {
    Target {
        pid: p.pid,
        ns_pid: p.ns_pid,
        name: process_name(&p.command_line),
        command_line: p.command_line.clone(),
        runtime_version: p.runtime_version.clone(),
        process: Some(p.clone()),
        client: DiagnosticsClient::new(Endpoint::Socket(p.socket.clone())),
    }
}

/// After a watcher could not even start (a stale socket whose pid was reused, a runtime that
/// refuses us), wait this long before trying the same socket again.
const RETRY_AFTER: Duration = Duration::from_secs(30);

/// Scan `/proc` forever, starting a watcher for each new process.
pub async fn scan_loop(shared: Arc<Shared>, procfs: ProcFs, proc_root: PathBuf, select: Select, interval: Duration) {
    let mut watching: HashMap<PathBuf, JoinHandle<bool>> = HashMap::new();
    let mut failed: HashMap<PathBuf, Instant> = HashMap::new();
    loop {
        // Finished watchers (process gone) are released here, so their key can come back.
        let done: Vec<PathBuf> = watching.iter().filter(|(_, h)| h.is_finished()).map(|(k, _)| k.clone()).collect();
        for key in done {
            let started = watching.remove(&key).expect("listed").await.unwrap_or(false);
            if !started {
                failed.insert(key, Instant::now());
            }
        }
        failed.retain(|_, at| at.elapsed() < RETRY_AFTER);
        let mode = shared.policy.borrow().mode;
        let procs = tokio::task::spawn_blocking({
            let procfs = procfs.clone();
            move || procfs.dotnet_processes()
        })
        .await
        .unwrap_or_default();
        for p in procs {
            if !wanted(mode, &p)
                || watching.contains_key(&p.socket)
                || failed.contains_key(&p.socket)
                || !select.matches_pid(&proc_root, p.pid)
            {
                continue;
            }
            let handle = tokio::task::spawn_local(watch(shared.clone(), connect_target(&p)));
            watching.insert(p.socket.clone(), handle);
        }
        tokio::time::sleep(interval).await;
    }
}

/// Accept runtimes on the listen socket forever.
pub fn bind(socket: &Path) -> Result<ReverseServer, Error> {
    let server = ReverseServer::bind(socket)?;
    tracing::info!(socket = %socket.display(), "listening for runtimes (DOTNET_DiagnosticPorts)");
    Ok(server)
}

/// Accept runtimes on the listen socket until the server stops.
pub async fn listen_loop(shared: Arc<Shared>, mut server: ReverseServer, procfs: ProcFs, select: Select) {
    while let Some(rt) = server.next_runtime().await {
        tokio::task::spawn_local(adopt(shared.clone(), rt, procfs.clone(), select.clone()));
    }
}

async fn adopt(shared: Arc<Shared>, rt: Arc<ReverseRuntime>, procfs: ProcFs, select: Select) {
    let client = DiagnosticsClient::new(Endpoint::Reverse(rt.clone()));
    // Resume first: a runtime started with `,suspend` waits for this before running Main.
    // Resuming one that was not suspended is harmless.
    if let Err(e) = tokio::time::timeout(Duration::from_secs(5), client.resume_runtime())
        .await
        .unwrap_or_else(|_| Err(diag::Error::Timeout { what: "resuming the runtime".into(), seconds: 5.0 }))
    {
        tracing::warn!(pid = rt.pid(), error = %e, "could not resume the runtime");
    }
    let info = match client.process_info().await {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(pid = rt.pid(), error = %e, "runtime connected but did not describe itself");
            return;
        }
    };
    let ns_pid = info.pid as u32;
    if select.env.is_some() {
        let env = client.environment().await.unwrap_or_default();
        let environ: Vec<u8> = env.iter().flat_map(|(k, v)| format!("{k}={v}\0").into_bytes()).collect();
        if !select.matches_environ(&environ) {
            tracing::debug!(pid = ns_pid, "runtime does not match --select-env; not watched");
            return;
        }
    }
    // With a shared PID namespace, /proc shows the same process: use it for dump estimates
    // and the DAC. Matched by pid and command line, since the pid alone may name another
    // namespace's process.
    let seen = procfs.process(ns_pid).ok().filter(|p| p.command_line == info.command_line);
    let target = Target {
        pid: seen.as_ref().map(|p| p.pid).unwrap_or(ns_pid),
        ns_pid,
        name: info
            .entrypoint_assembly
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| process_name(&info.command_line)),
        command_line: info.command_line.clone(),
        runtime_version: info.runtime_version.clone().or_else(|| seen.as_ref().and_then(|p| p.runtime_version.clone())),
        process: seen,
        client,
    };
    watch(shared, target).await;
}

#[test]
fn select_env_matches_whole_entries() {
    let s = Select::env("APP=orders").unwrap();
    assert!(s.matches_environ(b"A=1\0APP=orders\0"));
    assert!(!s.matches_environ(b"APP=orders2\0"));
    assert!(Select::default().matches_environ(b""));
    assert!(Select::env("nokey").is_none());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc_with(version: &str) -> DotnetProcess {
        DotnetProcess {
            pid: 10,
            ns_pid: 1,
            socket: "/proc/10/root/tmp/dotnet-diagnostic-1-2-socket".into(),
            command_line: "dotnet /app/Orders.dll".into(),
            runtime_dir: None,
            runtime_version: Some(version.into()),
            tmpdir: "/tmp".into(),
            foreign_mount_ns: true,
        }
    }

    #[test]
    fn listen_mode_still_connects_to_runtimes_that_cannot_listen() {
        assert!(wanted(api::Mode::Connect, &proc_with("8.0.4")));
        assert!(!wanted(api::Mode::Listen, &proc_with("8.0.4")));
        assert!(wanted(api::Mode::Listen, &proc_with("3.1.23")));
        let t = connect_target(&proc_with("8.0.4"));
        assert_eq!((t.pid, t.ns_pid, t.name.as_str()), (10, 1, "Orders"));
    }
}
