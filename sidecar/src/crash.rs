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
use std::time::{Duration, SystemTime};

use api::TriggerKind;

use crate::capture::{Manifest, ProcessEntry};
use crate::metrics::{CaptureLabels, TriggerLabels};
use crate::storage::rfc3339;
use crate::triggers::Firing;
use crate::watcher::Shared;

pub const CRASH_DIR: &str = ".crash";
const DAC_DIR: &str = ".dac";

/// Seconds a dump must stay the same size before it counts as complete.
const SETTLE: u32 = 3;

/// The environment an app needs for its crash dumps to land here.
pub fn app_environment(storage: &Path) -> Vec<(String, String)> {
    vec![
        ("DOTNET_DbgEnableMiniDump".into(), "1".into()),
        ("DOTNET_DbgMiniDumpType".into(), "2".into()),
        ("DOTNET_DbgMiniDumpName".into(), storage.join(CRASH_DIR).join("core.%p").display().to_string()),
        ("DOTNET_EnableCrashReport".into(), "1".into()),
    ]
}

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

/// Pid → (process name, runtime version) of processes we watched: a crash dump names only
/// the pid (in the app's namespace). Kept after the process ends (that is when its dump
/// arrives), and bounded by [`remember_process`].
pub type Known = std::sync::Mutex<HashMap<u32, (String, Option<String>)>>;

pub fn remember_process(known: &Known, ns_pid: u32, name: &str, version: Option<String>) {
    let mut k = known.lock().expect("poisoned");
    if k.len() >= 256 {
        k.clear();
    }
    k.insert(ns_pid, (name.to_string(), version));
}

pub async fn collect_loop(shared: Arc<Shared>) {
    let dir = shared.storage.root().join(CRASH_DIR);
    let mut sizes: HashMap<PathBuf, (u64, u32)> = HashMap::new();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let wanted = shared.policy.borrow().triggers.iter().any(|t| t.kind == TriggerKind::Crash);
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
            adopt(&shared, &path);
        }
    }
}

fn adopt(shared: &Shared, core: &Path) {
    let name = core.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let pid: u32 = name.trim_start_matches("core.").parse().unwrap_or(0);
    let (process, version) =
        shared.known.lock().expect("poisoned").get(&pid).cloned().unwrap_or(("unknown".into(), None));
    let firing = Firing {
        index: None,
        trigger: "crash",
        value: pid as f64,
        threshold: None,
        detail: format!("the runtime wrote {name} while crashing"),
    };
    tracing::warn!(pid, process = %process, "crash dump found");
    shared
        .metrics
        .triggers
        .get_or_create(&TriggerLabels { pid: pid.to_string(), process: process.clone(), trigger: "crash".into() })
        .inc();
    let now = SystemTime::now();
    let stamp: String = rfc3339(now).chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    let id = format!("{stamp}-{process}-{pid}-crash");
    let result = (|| {
        let pending = shared.storage.begin(&id)?;
        let io = |what: &str| crate::Error::io(what.to_string());
        std::fs::rename(core, pending.dir().join(&name)).map_err(io("moving the crash dump"))?;
        let report = core.with_file_name(format!("{name}.crashreport.json"));
        if report.exists() {
            std::fs::rename(&report, pending.dir().join("crashreport.json")).map_err(io("moving the crash report"))?;
        }
        if let Some(v) = &version {
            let dac = shared.storage.root().join(DAC_DIR).join(v).join("libmscordaccore.so");
            if dac.exists() {
                std::fs::copy(&dac, pending.dir().join("libmscordaccore.so")).map_err(io("copying the DAC"))?;
            }
        }
        let files = pending.files()?;
        let manifest = Manifest {
            version: 1,
            id: id.clone(),
            created: rfc3339(now),
            identity: shared.identity.clone(),
            process: ProcessEntry {
                pid,
                ns_pid: pid,
                name: process.clone(),
                command_line: String::new(),
                runtime_version: version.clone(),
            },
            trigger: firing,
            dump_type: "runtime crash dump",
            files,
            failures: Vec::new(),
            finding: None,
            seconds: 0.0,
        };
        pending.commit(&manifest)
    })();
    let max = shared.policy.borrow().limits.max_bytes.value() as u64;
    let result = match result {
        Ok(dir) if shared.storage.used_bytes() > max => {
            let _ = std::fs::remove_dir_all(&dir);
            tracing::warn!(pid, "crash dump dropped: it does not fit in limits.maxBytes");
            "over_budget"
        }
        Ok(dir) => {
            tracing::info!(dir = %dir.display(), "crash dump stored");
            if let Some(r) = &shared.reporter {
                let manifest =
                    std::fs::read(dir.join("manifest.json")).ok().and_then(|b| serde_json::from_slice(&b).ok());
                let manifest = manifest.unwrap_or_default();
                r.submit(shared, crate::upload::Report { dir, manifest, snapshot: None, findings: None });
            }
            "success"
        }
        Err(e) => {
            tracing::warn!(pid, error = %e, "could not store the crash dump");
            let _ = std::fs::remove_file(core);
            "failure"
        }
    };
    shared.metrics.captures.get_or_create(&CaptureLabels { kind: "crash".into(), result: result.into() }).inc();
}
