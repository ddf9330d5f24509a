//! `System.Diagnostics.Metrics` instruments (.NET 6+) the way dotnet-counters and dotnet-monitor
//! read them: the runtime's `System.Diagnostics.Metrics` EventSource aggregates the chosen
//! instruments in the app and publishes one event per instrument and tag set every
//! `RefreshInterval` seconds (`MetricsEventSource.cs` in dotnet/runtime).
//!
//! Every number in those events is a string, formatted by the app: rates, gauges and up-down
//! values with the invariant culture, histogram quantiles (`0.5=1.2;0.95=3.4;0.99=5.6`) with the
//! app's current culture (so `0,5=1,2` is accepted too). Events gained fields over versions
//! (6.0: version 0; 8.0: a counter's cumulative `value`, a histogram's `count` and `sum`; 9.0: an
//! instrument id), so fields are looked up by name and a missing one is either optional or a
//! typed error, never a panic.

use nettrace::Event;
use nettrace::payload::{Value, decode_event};

use crate::Error;
use crate::protocol::Provider;

/// The EventSource that publishes every Meter's instruments.
pub const METRICS_PROVIDER: &str = "System.Diagnostics.Metrics";
/// `MetricsEventSource.Keywords.TimeSeriesValues`: the periodic values (and the errors).
pub const TIME_SERIES_VALUES: u64 = 0x2;

/// One instrument to publish: a Meter name and an instrument name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct InstrumentSpec {
    pub meter: String,
    pub instrument: String,
}

/// The provider that makes the app publish `instruments` every `interval_sec` seconds in a
/// session only we answer to (events carry `session_id`; another tool's are ignored).
///
/// Names are passed inside EventPipe's `key=value;...` filter string and the EventSource's own
/// `meter\instrument,...` list, so a name with one of `;,=\"` or a line break cannot be named
/// there: refused with [`Error::Invalid`] rather than silently watching something else.
pub fn provider(session_id: &str, instruments: &[InstrumentSpec], interval_sec: f64) -> Result<Provider, Error> {
    let bad = |s: &str| s.is_empty() || s.contains([';', ',', '=', '"', '\\', '\r', '\n']);
    if let Some(i) = instruments.iter().find(|i| bad(&i.meter) || bad(&i.instrument)) {
        return Err(Error::Invalid(format!(
            "meter {:?} / instrument {:?} cannot be requested: names with ; , = \" \\ or a line break are not expressible \
             in the System.Diagnostics.Metrics filter",
            i.meter, i.instrument
        )));
    }
    if bad(session_id) {
        return Err(Error::Invalid(format!("session id {session_id:?} is not expressible in an EventPipe filter")));
    }
    let metrics: Vec<String> = instruments.iter().map(|i| format!("{}\\{}", i.meter, i.instrument)).collect();
    // MaxTimeSeries and MaxHistograms are the runtime's defaults, written out: a session without
    // them would inherit a shared session's values on .NET 8.
    let args = format!(
        "SessionId={session_id};Metrics={};RefreshInterval={};MaxTimeSeries=1000;MaxHistograms=20",
        metrics.join(","),
        crate::counters::trim_float(interval_sec)
    );
    Ok(Provider::new(METRICS_PROVIDER, TIME_SERIES_VALUES, 4).with_arguments(args))
}

/// What one published event says about an instrument's latest interval.
#[derive(Debug, Clone, PartialEq)]
pub enum MeterValue {
    /// `Counter<T>` / `ObservableCounter<T>`: the increase over the interval, and (8.0+) the total.
    Rate { delta: f64, total: Option<f64> },
    /// `ObservableGauge<T>` (and `Gauge<T>`, 9.0+): the last value.
    Gauge(f64),
    /// `UpDownCounter<T>`: the change over the interval and (8.0+) the current value.
    UpDown { delta: f64, value: Option<f64> },
    /// `Histogram<T>`: quantiles of the interval's recordings (empty when nothing was recorded),
    /// and (8.0+) their count and sum.
    Histogram { quantiles: Vec<(f64, f64)>, count: Option<i64>, sum: Option<f64> },
}

impl MeterValue {
    /// The quantile closest to `q` (0.5, 0.95, 0.99), if published.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        match self {
            Self::Histogram { quantiles, .. } => quantiles.iter().find(|(k, _)| (k - q).abs() < 1e-6).map(|&(_, v)| v),
            _ => None,
        }
    }
}

/// One value of one instrument and tag set.
#[derive(Debug, Clone, PartialEq)]
pub struct MeterSample {
    pub session_id: String,
    pub meter: String,
    pub instrument: String,
    pub unit: String,
    /// `key=value` pairs joined with `,`, as the EventSource formats them; empty without tags.
    pub tags: String,
    pub value: MeterValue,
}

/// An event of the `System.Diagnostics.Metrics` EventSource that matters to a watcher.
#[derive(Debug, Clone, PartialEq)]
pub enum MeterEvent {
    Sample(MeterSample),
    /// The EventSource refused or limited the session (another tool owns it, too many series,
    /// an observable callback threw...): worth a log line, since values will be missing.
    Problem {
        session_id: String,
        what: String,
    },
}

/// Decode an event of the `System.Diagnostics.Metrics` provider. `Ok(None)` for other providers,
/// for events that carry no value (`CollectionStart`, `BeginInstrumentReporting`...) and for an
/// interval without a value (an observable counter's first interval publishes an empty rate).
pub fn decode(event: &Event<'_>) -> Result<Option<MeterEvent>, Error> {
    if event.metadata.provider != METRICS_PROVIDER {
        return Ok(None);
    }
    let name = event.metadata.event_name.as_str();
    let kind = match name {
        "CounterRateValuePublished"
        | "GaugeValuePublished"
        | "UpDownCounterRateValuePublished"
        | "HistogramValuePublished" => name,
        "Error" | "ObservableInstrumentCallbackError" => {
            let f = Fields::decode(event)?;
            let what = format!("{name}: {}", f.text("errorMessage")?);
            return Ok(Some(MeterEvent::Problem { session_id: f.text("sessionId")?.to_string(), what }));
        }
        "TimeSeriesLimitReached" | "HistogramLimitReached" => {
            let f = Fields::decode(event)?;
            let what = format!("{name}: the session tracks no more series; some values are not published");
            return Ok(Some(MeterEvent::Problem { session_id: f.text("sessionId")?.to_string(), what }));
        }
        "MultipleSessionsNotSupportedError" => {
            let f = Fields::decode(event)?;
            let what = format!(
                "another tool already owns the app's metrics session ({}); .NET allows one",
                f.text("runningSessionId")?
            );
            // Addressed to whoever asked, which may be us: no session id of ours to filter on.
            return Ok(Some(MeterEvent::Problem { session_id: String::new(), what }));
        }
        _ => return Ok(None),
    };
    let f = Fields::decode(event)?;
    // An empty string is "no value this interval"; a field the version lacks is `None` too, but
    // only where an older version lacks it (`value`), never for the value the event is about.
    let number = |text: Option<&str>| -> Result<Option<f64>, Error> {
        text.filter(|t| !t.trim().is_empty()).map(parse_invariant).transpose()
    };
    let value = match kind {
        "CounterRateValuePublished" => match number(Some(f.text("rate")?))? {
            Some(delta) => MeterValue::Rate { delta, total: number(f.optional_text("value"))? },
            None => return Ok(None),
        },
        "UpDownCounterRateValuePublished" => match number(Some(f.text("rate")?))? {
            Some(delta) => MeterValue::UpDown { delta, value: number(f.optional_text("value"))? },
            None => return Ok(None),
        },
        "GaugeValuePublished" => match number(Some(f.text("lastValue")?))? {
            Some(v) => MeterValue::Gauge(v),
            None => return Ok(None),
        },
        _ => MeterValue::Histogram {
            quantiles: parse_quantiles(f.text("quantiles")?)?,
            count: f.get("count").and_then(Value::as_i64),
            sum: f.get("sum").and_then(Value::as_f64),
        },
    };
    Ok(Some(MeterEvent::Sample(MeterSample {
        session_id: f.text("sessionId")?.to_string(),
        meter: f.text("meterName")?.to_string(),
        instrument: f.text("instrumentName")?.to_string(),
        unit: f.optional_text("unit").unwrap_or("").to_string(),
        tags: f.optional_text("tags").unwrap_or("").to_string(),
        value,
    })))
}

/// The decoded fields of one event, with the event's name for errors.
struct Fields {
    event: String,
    version: u32,
    fields: Vec<(String, Value)>,
}

impl Fields {
    fn decode(event: &Event<'_>) -> Result<Self, Error> {
        let fields = decode_event(event)
            .map_err(|e| Error::MeterPayload { event: event.metadata.event_name.clone(), reason: e.to_string() })?;
        Ok(Self { event: event.metadata.event_name.clone(), version: event.metadata.version, fields })
    }

    /// Parameter names are the C# ones (`sessionId`); compared without case in case a runtime
    /// ever writes them differently.
    fn get(&self, name: &str) -> Option<&Value> {
        self.fields.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v)
    }

    fn optional_text(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(Value::as_str)
    }

    fn text(&self, name: &str) -> Result<&str, Error> {
        self.optional_text(name).ok_or_else(|| Error::MeterPayload {
            event: self.event.clone(),
            reason: format!("no string field {name:?} in version {} ({} fields)", self.version, self.fields.len()),
        })
    }
}

/// A number as the EventSource formats it; empty means "no value this interval".
fn parse_invariant(s: &str) -> Result<f64, Error> {
    let t = s.trim();
    t.parse::<f64>()
        .map_err(|_| Error::MeterPayload { event: "value".into(), reason: format!("{t:?} is not a number") })
}

/// `0.5=12;0.95=40.5;0.99=41` into pairs. A culture with a decimal comma writes `0,5=12,1`:
/// the pairs are split on `;` and the halves on `=`, so a comma can only be a decimal point.
pub fn parse_quantiles(s: &str) -> Result<Vec<(f64, f64)>, Error> {
    let bad = |reason: String| Error::MeterPayload { event: "HistogramValuePublished".into(), reason };
    let num = |t: &str| {
        let t = t.trim().replace(',', ".");
        t.parse::<f64>().map_err(|_| bad(format!("quantile part {t:?} is not a number")))
    };
    s.split(';')
        .filter(|p| !p.trim().is_empty())
        .map(|pair| {
            let (q, v) = pair.split_once('=').ok_or_else(|| bad(format!("quantile {pair:?} has no '='")))?;
            Ok((num(q)?, num(v)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use nettrace::testing::{Payload, event};
    use nettrace::{EventMetadata, FieldMetadata, TypeCode};

    fn metadata(name: &str, version: u32, fields: &[(&str, TypeCode)]) -> EventMetadata {
        EventMetadata {
            metadata_id: 1,
            provider: METRICS_PROVIDER.into(),
            event_id: 4,
            event_name: name.into(),
            keywords: TIME_SERIES_VALUES,
            version,
            level: 4,
            opcode: None,
            fields: fields.iter().map(|(n, t)| FieldMetadata::scalar(n, *t)).collect(),
        }
    }

    const HEAD: [&str; 6] = ["sessionId", "meterName", "meterVersion", "instrumentName", "unit", "tags"];

    fn strings(names: &[&str], values: &[&str]) -> (Vec<(String, TypeCode)>, Vec<u8>) {
        let mut p = Payload::new();
        for v in values {
            p = p.utf16z(v);
        }
        (names.iter().map(|n| (n.to_string(), TypeCode::String)).collect(), p.build())
    }

    fn decode_one(name: &str, version: u32, extra: &[&str], values: &[&str]) -> Result<Option<MeterEvent>, Error> {
        let names: Vec<&str> = HEAD.iter().copied().chain(extra.iter().copied()).collect();
        let (fields, payload) = strings(&names, values);
        let fields: Vec<(&str, TypeCode)> = fields.iter().map(|(n, t)| (n.as_str(), *t)).collect();
        let md = metadata(name, version, &fields);
        decode(&event(&md, &payload))
    }

    fn sample(e: Result<Option<MeterEvent>, Error>) -> MeterSample {
        match e {
            Ok(Some(MeterEvent::Sample(s))) => s,
            other => panic!("not a sample: {other:?}"),
        }
    }

    #[test]
    fn provider_arguments_name_each_instrument() {
        let i = |m: &str, n: &str| InstrumentSpec { meter: m.into(), instrument: n.into() };
        let p = provider("dw-1", &[i("MyApp", "queue-length"), i("MyApp", "request-duration")], 1.0).unwrap();
        assert_eq!((p.name.as_str(), p.keywords, p.level), (METRICS_PROVIDER, 2, 4));
        assert_eq!(
            p.arguments,
            "SessionId=dw-1;Metrics=MyApp\\queue-length,MyApp\\request-duration;RefreshInterval=1;MaxTimeSeries=1000;MaxHistograms=20"
        );
        assert!(matches!(provider("dw", &[i("a;b", "c")], 1.0), Err(Error::Invalid(_))));
        assert!(matches!(provider("dw", &[i("a", "")], 1.0), Err(Error::Invalid(_))));
    }

    #[test]
    fn values_of_each_instrument_kind_and_version() {
        // .NET 6: version 0, no cumulative value.
        let s = sample(decode_one("CounterRateValuePublished", 0, &["rate"], &["s", "M", "", "req", "", "", "12.5"]));
        assert_eq!(s.value, MeterValue::Rate { delta: 12.5, total: None });
        // .NET 8: version 1 adds the total.
        let s = sample(decode_one(
            "CounterRateValuePublished",
            1,
            &["rate", "value"],
            &["s", "M", "1.0", "req", "{r}", "route=/a", "3", "40"],
        ));
        assert_eq!((s.meter.as_str(), s.instrument.as_str(), s.tags.as_str()), ("M", "req", "route=/a"));
        assert_eq!(s.value, MeterValue::Rate { delta: 3.0, total: Some(40.0) });
        let s = sample(decode_one("GaugeValuePublished", 0, &["lastValue"], &["s", "M", "", "q", "", "", "42"]));
        assert_eq!(s.value, MeterValue::Gauge(42.0));
        let s = sample(decode_one(
            "UpDownCounterRateValuePublished",
            1,
            &["rate", "value"],
            &["s", "M", "", "q", "", "", "-2", "7"],
        ));
        assert_eq!(s.value, MeterValue::UpDown { delta: -2.0, value: Some(7.0) });
        let s = sample(decode_one(
            "HistogramValuePublished",
            0,
            &["quantiles"],
            &["s", "M", "", "d", "ms", "", "0.5=120;0.95=250;0.99=250"],
        ));
        assert_eq!(s.value.quantile(0.95), Some(250.0));
        assert_eq!(s.value.quantile(0.5), Some(120.0));
        assert_eq!(s.value.quantile(0.9), None);
    }

    #[test]
    fn histogram_count_and_sum_of_version_1() {
        let names =
            ["sessionId", "meterName", "meterVersion", "instrumentName", "unit", "tags", "quantiles", "count", "sum"];
        let mut p = Payload::new();
        for v in ["s", "M", "", "d", "ms", "", "0,5=1,5;0,95=2;0,99=3"] {
            p = p.utf16z(v);
        }
        let payload = p.i32(9).f64(18.5).build();
        let mut types: Vec<(&str, TypeCode)> = names[..7].iter().map(|n| (*n, TypeCode::String)).collect();
        types.push(("count", TypeCode::Int32));
        types.push(("sum", TypeCode::Double));
        let md = metadata("HistogramValuePublished", 1, &types);
        let s = sample(decode(&event(&md, &payload)));
        assert_eq!(
            s.value,
            MeterValue::Histogram {
                quantiles: vec![(0.5, 1.5), (0.95, 2.0), (0.99, 3.0)],
                count: Some(9),
                sum: Some(18.5)
            },
            "a decimal-comma culture's quantiles"
        );
    }

    #[test]
    fn no_value_this_interval_is_not_a_sample() {
        assert_eq!(
            decode_one("CounterRateValuePublished", 1, &["rate", "value"], &["s", "M", "", "c", "", "", "", "0"])
                .unwrap(),
            None
        );
        assert_eq!(
            decode_one("GaugeValuePublished", 0, &["lastValue"], &["s", "M", "", "g", "", "", ""]).unwrap(),
            None
        );
        let s = sample(decode_one("HistogramValuePublished", 0, &["quantiles"], &["s", "M", "", "d", "", "", ""]));
        assert_eq!(s.value.quantile(0.95), None, "nothing recorded in the interval");
    }

    #[test]
    fn malformed_payloads_are_typed_errors() {
        let e =
            decode_one("GaugeValuePublished", 0, &["lastValue"], &["s", "M", "", "g", "", "", "forty"]).unwrap_err();
        assert!(matches!(e, Error::MeterPayload { .. }), "{e}");
        let e =
            decode_one("HistogramValuePublished", 0, &["quantiles"], &["s", "M", "", "d", "", "", "0.5"]).unwrap_err();
        assert!(e.to_string().contains("has no '='"), "{e}");
        // A field the event's version should have is missing.
        let md = metadata("GaugeValuePublished", 0, &[("sessionId", TypeCode::String)]);
        let payload = Payload::new().utf16z("s").build();
        let e = decode(&event(&md, &payload)).unwrap_err();
        assert!(e.to_string().contains("no string field") && e.to_string().contains("(1 fields)"), "{e}");
        let e = decode_one("GaugeValuePublished", 0, &[], &["s", "M", "", "g", "", ""]).unwrap_err();
        assert!(e.to_string().contains("no string field \"lastValue\""), "{e}");
        // Truncated payload: the metadata promises more than the bytes hold.
        let (fields, mut payload) = strings(&HEAD, &["s", "M", "", "g", "", "tags"]);
        payload.truncate(payload.len() - 3);
        let fields: Vec<(&str, TypeCode)> = fields.iter().map(|(n, t)| (n.as_str(), *t)).collect();
        let md = metadata("GaugeValuePublished", 0, &fields);
        assert!(matches!(decode(&event(&md, &payload)), Err(Error::MeterPayload { .. })));
    }

    #[test]
    fn problems_are_reported_and_other_events_ignored() {
        let md = metadata("Error", 0, &[("sessionId", TypeCode::String), ("errorMessage", TypeCode::String)]);
        let payload = Payload::new().utf16z("s").utf16z("boom").build();
        assert_eq!(
            decode(&event(&md, &payload)).unwrap(),
            Some(MeterEvent::Problem { session_id: "s".into(), what: "Error: boom".into() })
        );
        let md = metadata("CollectionStart", 0, &[]);
        assert_eq!(decode(&event(&md, &[])).unwrap(), None);
        let mut other = metadata("GaugeValuePublished", 0, &[]);
        other.provider = "MyApp".into();
        assert_eq!(decode(&event(&other, &[])).unwrap(), None);
    }
}
