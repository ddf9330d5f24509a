//! EventCounters (`System.Runtime` and any other EventSource counters), decoded from the
//! event's own metadata by field name, since the on-wire field order is not guaranteed.

use crate::payload::{Value, decode_event, find};
use crate::{Error, Event};

/// Name of the event every EventSource counter publishes each interval.
pub const EVENT_COUNTERS: &str = "EventCounters";

/// Mean counters (EventCounter, PollingCounter) report a value; Sum counters
/// (IncrementingEventCounter, IncrementingPollingCounter) report the increment over the interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CounterKind {
    Mean,
    Sum,
}

/// One counter sample.
#[derive(Debug, Clone, PartialEq)]
pub struct CounterPayload {
    /// e.g. `cpu-usage`, `gc-heap-size`.
    pub name: String,
    pub display_name: String,
    /// e.g. `%`, `MB`; empty when the counter declares none.
    pub display_units: String,
    pub kind: CounterKind,
    /// `Mean` for Mean counters, `Increment` for Sum counters.
    pub value: f64,
    pub interval_sec: f32,
    /// `Interval=<ms>`; sessions share one interval per provider, so filter on it.
    pub series: String,
}

/// The `Payload` object. Real runtimes (3.1 and 8) wrap it in an unnamed outer object
/// (TraceLogging's event-level struct), so look through nested objects for it.
fn find_payload(fields: &[(String, Value)]) -> Option<&[(String, Value)]> {
    if let Some(Value::Object(p)) = find(fields, "Payload") {
        return Some(p);
    }
    fields.iter().find_map(|(_, v)| match v {
        Value::Object(inner) => find_payload(inner),
        _ => None,
    })
}

/// Decode an `EventCounters` event. Returns `Ok(None)` for any other event.
pub fn decode_counter(event: &Event<'_>) -> Result<Option<CounterPayload>, Error> {
    if event.metadata.event_name != EVENT_COUNTERS {
        return Ok(None);
    }
    let fields = decode_event(event)?;
    let Some(p) = find_payload(&fields) else {
        return Err(Error::malformed(0, "EventCounters event without a Payload object"));
    };
    let text = |name: &str| find(p, name).and_then(Value::as_str).unwrap_or("").to_string();
    let name = text("Name");
    if name.is_empty() {
        return Err(Error::malformed(0, "EventCounters payload without a Name"));
    }
    // CounterType is authoritative; fall back to which value field exists.
    let kind = match find(p, "CounterType").and_then(Value::as_str) {
        Some("Sum") => CounterKind::Sum,
        Some("Mean") => CounterKind::Mean,
        _ if find(p, "Increment").is_some() => CounterKind::Sum,
        _ => CounterKind::Mean,
    };
    let value_field = match kind {
        CounterKind::Mean => "Mean",
        CounterKind::Sum => "Increment",
    };
    let value = find(p, value_field)
        .and_then(Value::as_f64)
        .ok_or(Error::malformed(0, "EventCounters payload without its value field"))?;
    let interval_sec = find(p, "IntervalSec").and_then(Value::as_f64).unwrap_or(0.0) as f32;
    Ok(Some(CounterPayload {
        display_name: text("DisplayName"),
        display_units: text("DisplayUnits"),
        series: text("Series"),
        name,
        kind,
        value,
        interval_sec,
    }))
}
