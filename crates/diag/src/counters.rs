//! Runtime counters the dotnet-counters way: the `System.Runtime` EventSource publishes an
//! `EventCounters` event per counter every interval.

use nettrace::counters::{CounterKind, decode_counter};
use nettrace::{Event, TraceInfo};

use crate::protocol::{Provider, SessionConfig};

pub const SYSTEM_RUNTIME: &str = "System.Runtime";

/// A session that publishes the given EventSource counters every `interval_sec` seconds.
/// No rundown and no stacks: this session runs all the time beside the app.
pub fn session_config(providers: &[&str], interval_sec: f64) -> SessionConfig {
    let args = format!("EventCounterIntervalSec={}", trim_float(interval_sec));
    let mut cfg =
        SessionConfig::new(providers.iter().map(|p| Provider::new(p, 0, 4).with_arguments(args.clone())).collect());
    cfg.circular_buffer_mb = 16;
    cfg
}

pub(crate) fn trim_float(v: f64) -> String {
    let s = format!("{v}");
    s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
}

/// One counter value as published by the runtime.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CounterSample {
    pub provider: String,
    /// Machine name, e.g. `gc-heap-size`.
    pub name: String,
    pub display_name: String,
    /// `MB`, `%`, `B`... as the runtime labels it; empty for plain counts.
    pub units: String,
    /// A mean over the interval (gauges) or the increment during the interval (rates).
    pub value: f64,
    pub is_rate: bool,
    pub interval_sec: f32,
    /// Event time in ns on the trace clock.
    pub timestamp_ns: i64,
}

/// `Some` for an `EventCounters` event of any provider; other events are not counters.
pub fn sample_from_event(info: &TraceInfo, event: &Event<'_>) -> Option<CounterSample> {
    let p = decode_counter(event).ok()??;
    Some(CounterSample {
        provider: event.metadata.provider.clone(),
        name: p.name,
        display_name: p.display_name,
        units: p.display_units,
        value: p.value,
        is_rate: matches!(p.kind, CounterKind::Sum),
        interval_sec: p.interval_sec,
        timestamp_ns: crate::session::ticks_to_ns(info, event.timestamp),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_argument_is_plain() {
        let c = session_config(&[SYSTEM_RUNTIME], 1.0);
        assert_eq!(c.providers[0].arguments, "EventCounterIntervalSec=1");
        assert_eq!(c.providers[0].level, 4);
        assert!(!c.request_rundown);
        assert_eq!(session_config(&[SYSTEM_RUNTIME], 0.5).providers[0].arguments, "EventCounterIntervalSec=0.5");
    }
}
