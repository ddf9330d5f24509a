//! The policy file (standalone mode) and on-demand requests from outside.
//!
//! The file is polled for changes (mtime and size) rather than watched with inotify: a
//! ConfigMap volume updates by swapping a symlink, which inotify on the file itself misses,
//! and one `stat` a second costs nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use api::{DumpPolicySpec, TriggerKind};
use tokio::sync::{broadcast, watch};

use crate::Error;

/// A request to capture now: from a file, SIGUSR1, or the operator (a `DumpSnapshot`).
#[derive(Debug, Clone, PartialEq)]
pub struct OnDemand {
    /// Where it came from, for the log and the manifest.
    pub source: String,
    /// The `DumpSnapshot` the capture answers (operator requests).
    pub snapshot: Option<String>,
    /// Only this process (its pid as the sidecar or as the runtime sees it); all when `None`.
    pub pid: Option<u32>,
}

impl OnDemand {
    pub fn local(source: impl Into<String>) -> Self {
        Self { source: source.into(), snapshot: None, pid: None }
    }

    pub fn wants(&self, pid: u32, ns_pid: u32) -> bool {
        self.pid.is_none_or(|p| p == pid || p == ns_pid)
    }
}

pub fn load(path: &Path) -> Result<DumpPolicySpec, Error> {
    let text =
        std::fs::read_to_string(path).map_err(|source| Error::PolicyRead { path: path.to_path_buf(), source })?;
    DumpPolicySpec::from_yaml(&text).map_err(|source| Error::Policy { path: path.to_path_buf(), source })
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Reload the policy when the file changes. A broken edit is logged and the previous policy
/// stays in force: a typo must not switch the guard rails off.
pub async fn reload_loop(path: PathBuf, tx: watch::Sender<Arc<DumpPolicySpec>>, every: Duration) {
    let mut last = stamp(&path);
    loop {
        tokio::time::sleep(every).await;
        let now = stamp(&path);
        if now == last {
            continue;
        }
        last = now;
        match load(&path) {
            Ok(p) => {
                tracing::info!(path = %path.display(), triggers = p.triggers.len(), "policy reloaded");
                for field in needs_restart(&tx.borrow(), &p) {
                    tracing::warn!(field, "policy changed {field}: it takes effect when the sidecar restarts");
                }
                let _ = tx.send(Arc::new(p));
            }
            Err(e) => tracing::error!(error = %e, "policy change ignored; the previous policy stays in force"),
        }
    }
}

/// Fields a reload cannot apply in place: the mode decides whether we bind a socket or scan
/// `/proc`, and the storage root holds captures in flight.
pub fn needs_restart(old: &DumpPolicySpec, new: &DumpPolicySpec) -> Vec<&'static str> {
    let mut v = Vec::new();
    if old.mode != new.mode {
        v.push("mode");
    }
    if old.storage != new.storage {
        v.push("storage");
    }
    v
}

/// On-demand request files named by `onDemand` triggers: the file's appearance is a request;
/// we delete it so that the next one is a new request.
pub fn request_files(p: &DumpPolicySpec) -> Vec<PathBuf> {
    p.triggers
        .iter()
        .filter(|t| t.kind == TriggerKind::OnDemand)
        .filter_map(|t| t.file.as_ref().map(PathBuf::from))
        .collect()
}

pub async fn on_demand_loop(policy: watch::Receiver<Arc<DumpPolicySpec>>, tx: broadcast::Sender<OnDemand>) {
    let mut usr1 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()).ok();
    loop {
        let files = request_files(&policy.borrow());
        for f in files {
            if f.exists() && std::fs::remove_file(&f).is_ok() {
                tracing::info!(file = %f.display(), "on-demand capture requested");
                let _ = tx.send(OnDemand::local(format!("request file {}", f.display())));
            }
        }
        let tick = tokio::time::sleep(Duration::from_millis(250));
        match usr1.as_mut() {
            Some(sig) => {
                tokio::select! {
                    _ = sig.recv() => {
                        tracing::info!("on-demand capture requested (SIGUSR1)");
                        let _ = tx.send(OnDemand::local("SIGUSR1"));
                    }
                    _ = tick => {}
                }
            }
            None => tick.await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_changed_file_is_reloaded_and_a_broken_one_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.yaml");
        std::fs::write(&path, "triggers: [{type: deadlock}]\n").unwrap();
        let (tx, mut rx) = watch::channel(Arc::new(load(&path).unwrap()));
        tokio::spawn(reload_loop(path.clone(), tx, Duration::from_millis(20)));
        tokio::time::sleep(Duration::from_millis(50)).await;
        std::fs::write(&path, "triggers: [{type: gcHeapBytes, above: 1Gi}, {type: deadlock}]\n").unwrap();
        tokio::time::timeout(Duration::from_secs(5), rx.changed()).await.unwrap().unwrap();
        assert_eq!(rx.borrow_and_update().triggers.len(), 2);
        std::fs::write(&path, "limits: {cooldwon: 1s}\n").unwrap();
        assert!(tokio::time::timeout(Duration::from_millis(300), rx.changed()).await.is_err(), "no change");
        assert_eq!(rx.borrow().triggers.len(), 2, "the previous policy stays in force");
    }

    #[test]
    fn mode_and_storage_changes_wait_for_a_restart_and_the_rest_applies_in_place() {
        let p = |y: &str| DumpPolicySpec::from_yaml(y).unwrap();
        let old = p("mode: listen\n");
        assert!(needs_restart(&old, &p("mode: listen\ntriggers: [{type: deadlock}]\n")).is_empty());
        assert_eq!(needs_restart(&old, &p("mode: connect\n")), ["mode"]);
        assert_eq!(needs_restart(&old, &p("mode: listen\nstorage: {volume: {path: /elsewhere}}\n")), ["storage"]);
    }

    #[test]
    fn request_files_come_from_on_demand_triggers() {
        let p = DumpPolicySpec::from_yaml("triggers: [{type: onDemand, file: /d/now}, {type: onDemand}]").unwrap();
        assert_eq!(request_files(&p), vec![PathBuf::from("/d/now")]);
    }

    #[test]
    fn the_example_policy_is_valid() {
        let p = load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/policy.yaml")).unwrap();
        assert!(!p.triggers.is_empty());
    }
}
