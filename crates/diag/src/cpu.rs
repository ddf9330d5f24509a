//! CPU traces, the dotnet-trace `cpu-sampling` way: the runtime's SampleProfiler samples every
//! managed thread each millisecond (a sample is the thread's stack and whether it ran managed
//! code), the rundown at the end names the methods. Kept: every sample, the raw `.nettrace` if
//! asked; made from it: the methods by inclusive samples and a speedscope profile.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::time::Duration;

use nettrace::events::{RuntimeEvent, decode_runtime};
use nettrace::{Event, TraceInfo};
use serde::Serialize;

use crate::Error;
use crate::client::DiagnosticsClient;
use crate::session::TraceSession;
use crate::symbols::{MethodMap, UNKNOWN_FRAME};

/// SampleProfiler's kind of a sample that ran managed code (1 is native/preemptive).
const RUNNING_MANAGED: u32 = 2;
/// The sampler's period: each sample stands for this much time.
pub const SAMPLE_MS: f64 = 1.0;
/// Samples kept at most (10 minutes of 100 threads): a longer trace stops collecting, it does
/// not grow without bound.
pub const MAX_SAMPLES: usize = 60_000_000;

/// One sample: which thread, whether it ran managed code, its stack (leaf first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub thread: u64,
    pub running: bool,
    pub stack: Vec<u64>,
}

/// Every sample of a trace and the methods to name them.
#[derive(Default)]
pub struct CpuTrace {
    pub samples: Vec<Sample>,
    pub methods: MethodMap,
    /// Samples beyond [`MAX_SAMPLES`], not kept.
    pub dropped: u64,
}

impl CpuTrace {
    pub fn on_event(&mut self, info: &TraceInfo, event: &Event<'_>) {
        match decode_runtime(event, info.pointer_size) {
            Ok(RuntimeEvent::ThreadSample { kind }) if self.samples.len() < MAX_SAMPLES => self.samples.push(Sample {
                thread: event.thread_id,
                running: kind == RUNNING_MANAGED,
                stack: event.stack.to_vec(),
            }),
            Ok(RuntimeEvent::ThreadSample { .. }) => self.dropped += 1,
            Ok(RuntimeEvent::MethodLoad(m)) => self.methods.add_event(&m),
            _ => {}
        }
    }

    /// Names the frames of the samples that ran managed code (the CPU the app's code burned),
    /// root first.
    pub fn named(&mut self) -> Vec<NamedSample> {
        self.methods.seal();
        self.samples
            .iter()
            .filter(|s| s.running)
            .map(|s| {
                let mut frames = self.methods.symbolize(&s.stack);
                frames.reverse();
                NamedSample { thread: s.thread, frames }
            })
            .filter(|s| s.frames.iter().any(|f| f != UNKNOWN_FRAME))
            .collect()
    }
}

/// A sample with its frames named, root first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedSample {
    pub thread: u64,
    pub frames: Vec<String>,
}

/// A method's share of the samples.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MethodSamples {
    pub method: String,
    /// Samples with the method anywhere on the stack.
    pub inclusive: u64,
    /// Samples with the method as the leaf.
    pub exclusive: u64,
    /// `inclusive` over all samples, in percent.
    pub inclusive_percent: f64,
}

/// The methods by inclusive samples (a recursive method counts once per sample), then by
/// exclusive, then by name; the first `top`.
pub fn top_methods(samples: &[NamedSample], top: usize) -> Vec<MethodSamples> {
    let mut counts: HashMap<&str, (u64, u64)> = HashMap::new();
    for s in samples {
        let mut seen: Vec<&str> = Vec::with_capacity(s.frames.len());
        for f in s.frames.iter().map(String::as_str).filter(|f| *f != UNKNOWN_FRAME) {
            if !seen.contains(&f) {
                seen.push(f);
                counts.entry(f).or_default().0 += 1;
            }
        }
        if let Some(leaf) = s.frames.last().filter(|f| *f != UNKNOWN_FRAME) {
            counts.entry(leaf).or_default().1 += 1;
        }
    }
    let total = samples.len().max(1) as f64;
    let mut rows: Vec<MethodSamples> = counts
        .into_iter()
        .map(|(m, (inclusive, exclusive))| MethodSamples {
            method: m.to_string(),
            inclusive,
            exclusive,
            inclusive_percent: (inclusive as f64 * 1000.0 / total).round() / 10.0,
        })
        .collect();
    rows.sort_by(|a, b| {
        b.inclusive.cmp(&a.inclusive).then(b.exclusive.cmp(&a.exclusive)).then_with(|| a.method.cmp(&b.method))
    });
    rows.truncate(top);
    rows
}

/// The samples as a speedscope file (https://www.speedscope.app/file-format-schema.json): one
/// sampled profile per thread, frames shared, each sample weighing [`SAMPLE_MS`].
pub fn speedscope(samples: &[NamedSample], name: &str) -> serde_json::Value {
    let mut frame_index: HashMap<&str, usize> = HashMap::new();
    let mut frames: Vec<serde_json::Value> = Vec::new();
    let mut by_thread: BTreeMap<u64, (Vec<Vec<usize>>, Vec<f64>)> = BTreeMap::new();
    for s in samples {
        let stack: Vec<usize> = s
            .frames
            .iter()
            .map(|f| {
                *frame_index.entry(f.as_str()).or_insert_with(|| {
                    frames.push(serde_json::json!({ "name": f }));
                    frames.len() - 1
                })
            })
            .collect();
        let entry = by_thread.entry(s.thread).or_default();
        entry.0.push(stack);
        entry.1.push(SAMPLE_MS);
    }
    let profiles: Vec<serde_json::Value> = by_thread
        .into_iter()
        .map(|(thread, (stacks, weights))| {
            let end: f64 = weights.iter().sum();
            serde_json::json!({
                "type": "sampled", "name": format!("thread {thread}"), "unit": "milliseconds",
                "startValue": 0.0, "endValue": end, "samples": stacks, "weights": weights,
            })
        })
        .collect();
    serde_json::json!({
        "$schema": "https://www.speedscope.app/file-format-schema.json",
        "shared": { "frames": frames },
        "profiles": profiles,
        "name": name,
        "activeProfileIndex": 0,
        "exporter": concat!("dumpwatch ", env!("CARGO_PKG_VERSION")),
    })
}

/// Samples every managed thread for `duration`, keeping the raw stream in `raw` if given.
pub async fn capture(
    client: &DiagnosticsClient,
    duration: Duration,
    raw: Option<Box<dyn Write + Send>>,
    timeout: Duration,
) -> Result<CpuTrace, Error> {
    let mut session = TraceSession::start(client, &crate::stacks::session_config()).await?;
    if let Some(w) = raw {
        session.tee_to(w);
    }
    let mut trace = CpuTrace::default();
    let mut sink = |info: &TraceInfo, ev: &Event<'_>| trace.on_event(info, ev);
    session.pump_for(&mut sink, duration).await?;
    session.finish(&mut sink, timeout).await?;
    Ok(trace)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(thread: u64, frames: &[&str]) -> NamedSample {
        NamedSample { thread, frames: frames.iter().map(|f| f.to_string()).collect() }
    }

    #[test]
    fn inclusive_counts_a_method_once_per_sample_and_the_leaf_is_exclusive() {
        let samples = [
            sample(1, &["Main", "Run", "Hot"]),
            sample(1, &["Main", "Run", "Hot"]),
            sample(2, &["Main", "Rec", "Rec", "Cold"]),
            sample(2, &["Main", "Run"]),
        ];
        let top = top_methods(&samples, 3);
        let got: Vec<(&str, u64, u64)> = top.iter().map(|m| (m.method.as_str(), m.inclusive, m.exclusive)).collect();
        assert_eq!(got, [("Main", 4, 0), ("Run", 3, 1), ("Hot", 2, 2)]);
        assert_eq!(top[0].inclusive_percent, 100.0);
        assert_eq!(top_methods(&samples, 10).iter().find(|m| m.method == "Rec").unwrap().inclusive, 1);
    }

    #[test]
    fn speedscope_profiles_per_thread_with_shared_frames() {
        let samples = [sample(7, &["Main", "Hot"]), sample(9, &["Main"]), sample(7, &["Main", "Hot"])];
        let f = speedscope(&samples, "pid 42");
        assert_eq!(f["shared"]["frames"], serde_json::json!([{"name": "Main"}, {"name": "Hot"}]));
        let p = f["profiles"].as_array().unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0]["name"], "thread 7");
        assert_eq!(p[0]["type"], "sampled");
        assert_eq!(p[0]["samples"], serde_json::json!([[0, 1], [0, 1]]));
        assert_eq!(p[0]["weights"], serde_json::json!([1.0, 1.0]));
        assert_eq!(p[0]["endValue"], 2.0);
        // Every field the schema requires of a file and of a sampled profile.
        for key in ["$schema", "shared", "profiles"] {
            assert!(f.get(key).is_some(), "{key}");
        }
        for key in ["type", "name", "unit", "startValue", "endValue", "samples", "weights"] {
            assert!(p[1].get(key).is_some(), "{key}");
        }
    }
}
