//! A policy's triggers: what to watch for, and the thresholds, windows and filters of each.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::CaptureKind;
use crate::units::{Duration, Quantity};

/// One reason to capture. Metric triggers fire when the value stays `above` (or `below`) the
/// threshold for `for`, and re-arm only once it drops below `clearBelow` (rises above
/// `clearAbove`): hysteresis, so a value hovering at the threshold does not fire again and again.
/// `processes` limits any trigger to some of the pod's processes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.type != 'schedule' || has(self.every) != has(self.cron)",
        "message": "a schedule trigger needs exactly one of `every` (e.g. every: 1h) or `cron` (e.g. cron: \"0 3 * * *\")"
    },
    {
        "rule": "self.type != 'heapGrowth'",
        "message": "heapGrowth is not a trigger to write: it names the snapshots of growth verdicts; set spec.heapSnapshots (e.g. heapSnapshots: {every: 10m, keep: 6}) to get them"
    },
    {
        "rule": "!(self.type in ['gcHeapBytes', 'gcHeapGrowth', 'workingSet', 'cpu', 'threads', 'threadPoolQueue', 'exceptionRate', 'lockContentionRate', 'metric']) || has(self.above) != has(self.below)",
        "message": "a metric trigger needs exactly one of `above` or `below` (the threshold), e.g. above: 500Mi"
    },
    {
        "rule": "(self.type == 'metric') == has(self.metric)",
        "message": "a `metric` trigger names its metric, and only it: metric: {provider: MyApp.Queue, counter: queue-length} (an EventCounter) or metric: {meter: MyApp, instrument: request-duration, percentile: 95}"
    },
    {
        "rule": "(!has(self.clearBelow) || has(self.above)) && (!has(self.clearAbove) || has(self.below))",
        "message": "clearBelow re-arms an `above` trigger, clearAbove a `below` trigger (e.g. below: 5, clearAbove: 10)"
    },
    {
        "rule": "self.type == 'exception' || (!has(self.exceptionType) && !has(self.count) && !has(self.window))",
        "message": EXCEPTION_FIELDS_ONLY
    }
]))]
pub struct Trigger {
    #[serde(rename = "type")]
    pub kind: TriggerKind,
    /// Threshold, in the unit of the metric (see [`TriggerKind`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above: Option<Quantity>,
    /// How long the value must stay above the threshold before firing.
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    pub for_: Option<Duration>,
    /// Re-arm threshold; default 90% of `above`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clear_below: Option<Quantity>,
    /// Threshold the other way: fire when the value stays below it for `for` (e.g. a queue that
    /// drains to nothing, requests per second that drop). Exactly one of `above` and `below`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below: Option<Quantity>,
    /// Re-arm threshold of a `below` trigger; default 110% of `below`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clear_above: Option<Quantity>,
    /// `metric` triggers: the app's own EventCounter or `System.Diagnostics.Metrics` instrument.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<crate::MetricSource>,
    /// Only these processes (any trigger): globs (`*`, `?`) matched against the whole process
    /// name (the entry assembly, e.g. `Orders.Api`) or the whole command line
    /// (`*--role=worker*`), case-sensitive. Empty: every .NET process of the pod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub processes: Vec<String>,
    /// `schedule` triggers: capture every this long...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<Duration>,
    /// ...or at these times: five-field cron, UTC (`0 3 * * *` is 03:00 every day).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// `onDemand` triggers: a file whose appearance requests a capture (standalone mode;
    /// SIGUSR1 to the sidecar does the same).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// What to capture when this trigger fires; default `spec.capture`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture: Option<Vec<CaptureKind>>,
    /// `exception` triggers: which exceptions count, by `Exception.GetType().FullName`; `*`
    /// stands for any run of characters, `?` for one (`System.*Timeout*`,
    /// `System.Net.Http.HttpRequestException`). Default `*`: every exception.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub exception_type: Option<String>,
    /// `exception` triggers: how many matching exceptions within `window` fire it (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    pub count: Option<u32>,
    /// `exception` triggers: the sliding window `count` is reached within (1s to 1d, default 1m;
    /// the range is checked by the sidecar and the policy's status, not by the API server: a
    /// duration rule per trigger exceeds its CEL cost budget).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Duration>,
}

/// What the API server and the sidecar say to exception fields on another trigger.
pub const EXCEPTION_FIELDS_ONLY: &str = "exceptionType, count and window only apply to an exception trigger, \
     e.g. {type: exception, exceptionType: \"System.*Timeout*\", count: 5, window: 1m}";

impl Trigger {
    pub fn new(kind: TriggerKind) -> Self {
        Self {
            kind,
            above: None,
            for_: None,
            clear_below: None,
            below: None,
            clear_above: None,
            metric: None,
            processes: Vec::new(),
            every: None,
            cron: None,
            file: None,
            capture: None,
            exception_type: None,
            count: None,
            window: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum TriggerKind {
    /// GC heap size in bytes (`above: 500Mi`).
    GcHeapBytes,
    /// GC heap growth in bytes per minute, over the `for` window (`above: 50Mi`).
    GcHeapGrowth,
    /// Working set in bytes.
    WorkingSet,
    /// CPU usage as a ratio of the whole machine, the runtime's `cpu-usage` (`above: 80%`).
    Cpu,
    /// Thread-pool thread count.
    Threads,
    /// Thread-pool work items queued.
    ThreadPoolQueue,
    /// Exceptions thrown per second.
    ExceptionRate,
    /// Monitor lock contentions per second.
    LockContentionRate,
    /// The app's own EventCounter or `System.Diagnostics.Metrics` instrument, named by `metric`.
    Metric,
    /// Once per process, when the sidecar first sees its runtime (e.g. stacks or a trace at start).
    Startup,
    /// A wait-for cycle among threads (live on .NET 8+).
    Deadlock,
    /// Every `every`, or at the `cron` times.
    Schedule,
    /// A request: file, signal, or (with the operator) a DumpSnapshot without artifacts.
    OnDemand,
    /// The runtime's own crash dump, configured by the injector into the shared volume.
    Crash,
    /// Not written in `triggers`: what a snapshot reporting a growth verdict of the periodic
    /// heap snapshots (`heapSnapshots`) names as its trigger.
    HeapGrowth,
    /// `count` thrown exceptions whose type matches `exceptionType` within `window`, from the
    /// runtime's own exception events (first chance: caught ones count too; .NET Core 3.1 and
    /// .NET 8 alike).
    Exception,
}

impl std::fmt::Display for TriggerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl TriggerKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::GcHeapBytes => "gcHeapBytes",
            Self::GcHeapGrowth => "gcHeapGrowth",
            Self::WorkingSet => "workingSet",
            Self::Cpu => "cpu",
            Self::Threads => "threads",
            Self::ThreadPoolQueue => "threadPoolQueue",
            Self::ExceptionRate => "exceptionRate",
            Self::LockContentionRate => "lockContentionRate",
            Self::Metric => "metric",
            Self::Startup => "startup",
            Self::Deadlock => "deadlock",
            Self::Schedule => "schedule",
            Self::OnDemand => "onDemand",
            Self::Crash => "crash",
            Self::HeapGrowth => "heapGrowth",
            Self::Exception => "exception",
        }
    }

    /// Triggers that compare a metric with a threshold.
    pub fn is_threshold(self) -> bool {
        matches!(
            self,
            Self::GcHeapBytes
                | Self::GcHeapGrowth
                | Self::WorkingSet
                | Self::Cpu
                | Self::Threads
                | Self::ThreadPoolQueue
                | Self::ExceptionRate
                | Self::LockContentionRate
        )
    }

    /// Triggers that compare a value with `above` or `below`: the built-in metrics and `metric`.
    pub fn compares_a_value(self) -> bool {
        self.is_threshold() || self == Self::Metric
    }
}
