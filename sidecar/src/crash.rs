//! `crash` triggers: the runtime's own crash dump, turned into a capture.
//!
//! A dying process cannot be asked for anything, so the runtime must write the dump itself:
//! the app runs with `DOTNET_DbgEnableMiniDump=1` and `DOTNET_DbgMiniDumpName=<storage>/.crash/core.%p`
//! (the operator's injector sets these; standalone, set them on the app container). The
//! folder is hidden, so nobody mistakes a dump being written for a capture. Once a dump has
//! stopped growing it is moved into a capture directory with a manifest, the crash report
//! beside it and the runtime's DAC, copied earlier while the process was alive (a dead
//! process's `/proc/<pid>/root` is gone).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use api::TriggerKind;
use api::wire::{Firing, ProcessEntry};

use crate::Error;
use crate::commit::{self, Job, Taken};
use crate::metrics::TriggerLabels;
use crate::shared::{KnownProcess, Shared};

pub use api::crash_dumps::CRASH_DIR;
const DAC_DIR: &str = ".dac";

/// Seconds a dump must stay the same size before it counts as complete.
const SETTLE: u32 = 3;

/// The environment an app needs for its crash dumps to land here.
pub use api::crash_dumps::app_environment;

/// Keep this runtime's DAC (once per version) for dumps written after the process died.
pub fn remember_dac(storage: &Path, version: &str, dac: &Path) {
    let dir = storage.join(DAC_DIR).join(version);
    let dst = dir.join("libmscordaccore.so");
    if dst.exists() || !dac.exists() {
        return;
    }
    let tmp = dir.join(".partial");
    let ok = std::fs::create_dir_all(&dir).is_ok()
        && std::fs::copy(dac, &tmp).is_ok()
        && std::fs::rename(&tmp, &dst).is_ok();
    if !ok {
        let _ = std::fs::remove_file(&tmp);
    }
}

pub async fn collect_loop(shared: Arc<Shared>) {
    let dir = shared.storage.root().join(CRASH_DIR);
    let mut sizes: HashMap<PathBuf, (u64, u32)> = HashMap::new();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let wanted = shared.policy().triggers.iter().any(|t| t.kind == TriggerKind::Crash);
        if wanted && !dir.exists() {
            // Created only for policies with a crash trigger; the runtime does not create it.
            let _ = std::fs::create_dir_all(&dir);
        }
        let cores: Vec<(PathBuf, u64)> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                e.file_name().to_string_lossy().starts_with("core.")
                    && !e.file_name().to_string_lossy().ends_with(".json")
            })
            .filter_map(|e| Some((e.path(), e.metadata().ok()?.len())))
            .collect();
        sizes.retain(|p, _| cores.iter().any(|(c, _)| c == p));
        for (path, len) in cores {
            let entry = sizes.entry(path.clone()).or_insert((len, 0));
            if entry.0 == len && len > 0 {
                entry.1 += 1;
            } else {
                *entry = (len, 0);
            }
            if entry.1 < SETTLE {
                continue;
            }
            sizes.remove(&path);
            if !wanted {
                tracing::info!(path = %path.display(), "crash dump ignored: the policy has no crash trigger");
                let _ = std::fs::remove_file(&path);
                continue;
            }
            adopt(&shared, &path).await;
        }
    }
}

/// Turn a complete crash dump into a capture, through the one capture commit (capture lock,
/// budget, retention, report). The dump already lies in the store, so it adds nothing to the
/// budget until it is over it.
async fn adopt(shared: &Shared, core: &Path) {
    let name = core.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let pid: u32 = api::crash_dumps::pid_of_dump_name(&name).unwrap_or(0);
    let known = shared.known_process(pid).unwrap_or(KnownProcess { name: "unknown".into(), runtime_version: None });
    tracing::warn!(pid, process = %known.name, "crash dump found");
    let trigger = TriggerLabels { pid: pid.to_string(), process: known.name.clone(), trigger: "crash".into() };
    shared.metrics.triggers.get_or_create(&trigger).inc();
    let job = Job {
        process: ProcessEntry {
            pid,
            ns_pid: pid,
            name: known.name.clone(),
            command_line: String::new(),
            runtime_version: known.runtime_version.clone(),
        },
        firing: Firing {
            index: None,
            trigger: TriggerKind::Crash,
            value: pid as f64,
            threshold: None,
            detail: format!("the runtime wrote {name} while crashing"),
        },
        kinds: vec!["crash"],
        dump_type: "runtime crash dump",
        estimate: 0,
        snapshot: None,
    };
    let dac = known.runtime_version.map(|v| shared.storage.root().join(DAC_DIR).join(v).join("libmscordaccore.so"));
    let core_owned = core.to_path_buf();
    let stored = commit::capture(shared, job, move |dir| async move { take(&core_owned, &dir, dac.as_deref()) }).await;
    if stored.is_none() {
        // Not kept (over budget, or it could not be moved): it must not be found again.
        let _ = std::fs::remove_file(core);
    }
}

/// Move the dump (and the runtime's crash report) into the capture, with the DAC kept for it.
fn take(core: &Path, dir: &Path, dac: Option<&Path>) -> Result<Taken, Error> {
    let name = core.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    std::fs::rename(core, dir.join(&name)).map_err(Error::io("moving the crash dump"))?;
    let report = core.with_file_name(format!("{name}.crashreport.json"));
    if report.exists() {
        std::fs::rename(&report, dir.join("crashreport.json")).map_err(Error::io("moving the crash report"))?;
    }
    if let Some(dac) = dac.filter(|d| d.exists()) {
        std::fs::copy(dac, dir.join("libmscordaccore.so")).map_err(Error::io("copying the DAC"))?;
    }
    Ok(Taken { results: vec![("crash", true)], ..Default::default() })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sidecar whose policy has a crash trigger and keeps one capture.
    fn shared(root: &Path) -> Arc<Shared> {
        let spec = api::DumpPolicySpec {
            triggers: vec![api::Trigger::new(TriggerKind::Crash)],
            retention: api::Retention { max_count: 1, max_age: api::Duration(Duration::from_secs(86400)) },
            ..Default::default()
        };
        let (policy_tx, policy) = tokio::sync::watch::channel(Arc::new(spec));
        std::mem::forget(policy_tx); // the policy never changes
        let (demand, _) = tokio::sync::broadcast::channel(1);
        let storage = crate::storage::Storage::open(root).unwrap();
        Arc::new(Shared::new(crate::metrics::Metrics::new(), storage, Default::default(), policy, demand, None))
    }

    fn crash_dump(root: &Path) -> PathBuf {
        std::fs::create_dir_all(root.join(CRASH_DIR)).unwrap();
        let core = root.join(CRASH_DIR).join("core.77");
        std::fs::write(&core, b"core").unwrap();
        core
    }

    #[tokio::test]
    async fn a_crash_capture_waits_for_the_capture_lock() {
        let root = tempfile::tempdir().unwrap();
        let shared = shared(root.path());
        let core = crash_dump(root.path());
        let held = shared.capture_lock.lock().await;
        let adopting = tokio::spawn({
            let (shared, core) = (shared.clone(), core.clone());
            async move { adopt(&shared, &core).await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            shared.storage.stored().is_empty(),
            "a crash capture was committed while another capture held the lock"
        );
        assert!(core.exists(), "the dump waits where the runtime wrote it");
        drop(held);
        adopting.await.unwrap();
        let stored = shared.storage.stored();
        assert_eq!(stored.len(), 1);
        assert!(stored[0].path.join("core.77").exists() && !core.exists());
    }

    #[tokio::test]
    async fn a_crash_capture_keeps_the_retention() {
        let root = tempfile::tempdir().unwrap();
        let shared = shared(root.path());
        let earlier = shared.storage.begin("earlier").unwrap();
        std::fs::write(earlier.dir().join("stacks.json"), b"[]").unwrap();
        earlier.commit(&serde_json::json!({})).unwrap();
        let core = crash_dump(root.path());
        adopt(&shared, &core).await;
        let stored = shared.storage.stored();
        assert_eq!(stored.len(), 1, "retention.maxCount 1 keeps one capture: {stored:?}");
        assert!(stored[0].path.join("core.77").exists(), "the newest, the crash dump, is kept");
    }
}
