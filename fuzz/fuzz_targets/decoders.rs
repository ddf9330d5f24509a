//! Runs every typed decoder on arbitrary payloads (the reader target only reaches them
//! through well-formed framing).
#![no_main]

use libfuzzer_sys::fuzz_target;
use nettrace::events::{RUNDOWN_PROVIDER, RUNTIME_PROVIDER, RuntimeEvent, SAMPLE_PROFILER_PROVIDER, decode_runtime};
use nettrace::testing::{event, native_metadata};
use nettrace::{FieldMetadata, TypeCode};

const IDS: &[u32] = &[0, 1, 2, 15, 16, 17, 18, 19, 38, 80, 81, 90, 91, 139, 140, 143, 144, 149, 150, 152, 153, 154];

fuzz_target!(|input: &[u8]| {
    if input.len() < 3 {
        return;
    }
    let provider = [RUNTIME_PROVIDER, RUNDOWN_PROVIDER, SAMPLE_PROFILER_PROVIDER][usize::from(input[0] % 3)];
    let event_id = IDS[usize::from(input[1]) % IDS.len()];
    let version = u32::from(input[2] % 4);
    let ptr = if input[2] & 0x80 != 0 { 4 } else { 8 };
    let payload = &input[3..];
    let md = native_metadata(1, provider, event_id, version);
    let e = event(&md, payload);
    if let Ok(ev) = decode_runtime(&e, ptr) {
        let n = match ev {
            RuntimeEvent::BulkType(it) => {
                it.map(|t| t.map(|t| t.name.to_string_lossy().len() + t.type_parameters.iter().count())).count()
            }
            RuntimeEvent::BulkNode(it) => {
                let c = it.count as usize;
                assert!(it.count() <= c + 1);
                0
            }
            RuntimeEvent::BulkEdge(it) => {
                let c = it.count as usize;
                assert!(it.count() <= c + 1);
                0
            }
            RuntimeEvent::BulkRootEdge(it) => {
                let c = it.count as usize;
                assert!(it.count() <= c + 1);
                0
            }
            RuntimeEvent::BulkRootCwt(it) => {
                let c = it.count as usize;
                assert!(it.count() <= c + 1);
                0
            }
            RuntimeEvent::BulkRootStaticVar(it) => it.count(),
            RuntimeEvent::MethodLoad(m) => m.full_name().len(),
            RuntimeEvent::ModuleLoad { il_path, .. } => il_path.to_string_lossy().len(),
            RuntimeEvent::ExceptionThrown(e) => e.exception_type.to_string_lossy().len() + e.message.len_utf16(),
            _ => 0,
        };
        std::hint::black_box(n);
    }
    // The same bytes as a self-describing payload with a nested/array layout.
    let fields = vec![
        FieldMetadata::scalar("a", TypeCode::String),
        FieldMetadata {
            name: "o".into(),
            type_code: TypeCode::Object,
            nested: vec![FieldMetadata::scalar("x", TypeCode::Double), FieldMetadata::scalar("c", TypeCode::Char16)],
            element: None,
        },
        FieldMetadata {
            name: "arr".into(),
            type_code: TypeCode::Array,
            nested: vec![],
            element: Some(Box::new(FieldMetadata::scalar("arr", TypeCode::Int32))),
        },
    ];
    let _ = nettrace::payload::decode_fields(&fields, payload);
    meters(input[1], input[2], payload);
});

/// The `System.Diagnostics.Metrics` events as every runtime version lays them out (6.0: version
/// 0, 8.0: 1, 9.0: 2), plus a layout with fields missing or of the wrong type: decoding the
/// app's bytes must end in a value or an error, never a panic.
fn meters(which: u8, version: u8, payload: &[u8]) {
    use diag::meters::{METRICS_PROVIDER, decode, parse_quantiles};
    use nettrace::EventMetadata;
    const EVENTS: &[(&str, &[&str])] = &[
        ("CounterRateValuePublished", &["rate", "value"]),
        ("UpDownCounterRateValuePublished", &["rate", "value"]),
        ("GaugeValuePublished", &["lastValue"]),
        ("HistogramValuePublished", &["quantiles", "count", "sum"]),
        ("Error", &[]),
        ("MultipleSessionsNotSupportedError", &[]),
    ];
    let (name, extra) = EVENTS[usize::from(which) % EVENTS.len()];
    let version = u32::from(version % 3);
    let mut fields: Vec<FieldMetadata> = ["sessionId", "meterName", "meterVersion", "instrumentName", "unit", "tags"]
        .iter()
        .map(|n| FieldMetadata::scalar(n, TypeCode::String))
        .collect();
    for (i, n) in extra.iter().enumerate() {
        // Version 0 lacks the later fields; count is an int, sum a double, the rest strings.
        if version == 0 && i > 0 {
            break;
        }
        let t = match *n {
            "count" => TypeCode::Int32,
            "sum" => TypeCode::Double,
            _ => TypeCode::String,
        };
        fields.push(FieldMetadata::scalar(n, t));
    }
    if version == 2 {
        fields.push(FieldMetadata::scalar("instrumentId", TypeCode::Int32));
    }
    if which & 0x80 != 0 {
        // A field missing or retyped: the layout no runtime writes.
        let at = usize::from(which) % fields.len();
        fields[at].type_code = TypeCode::Int64;
        fields.truncate(usize::from((which >> 4) & 0x7).max(1));
    }
    let md = EventMetadata {
        metadata_id: 1,
        provider: METRICS_PROVIDER.into(),
        event_id: 4,
        event_name: name.into(),
        keywords: 2,
        version,
        level: 4,
        opcode: None,
        fields,
    };
    std::hint::black_box(decode(&event(&md, payload)).ok());
    if let Ok(text) = std::str::from_utf8(payload) {
        std::hint::black_box(parse_quantiles(text).ok());
    }
}
