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
use diag::discovery::{DotnetProcess, ProcFs, start_time};
use diag::reverse::{ReverseRuntime, ReverseServer};
use tokio::task::JoinHandle;

use crate::Error;
use crate::capture::{Target, process_name};
use crate::shared::Shared;
use crate::watcher::watch;

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
/// refuses us), wait this long before trying the same process again.
const RETRY_AFTER: Duration = Duration::from_secs(30);

/// A process that showed no diagnostics socket this long after we first saw it is not .NET
/// (a runtime creates its socket within milliseconds of starting): stop looking at it.
const GIVE_UP_AFTER: Duration = Duration::from_secs(10);

/// A process across pid reuse: pid + start time (field 22 of `/proc/<pid>/stat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProcKey {
    pub pid: u32,
    pub start: u64,
}

enum Seen {
    Watching(JoinHandle<bool>),
    /// Not ours: another `--select-env`, or not .NET.
    Skip,
    /// No socket yet; first seen then.
    Pending(Instant),
    Failed(Instant),
}

enum Probe {
    Skip,
    NotYet,
    Dotnet(Box<DotnetProcess>),
}

/// Every process in `/proc` with its start time. Cheap: one small read per process, so a
/// scan every second costs next to nothing even on a busy node; the expensive look (environ,
/// maps, the socket folder) happens once per new process.
pub fn list_processes(proc_root: &Path) -> Vec<ProcKey> {
    let me = std::process::id();
    std::fs::read_dir(proc_root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(proc_root.join(format!("{pid}/stat"))).ok()?;
            Some(ProcKey { pid, start: start_time(&stat)? })
        })
        .collect()
}

fn probe(procfs: &ProcFs, proc_root: &Path, select: &Select, mode: api::Mode, key: ProcKey) -> Probe {
    if !select.matches_pid(proc_root, key.pid) {
        return Probe::Skip;
    }
    match procfs.process(key.pid) {
        Ok(p) if wanted(mode, &p) => Probe::Dotnet(Box::new(p)),
        Ok(_) => Probe::Skip,
        Err(_) => Probe::NotYet,
    }
}

/// Scan `/proc` forever, starting a watcher for each new process.
pub async fn scan_loop(shared: Arc<Shared>, procfs: ProcFs, proc_root: PathBuf, select: Select, interval: Duration) {
    let mut seen: HashMap<ProcKey, Seen> = HashMap::new();
    loop {
        let mode = shared.policy.borrow().mode;
        let root = proc_root.clone();
        let keys = tokio::task::spawn_blocking(move || list_processes(&root)).await.unwrap_or_default();
        let alive: std::collections::HashSet<ProcKey> = keys.iter().copied().collect();
        // Forget processes that are gone, so the map never outgrows the node's process table.
        seen.retain(|k, _| alive.contains(k));
        let mut to_probe = Vec::new();
        for key in keys {
            match seen.get_mut(&key) {
                None => to_probe.push(key),
                Some(Seen::Skip) => {}
                Some(entry @ Seen::Pending(_)) if matches!(*entry, Seen::Pending(first) if first.elapsed() > GIVE_UP_AFTER) => {
                    *entry = Seen::Skip
                }
                Some(Seen::Pending(_)) => to_probe.push(key),
                Some(Seen::Failed(at)) if at.elapsed() > RETRY_AFTER => to_probe.push(key),
                Some(Seen::Failed(_)) => {}
                Some(Seen::Watching(h)) if h.is_finished() => {
                    // A watcher that ended on a live process: it could not start, or the
                    // runtime closed the session. Try again later, not in a tight loop.
                    let Some(Seen::Watching(h)) = seen.remove(&key) else { unreachable!() };
                    let _ = h.await;
                    seen.insert(key, Seen::Failed(Instant::now()));
                }
                Some(Seen::Watching(_)) => {}
            }
        }
        if !to_probe.is_empty() {
            let (procfs, root, select) = (procfs.clone(), proc_root.clone(), select.clone());
            let probed = tokio::task::spawn_blocking(move || {
                to_probe.into_iter().map(|k| (k, probe(&procfs, &root, &select, mode, k))).collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
            for (key, result) in probed {
                let next = match result {
                    Probe::Skip => Seen::Skip,
                    Probe::NotYet => match seen.get(&key) {
                        Some(Seen::Pending(first)) => Seen::Pending(*first),
                        _ => Seen::Pending(Instant::now()),
                    },
                    Probe::Dotnet(p) => {
                        Seen::Watching(tokio::task::spawn_local(watch(shared.clone(), connect_target(&p))))
                    }
                };
                seen.insert(key, next);
            }
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
fn never_watches_itself() {
    let me = list_processes(Path::new("/proc"));
    assert!(me.iter().all(|k| k.pid != std::process::id()), "never watches itself");
    assert!(me.iter().any(|k| k.pid == 1));
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
