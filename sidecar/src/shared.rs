//! What every part of the sidecar shares: metrics, the capture store, the policy, on-demand
//! requests, the report queue, the capture lock, live findings, the processes seen and the
//! runtimes whose startup triggers fired. It sits
//! below everything that uses it (watchers, captures, crash dumps, HTTP), so none of them has to
//! import another to reach it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use api::DumpPolicySpec;
use api::wire::Identity;
use tokio::sync::{broadcast, watch};

use crate::limits::CaptureLog;
use crate::metrics::Metrics;
use crate::policy::OnDemand;
use crate::report::Reporter;
use crate::storage::Storage;

/// Live findings kept for `/findings`, newest last.
const FINDINGS_KEPT: usize = 100;
/// Processes remembered for crash dumps; past this the memory starts over.
const PROCESSES_KEPT: usize = 256;

pub struct Shared {
    pub metrics: Metrics,
    pub storage: Storage,
    pub identity: Identity,
    pub policy: watch::Receiver<Arc<DumpPolicySpec>>,
    /// On-demand requests (file, SIGUSR1, operator); each says where it came from.
    pub on_demand: broadcast::Sender<OnDemand>,
    /// Operator mode: where finished captures go to be stored and reported.
    pub reporter: Option<Reporter>,
    /// Captures run one at a time in the whole sidecar: the byte budget is then checked against
    /// a store nobody else is writing to, and the node is never hit by two dumps at once.
    pub capture_lock: tokio::sync::Mutex<()>,
    findings: Mutex<VecDeque<serde_json::Value>>,
    epoch: Instant,
    /// Processes seen, for crash dumps that arrive after their process died.
    known: Mutex<HashMap<u32, KnownProcess>>,
    /// When this pod's captures started: the hourly cap and cooldown are per pod, kept on the
    /// capture volume across restarts (see [`crate::state`]).
    pub capture_log: Mutex<CaptureLog>,
    /// Runtimes whose `startup` triggers fired.
    pub startups: Startups,
}

/// A process we watched, as a crash dump (which names only the pid) needs it described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownProcess {
    pub name: String,
    pub runtime_version: Option<String>,
}

impl Shared {
    pub fn new(
        metrics: Metrics,
        storage: Storage,
        identity: Identity,
        policy: watch::Receiver<Arc<DumpPolicySpec>>,
        on_demand: broadcast::Sender<OnDemand>,
        reporter: Option<Reporter>,
    ) -> Self {
        let storage_root = storage.root().to_path_buf();
        Self {
            metrics,
            storage,
            identity,
            policy,
            on_demand,
            reporter,
            capture_lock: tokio::sync::Mutex::new(()),
            findings: Mutex::default(),
            epoch: Instant::now(),
            known: Mutex::default(),
            capture_log: Mutex::new(crate::state::load(storage_root.as_path(), unix_now())),
            startups: Default::default(),
        }
    }

    /// Admits a capture of a process under the pod's limits and, if admitted, records its start
    /// (persisted before the capture begins: a sidecar killed by it still remembers it).
    pub fn admit_capture(
        &self,
        limits: &api::Limits,
        in_progress: bool,
        estimate: u64,
        asker: crate::limits::Asker,
    ) -> Result<(), crate::limits::Refusal> {
        let now = unix_now();
        let mut log = lock(&self.capture_log);
        crate::limits::admit(limits, in_progress, &mut log, now, self.storage.used_bytes(), estimate, asker)?;
        log.record(now);
        crate::state::save(self.storage.root(), &log);
        Ok(())
    }

    /// Seconds since the sidecar started (the clock of triggers).
    pub fn now(&self) -> f64 {
        self.epoch.elapsed().as_secs_f64()
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<DumpPolicySpec> {
        self.policy.borrow().clone()
    }

    pub fn push_finding(&self, f: serde_json::Value) {
        let mut q = lock(&self.findings);
        q.push_back(f);
        while q.len() > FINDINGS_KEPT {
            q.pop_front();
        }
    }

    /// The live findings, oldest first.
    pub fn findings(&self) -> Vec<serde_json::Value> {
        lock(&self.findings).iter().cloned().collect()
    }

    /// Remember a watched process by its pid in the app's namespace (a crash dump's name).
    pub fn remember_process(&self, ns_pid: u32, process: KnownProcess) {
        let mut k = lock(&self.known);
        if k.len() >= PROCESSES_KEPT {
            k.clear();
        }
        k.insert(ns_pid, process);
    }

    pub fn known_process(&self, ns_pid: u32) -> Option<KnownProcess> {
        lock(&self.known).get(&ns_pid).cloned()
    }
}

/// Runtimes whose `startup` triggers already fired, by the runtime's instance cookie: a watcher
/// that restarts on the same runtime (a dropped session, a policy reload) does not fire again,
/// a restarted runtime (a new cookie, even with the same pid) does.
#[derive(Debug, Default)]
pub struct Startups(Mutex<HashSet<[u8; 16]>>);

/// Cookies remembered; past this the memory starts over (a pod does not restart its runtime
/// thousands of times, and a repeat firing is held by the limits anyway).
const STARTUPS_KEPT: usize = 1024;

impl Startups {
    /// `true` the first time `cookie` is seen.
    pub fn first_time(&self, cookie: [u8; 16]) -> bool {
        let mut seen = lock(&self.0);
        if seen.len() >= STARTUPS_KEPT {
            seen.clear();
        }
        seen.insert(cookie)
    }
}

/// Wall-clock seconds since the Unix epoch: the clock of the capture log, which outlives this
/// process.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// A std mutex whose holder panicked still holds consistent data here (each critical section is
/// one insert or copy), so the poison is ignored rather than spread.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
