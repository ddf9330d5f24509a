//! The `DumpPolicy` spec. Field names are camelCase (Kubernetes convention). A policy written by
//! hand ([`DumpPolicySpec::from_yaml`]) refuses unknown fields, so that a typo (`cooldwon`) is an
//! error, not a silently ignored limit; the types themselves ignore them, so that an operator or
//! sidecar reads objects of a newer version (whose CRDs add defaulted fields) during an upgrade or
//! a rollback.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Trigger;
use crate::units::{Duration, Quantity};

/// What a DumpPolicy asks for: which pods, when to capture, what, with which limits, where to
/// store it, and whether to analyze it.
// clippy reads the repeated `type_ = ...` of the printcolumn(...) arguments as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, kube::CustomResource)]
#[kube(
    group = "dumpwatch.dev",
    version = "v1alpha1",
    kind = "DumpPolicy",
    doc = "Captures and analyzes dumps of the .NET processes in the pods it selects.",
    namespaced,
    shortname = "dpol",
    status = "crate::DumpPolicyStatus",
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(name = "Matched", type_ = "integer", json_path = ".status.matchedPods"),
    printcolumn(name = "Injected", type_ = "integer", json_path = ".status.injectedPods"),
    printcolumn(name = "Last Capture", type_ = "date", json_path = ".status.lastCapture"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase", default)]
// validate.rs says the same in Rust, for the standalone sidecar.
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": cooldown_rule(),
    "message": "limits.cooldown must be at least counterInterval: a trigger can fire at most once per counter interval (e.g. counterInterval: 1s, limits: {cooldown: 10m})"
}]))]
pub struct DumpPolicySpec {
    /// Which pods the policy applies to (operator only; the standalone sidecar ignores it).
    pub selector: Selector,
    /// Container names whose .NET processes are watched; empty means every container.
    pub containers: Vec<String>,
    /// How the sidecar reaches the runtimes.
    pub mode: Mode,
    /// How often the runtime publishes its counters; triggers cannot react faster.
    pub counter_interval: Duration,
    /// When to capture (at most 64: bounds the API server's cost of the per-trigger rules).
    #[schemars(length(max = 64))]
    pub triggers: Vec<Trigger>,
    /// What a capture contains (a trigger may override it).
    pub capture: Capture,
    /// What protects the patient: rate limits, cooldown, byte budget, disk reserve.
    pub limits: Limits,
    pub storage: Storage,
    pub retention: Retention,
    pub analysis: Analysis,
    /// Periodic heap snapshots and their growth verdict: every `every`, a heap snapshot of each
    /// process (a per-type histogram, not a dump); a type that grows across the last three
    /// intervals while the rest of the heap stays steady becomes a `MemoryLeakSuspected`
    /// finding. Off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heap_snapshots: Option<HeapSnapshots>,
}

/// `cooldown >= counterInterval`, in CEL. Both are policy duration strings (`500ms`, `10s`, `5m`,
/// `1h`, `1d`, bare seconds), which CEL's `duration()` does not read (no `d`, no bare number), so
/// each is turned into seconds by its suffix. Plain string and number functions only: the
/// apiserver's cost estimate stays bounded by the fields' `maxLength`.
fn cooldown_rule() -> String {
    let cooldown = "self.limits.cooldown";
    let interval = "self.counterInterval";
    format!(
        "!has(self.limits) || !has({cooldown}) || !has({interval}) || {} >= {}",
        cel_seconds(cooldown),
        cel_seconds(interval)
    )
}

/// A CEL expression: the seconds, as a double, of the duration string `field`.
fn cel_seconds(field: &str) -> String {
    let number = |cut: usize| format!("double({field}.substring(0, {field}.size() - {cut}))");
    format!(
        "({field}.endsWith('ms') ? {} / 1000.0 : {field}.endsWith('s') ? {} : {field}.endsWith('m') ? {} * 60.0 : \
         {field}.endsWith('h') ? {} * 3600.0 : {field}.endsWith('d') ? {} * 86400.0 : double({field}))",
        number(2),
        number(1),
        number(1),
        number(1),
        number(1)
    )
}

impl Default for DumpPolicySpec {
    fn default() -> Self {
        Self {
            selector: Selector::default(),
            containers: Vec::new(),
            mode: Mode::default(),
            counter_interval: Duration::from_secs(1),
            triggers: Vec::new(),
            capture: Capture::default(),
            limits: Limits::default(),
            storage: Storage::default(),
            retention: Retention::default(),
            analysis: Analysis::default(),
            heap_snapshots: None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Selector {
    pub match_labels: BTreeMap<String, String>,
}

/// `listen`: runtimes connect to the sidecar's socket (`DOTNET_DiagnosticPorts`, .NET 5+, no
/// privilege needed); runtimes that never connect (.NET Core 3.1) are still reached through the
/// shared PID namespace when one exists. `connect`: the sidecar finds every runtime's socket
/// through `/proc` (shared PID namespace; same UID or `CAP_SYS_PTRACE`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Mode {
    #[default]
    Listen,
    Connect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum CaptureKind {
    /// A core dump written by the runtime, with the matching DAC beside it.
    Dump,
    /// A heap snapshot: the raw nettrace stream and a per-type histogram.
    Gcdump,
    /// Every thread's managed stack, symbolized.
    Stacks,
    /// A CPU trace of `capture.traceDuration` (SampleProfiler): the raw `trace.nettrace`, a
    /// speedscope profile and the methods by inclusive samples (`trace-summary.json`).
    Trace,
    /// The last `capture.exceptionsLast` exceptions the process threw before the capture, each
    /// with its time, type, message, HRESULT, thread and named stack (`exceptions.json`). Kept
    /// from the moment the sidecar started watching the process.
    Exceptions,
}

impl CaptureKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Dump => "dump",
            Self::Gcdump => "gcdump",
            Self::Stacks => "stacks",
            Self::Trace => "trace",
            Self::Exceptions => "exceptions",
        }
    }
}

/// Periodic heap snapshots (`heapSnapshots: {every: 10m, keep: 6}`). Each is the runtime's
/// heap snapshot (what `dotnet-gcdump` takes: one induced full blocking GC that describes every
/// live object), reduced at once to a per-type histogram and, while some type keeps rising, to
/// the retention path of each rising type; the snapshot itself is not kept. The sidecar keeps the
/// last `keep` summaries per process, publishes the growth of the top `topTypes` growing types
/// (`dotnet_heap_type_growth_bytes`, `dotnet_heap_type_growth_objects`) and, when a type grew in
/// each of the last 3 intervals while the rest of the heap stayed steady, reports a
/// `MemoryLeakSuspected` finding with its growth rate and holder (a snapshot with trigger
/// `heapGrowth`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": heap_snapshots_every_rule(),
    "message": "heapSnapshots.every must be at least 1s: each heap snapshot runs a full blocking GC in the app (e.g. every: 10m)"
}]))]
pub struct HeapSnapshots {
    /// How often: each snapshot pauses the app for one full GC (a few ms for a small heap, about
    /// a second per million objects), so minutes, not seconds, in production. Default 10m.
    pub every: Duration,
    /// Snapshot summaries kept per process (4 to 100, default 6): the verdict needs 4 (three
    /// intervals), the growth metrics span the oldest to the newest kept.
    #[schemars(range(min = 4, max = 100))]
    pub keep: u32,
    /// How many growing types `/metrics` publishes per process (1 to 50, default 10).
    #[schemars(range(min = 1, max = 50))]
    pub top_types: u32,
}

impl Default for HeapSnapshots {
    fn default() -> Self {
        Self { every: Duration::from_secs(600), keep: 6, top_types: 10 }
    }
}

/// `heapSnapshots.every >= 1s`, in CEL (see [`cel_seconds`]).
fn heap_snapshots_every_rule() -> String {
    format!("!has(self.every) || {} >= 1.0", cel_seconds("self.every"))
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum DumpType {
    Mini,
    /// What the analyzer needs for heap and lock analysis.
    #[default]
    Heap,
    Triage,
    Full,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Capture {
    /// Capture kinds taken when a trigger fires without its own list.
    pub kinds: Vec<CaptureKind>,
    pub dump_type: DumpType,
    /// How many types of the latest heap snapshot `/metrics` publishes.
    pub top_types: u32,
    /// How long a `trace` capture samples (1s to 5m, default 10s); the app pays the sampler's
    /// overhead meanwhile.
    pub trace_duration: Duration,
    /// How many of the latest exceptions an `exceptions` capture holds (1 to 10000, default 100);
    /// the sidecar keeps that many per process while a policy names `exceptions`.
    #[schemars(range(min = 1, max = 10000))]
    pub exceptions_last: u32,
}

impl Default for Capture {
    fn default() -> Self {
        Self {
            kinds: vec![CaptureKind::Dump],
            dump_type: DumpType::Heap,
            top_types: 10,
            trace_duration: Duration::from_secs(10),
            exceptions_last: 100,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Limits {
    /// Captures per pod per rolling hour (all its processes together; kept on the capture volume,
    /// so a restarted runtime or sidecar does not start a fresh hour).
    pub max_per_hour: u32,
    /// Minimum time between two triggered captures in the pod (a person's request is not held
    /// back by it).
    pub cooldown: Duration,
    /// Budget for all captures kept in storage; a capture that would exceed it is refused.
    pub max_bytes: Quantity,
    /// Free space that must remain on the volume after a dump.
    pub min_free_disk: Quantity,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_per_hour: 4,
            cooldown: Duration::from_secs(600),
            max_bytes: Quantity(8.0 * 1024.0 * 1024.0 * 1024.0),
            min_free_disk: Quantity(1024.0 * 1024.0 * 1024.0),
        }
    }
}

/// Exactly one of `volume` or `s3`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
// No container-level `default`: it would fill `volume` in when only `s3` is written.
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.volume) != has(self.s3)",
    "message": "storage needs exactly one of volume (e.g. volume: {path: /dumpwatch}) or s3 (a DumpStore: s3: {storeRef: <name>})"
}]))]
pub struct Storage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeStorage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Storage>,
}

impl Default for Storage {
    fn default() -> Self {
        Self { volume: Some(VolumeStorage::default()), s3: None }
    }
}

/// The one storage a policy names. The CRD keeps two optional fields (`volume`, `s3`: the shape
/// users write, held to exactly one by a CEL rule and [`DumpPolicySpec::validate`]); code decides
/// on this instead, so that no caller has to assume which of the two is set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StorageTarget<'a> {
    Volume(&'a VolumeStorage),
    S3(&'a S3Storage),
}

impl Storage {
    /// `s3` when set (a validated policy has exactly one), else `volume`, else the default volume.
    pub fn target(&self) -> StorageTarget<'_> {
        static DEFAULT_VOLUME: std::sync::LazyLock<VolumeStorage> = std::sync::LazyLock::new(VolumeStorage::default);
        match (&self.s3, &self.volume) {
            (Some(s3), _) => StorageTarget::S3(s3),
            (None, Some(v)) => StorageTarget::Volume(v),
            (None, None) => StorageTarget::Volume(&DEFAULT_VOLUME),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct VolumeStorage {
    /// Directory where finished captures are kept, as the sidecar sees it.
    pub path: String,
    /// A PersistentVolumeClaim in the policy's namespace (ReadWriteMany when the selected pods run
    /// on several nodes). With it, the operator mounts the claim at `path` in the sidecar only,
    /// captures are stored there as `<namespace>/<pod>/<capture>/<file>.zst`, analysis Jobs mount
    /// it read-only, and deleting a DumpSnapshot deletes its files (a short Job mounts the claim).
    /// Without it (operator mode), captures stay in the pod's emptyDir: not analyzed, and gone
    /// with the pod. The standalone sidecar ignores it. With a claim, `path` must lie outside the
    /// sidecar's own capture mount (the chart's `sidecar.mountPath`, `/dumpwatch` by default),
    /// e.g. `path: /dumps`; otherwise pods are not injected and the policy says why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"))]
    pub claim_name: Option<String>,
}

impl Default for VolumeStorage {
    fn default() -> Self {
        Self { path: "/dumpwatch".into(), claim_name: None }
    }
}

/// Object storage: a `DumpStore` (cluster scoped, an administrator's) named by `storeRef`. A policy
/// cannot name an endpoint or a Secret itself: those would let any tenant borrow the credentials
/// in the operator's namespace or send the operator's requests anywhere.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(self.endpoint) && !has(self.region) && !has(self.bucket) && !has(self.prefix) && !has(self.secretRef)",
        "message": S3_MOVED
    },
    {
        "rule": "has(self.storeRef) && self.storeRef != ''",
        "message": "storage.s3.storeRef is required: the name of a DumpStore (kubectl get dumpstores), e.g. s3: {storeRef: team-dumps}"
    }
]))]
pub struct S3Storage {
    /// Name of the `DumpStore` to store in (`kubectl get dumpstores`); the store must allow this
    /// policy's namespace.
    #[serde(skip_serializing_if = "String::is_empty")]
    #[schemars(regex(pattern = "^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"), length(max = 253))]
    pub store_ref: String,
    /// No longer accepted: the DumpStore names the endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// No longer accepted: the DumpStore names the region.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// No longer accepted: the DumpStore names the bucket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// No longer accepted: the DumpStore names the key prefix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// No longer accepted: the DumpStore names the credentials.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<String>,
}

/// What the API server and the operator say to a policy that still names its own S3 settings.
pub const S3_MOVED: &str = "storage.s3 can no longer name an endpoint, region, bucket, prefix or secretRef: \
     a cluster admin creates a DumpStore with them (kubectl get dumpstores lists the stores), \
     and the policy names it: storage: {s3: {storeRef: <store name>}}";

impl S3Storage {
    /// Storage in the `DumpStore` named `store`.
    pub fn store(store: impl Into<String>) -> Self {
        Self { store_ref: store.into(), ..Default::default() }
    }

    /// Whether it still names its own endpoint, bucket or Secret (refused).
    pub fn names_own_settings(&self) -> bool {
        self.endpoint.is_some()
            || self.region.is_some()
            || self.bucket.is_some()
            || self.prefix.is_some()
            || self.secret_ref.is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Retention {
    /// Captures kept (newest first).
    pub max_count: u32,
    /// Captures older than this are deleted.
    pub max_age: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self { max_count: 10, max_age: Duration::from_secs(7 * 86400) }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Analysis {
    pub enabled: bool,
    /// Deadline of the analysis Job.
    pub deadline: Duration,
    /// Memory limit of the analysis Job.
    pub memory: Quantity,
}

impl Default for Analysis {
    fn default() -> Self {
        Self { enabled: true, deadline: Duration::from_secs(900), memory: Quantity(2.0 * 1024.0 * 1024.0 * 1024.0) }
    }
}
