//! `metric` triggers (an app's own EventCounter or `System.Diagnostics.Metrics` instrument) and
//! `startup` triggers. The session part says which providers a process's one EventPipe session
//! needs; the decision part is pure (values and monotonic `now` in, firings out), sharing the
//! threshold / `for` / hysteresis state machine of the built-in metrics ([`Bound`], [`Threshold`]).

use api::{DumpPolicySpec, MetricRef, TriggerKind};
use diag::counters::CounterSample;
use diag::meters::{InstrumentSpec, MeterSample, MeterValue};
use diag::protocol::Provider;

use crate::triggers::{Bound, Firing, Threshold, firing};

/// One value a metric trigger may compare.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    /// An EventCounter of any provider but `System.Runtime` (whose counters are the built-ins).
    Counter(CounterSample),
    /// A Meter instrument's value, from our own metrics session.
    Meter(MeterSample),
}

/// What the metric triggers that apply to one process ask of its session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sources {
    /// EventSource names whose counters are read (besides `System.Runtime`).
    pub providers: Vec<String>,
    pub instruments: Vec<InstrumentSpec>,
}

impl Sources {
    pub fn of(policy: &DumpPolicySpec, engine_applies: impl Fn(usize) -> bool) -> Self {
        let mut s = Sources::default();
        for (i, t) in policy.triggers.iter().enumerate() {
            if t.kind != TriggerKind::Metric || !engine_applies(i) {
                continue;
            }
            match t.metric.as_ref().and_then(|m| m.reference()) {
                Some(MetricRef::EventCounter { provider, .. }) if provider != diag::counters::SYSTEM_RUNTIME => {
                    s.providers.push(provider.to_string())
                }
                Some(MetricRef::Instrument { meter, instrument, .. }) => {
                    s.instruments.push(InstrumentSpec { meter: meter.into(), instrument: instrument.into() })
                }
                _ => {}
            }
        }
        s.providers.sort();
        s.providers.dedup();
        s.instruments.sort();
        s.instruments.dedup();
        s
    }

    /// The providers to add to the session: each EventCounter provider at the counter interval,
    /// and the `System.Diagnostics.Metrics` EventSource (.NET 6+ only: older runtimes have no
    /// such EventSource, so meter triggers cannot fire there; `Err` says so for the log).
    pub fn providers(
        &self,
        interval_sec: f64,
        session_id: &str,
        runtime_major: Option<u32>,
    ) -> (Vec<Provider>, Option<String>) {
        let mut out: Vec<Provider> = Vec::new();
        if !self.providers.is_empty() {
            let names: Vec<&str> = self.providers.iter().map(String::as_str).collect();
            out.extend(diag::counters::session_config(&names, interval_sec).providers);
        }
        if self.instruments.is_empty() {
            return (out, None);
        }
        if runtime_major.is_some_and(|m| m < 6) {
            let why = "meter triggers need .NET 6 or later (System.Diagnostics.Metrics does not exist before); \
                       they never fire for this process";
            return (out, Some(why.into()));
        }
        match diag::meters::provider(session_id, &self.instruments, interval_sec) {
            Ok(p) => out.push(p),
            Err(e) => return (out, Some(e.to_string())),
        }
        (out, None)
    }
}

/// Per-process state of the metric triggers of one policy. Rebuilt when the policy changes.
#[derive(Debug, Clone, Default)]
pub struct MetricEngine {
    /// Per trigger: `Some` for a metric trigger that applies to this process.
    states: Vec<Option<Threshold>>,
    /// Our metrics session's id: values of another tool's session are not ours to judge.
    session_id: String,
    /// The publishing interval, to turn a meter counter's delta into a rate per second.
    interval_sec: f64,
}

impl MetricEngine {
    pub fn new(policy: &DumpPolicySpec, applies: impl Fn(usize) -> bool, session_id: &str) -> Self {
        let states = policy
            .triggers
            .iter()
            .enumerate()
            .map(|(i, t)| (t.kind == TriggerKind::Metric && applies(i)).then(Threshold::default))
            .collect();
        Self { states, session_id: session_id.into(), interval_sec: policy.counter_interval.as_secs_f64() }
    }

    /// Feed one batch of observations (those read together, one interval's worth); each trigger
    /// sees the worst of its matching values in the batch, and none when nothing matched.
    pub fn observe(&mut self, policy: &DumpPolicySpec, batch: &[Observation], now: f64) -> Vec<Firing> {
        let mut out = Vec::new();
        for (index, (t, state)) in policy.triggers.iter().zip(self.states.iter_mut()).enumerate() {
            let Some(th) = state else { continue };
            let (Some(source), Some(bound)) = (t.metric.as_ref().and_then(|m| m.reference()), Bound::of(t)) else {
                continue;
            };
            let value = batch
                .iter()
                .filter_map(|o| value_of(source, o, &self.session_id, self.interval_sec))
                .reduce(|a, b| bound.worse(a, b));
            let Some(value) = value else { continue };
            let hold = t.for_.map_or(0.0, |d| d.as_secs_f64());
            if bound.step(th, hold, value, now) {
                out.push(firing(index, t, value, format!("{source} {bound} for {hold}s")));
            }
        }
        out
    }
}

/// The value `o` gives metric `source`, in the unit a trigger compares: a rate per second for
/// counters that count (an EventCounter of type Sum, a `Counter<T>`), the current value for the
/// rest, the chosen quantile for a histogram.
pub fn value_of(source: MetricRef<'_>, o: &Observation, session_id: &str, interval_sec: f64) -> Option<f64> {
    let per_sec = |delta: f64, interval: f64| if interval > 0.0 { delta / interval } else { delta };
    match (source, o) {
        (MetricRef::EventCounter { provider, counter }, Observation::Counter(s)) => {
            if s.provider != provider || s.name != counter {
                return None;
            }
            Some(if s.is_rate { per_sec(s.value, f64::from(s.interval_sec)) } else { s.value })
        }
        (MetricRef::Instrument { meter, instrument, percentile }, Observation::Meter(s)) => {
            if s.session_id != session_id || s.meter != meter || s.instrument != instrument {
                return None;
            }
            match &s.value {
                MeterValue::Rate { delta, .. } => Some(per_sec(*delta, interval_sec)),
                MeterValue::Gauge(v) => Some(*v),
                // .NET 7 published only the change: the value itself is unknown there.
                MeterValue::UpDown { value, .. } => *value,
                h @ MeterValue::Histogram { .. } => h.quantile(f64::from(percentile) / 100.0),
            }
        }
        _ => None,
    }
}

/// The `startup` triggers that apply to a process, to fire once when its runtime is first seen.
pub fn startup_firings(policy: &DumpPolicySpec, applies: impl Fn(usize) -> bool) -> Vec<Firing> {
    policy
        .triggers
        .iter()
        .enumerate()
        .filter(|&(i, t)| t.kind == TriggerKind::Startup && applies(i))
        .map(|(i, t)| firing(i, t, 0.0, "runtime started".into()))
        .collect()
}

#[cfg(test)]
mod tests;
