//! The operator's custom resources, all `dumpwatch.dev/v1alpha1`: `DumpPolicy` (derived on
//! [`DumpPolicySpec`](crate::DumpPolicySpec)) and `DumpSnapshot`, namespaced, with status
//! subresources, and `DumpStore` (cluster scoped, an administrator's object storage).
//! `cargo run -p api --bin crdgen` writes their CRDs to `crds/`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{CaptureKind, TriggerKind};

mod findings;
mod store;

pub use store::{DumpStore, DumpStoreSpec, StoreS3, selector_matches};

/// API group of every dumpwatch resource.
pub const GROUP: &str = "dumpwatch.dev";
/// API version of every dumpwatch resource.
pub const VERSION: &str = "v1alpha1";

/// What the operator observed for a `DumpPolicy`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DumpPolicyStatus {
    /// Running pods the policy's selector matches.
    #[serde(default)]
    pub matched_pods: u32,
    /// Matched pods that carry the sidecar.
    #[serde(default)]
    pub injected_pods: u32,
    /// When the latest capture of this policy was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_capture: Option<Time>,
    /// `Ready`, `Degraded`, ... (standard Kubernetes conditions).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// What was captured, from which process, why, and where the artifacts are. Created by the
/// operator when a sidecar reports a capture, or by a user (without artifacts) to request one.
// clippy reads the repeated `type_ = ...` of the printcolumn(...) arguments as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, CustomResource)]
#[kube(
    group = "dumpwatch.dev",
    version = "v1alpha1",
    kind = "DumpSnapshot",
    doc = "One capture of one .NET process, its artifacts, and what their analysis found.",
    namespaced,
    shortname = "dsnap",
    status = "DumpSnapshotStatus",
    printcolumn(name = "Pod", type_ = "string", json_path = ".spec.pod"),
    printcolumn(name = "Trigger", type_ = "string", json_path = ".spec.trigger"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Findings", type_ = "string", json_path = ".status.findings.summary"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct DumpSnapshotSpec {
    /// The `DumpPolicy` (same namespace) under which the capture was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Pod name (same namespace).
    pub pod: String,
    /// Container whose process was captured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Process id, as the sidecar sees it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// .NET runtime version of the process (e.g. 8.0.4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_version: Option<String>,
    /// Why the capture was taken.
    pub trigger: TriggerKind,
    /// The value that fired the trigger, in the trigger's unit (e.g. 612Mi, 93%); for an
    /// `exception` trigger, the count, the type filter and the last exception.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<String>,
    /// What was captured; empty on a request that has not been served yet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<Artifact>,
    /// Where the `file://` artifacts live: the claim and the path it is mounted at (set by the
    /// operator from the policy's `storage.volume`, so that analysis and deletion still find
    /// them once the policy is gone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<SnapshotVolume>,
    /// The `DumpStore` holding the `s3://` artifacts (set by the operator from the policy's
    /// `storage.s3.storeRef`, so that analysis and deletion still find it once the policy is gone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
}

/// A PersistentVolumeClaim (same namespace) and the path its artifacts' URIs are under.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotVolume {
    pub claim_name: String,
    pub path: String,
}

/// One stored file of a capture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Artifact {
    pub kind: CaptureKind,
    /// Where it is stored: `s3://bucket/key` or `file:///path` on the volume.
    pub uri: String,
    /// Size in bytes, as stored.
    pub size: u64,
    /// SHA-256 of the stored bytes, lowercase hex.
    #[schemars(regex(pattern = "^[0-9a-f]{64}$"))]
    pub sha256: String,
}

/// `Requested → Capturing → Uploaded → Analyzing → Analyzed | Failed`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SnapshotPhase {
    #[default]
    Requested,
    Capturing,
    Uploaded,
    Analyzing,
    Analyzed,
    Failed,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DumpSnapshotStatus {
    #[serde(default)]
    pub phase: SnapshotPhase,
    /// Why the snapshot is in this phase (mostly for `Failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// What the analysis found: counts, and the deadlocks and leak suspects themselves (capped,
    /// so the object stays far below etcd's size limit; the whole document is an artifact).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub findings: Option<FindingsSummary>,
    /// The analysis Job, once the controller created it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// When the snapshot entered `Analyzing` (the Job's deadline counts from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis_started: Option<Time>,
    /// `Published` (True once the Events for this snapshot's outcome were sent: sent once).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FindingsSummary {
    /// Wait-for cycles among threads.
    #[serde(default)]
    pub deadlocks: u32,
    /// Threads blocked behind a cycle without being on it.
    #[serde(default)]
    pub victims: u32,
    /// Types whose instances keep growing, or hold most of the heap.
    #[serde(default)]
    pub leak_suspects: u32,
    /// The type holding the most bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_type: Option<String>,
    /// One line for `kubectl get dsnap` (e.g. "1 deadlock (2 threads), 1 leak suspect").
    #[serde(default)]
    pub summary: String,
    /// The first [`MAX_LISTED`] deadlocks, in the analysis' order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deadlock_cycles: Vec<DeadlockCycle>,
    /// The first [`MAX_LISTED`] leak suspects, surest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suspects: Vec<LeakSuspect>,
    /// The first [`MAX_LISTED`] hangs that are not lock cycles (thread-pool starvation, threads
    /// blocked at one place).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hangs: Vec<HangSummary>,
    /// Why objects pile up in the finalizer queue, when they do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finalization_backlog: Option<String>,
    /// Why the process crashed, for a dump the runtime wrote while crashing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crash: Option<CrashSummary>,
}

/// The unhandled exception that ended the process, in words.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CrashSummary {
    /// The exception's type (`Namespace.Type`).
    pub exception_type: String,
    /// OS id of the thread that threw it.
    pub os_tid: u64,
    /// Its innermost managed frames.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top_frames: Vec<String>,
    /// The analysis' sentence ("the process crashed: unhandled X on thread 14 in Y").
    pub reason: String,
}

/// A hang of the findings document, in words.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HangSummary {
    /// `thread_pool_starvation` or `blocked_threads`.
    pub kind: String,
    /// Threads blocked.
    pub threads: u32,
    /// The analysis' sentence ("8 thread-pool threads wait in `OrderService.Get` → `Task.Result` …").
    pub reason: String,
}

/// Longest reason sentence kept (the Events API takes 1 kB per note).
pub const MAX_REASON: usize = 900;

/// How many deadlocks, suspects, threads per cycle, frames and path elements the status keeps.
pub const MAX_LISTED: usize = 5;
/// Frames kept per thread (innermost managed frames, runtime helper frames skipped).
pub const MAX_FRAMES: usize = 4;
/// Longest string (type name, frame) kept; longer ones end in `…`.
pub const MAX_TEXT: usize = 256;

/// One wait-for cycle: each thread waits for a lock held by the next, the last for the first's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadlockCycle {
    pub threads: Vec<DeadlockedThread>,
    /// Threads queued behind the cycle.
    #[serde(default)]
    pub victims: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadlockedThread {
    /// Kernel thread id.
    pub os_tid: u64,
    /// `Thread.ManagedThreadId`, when the runtime knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_id: Option<u64>,
    /// Type of the object whose lock it waits for (e.g. `System.Object`).
    pub waits_for_type: String,
    /// The runtime's sync block address of that lock.
    pub lock_id: u64,
    /// OS thread id of the lock's holder (the next thread of the cycle).
    pub held_by_os_tid: u64,
    /// Innermost managed frames.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top_frames: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeakSuspect {
    pub type_name: String,
    /// Reachable instances.
    pub instances: u64,
    /// Bytes freed if they all went away.
    pub retained_bytes: u64,
    /// `retainedBytes` as a percentage of the heap.
    pub heap_percent: u32,
    /// Root of the dominant path (`static T.f`, `[strong handle]`, ...).
    pub root: String,
    /// Type names from the rooted object to the suspect type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub path: Vec<String>,
    /// Why it is a suspect, naming its holder (the analysis' sentence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The CRDs as YAML documents, `(file name, text)`, in the order `crdgen` writes them.
pub fn crd_yaml() -> Vec<(&'static str, String)> {
    use kube::CustomResourceExt;
    let header = "# Generated by `cargo run -p api --bin crdgen` from crates/api: do not edit.\n";
    [
        ("dumppolicy.yaml", crate::DumpPolicy::crd()),
        ("dumpsnapshot.yaml", DumpSnapshot::crd()),
        ("dumpstore.yaml", DumpStore::crd()),
    ]
    .into_iter()
    .map(|(name, crd)| (name, format!("{header}{}", serde_saphyr::to_string(&crd).expect("a CRD serializes to YAML"))))
    .collect()
}
