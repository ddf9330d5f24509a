//! Metadata-driven payload decoding and EventCounters.

use nettrace::counters::{CounterKind, decode_counter};
use nettrace::payload::{Value, decode_fields};
use nettrace::testing::event;
use nettrace::testing::payloads::{self as p, Payload};
use nettrace::{Error, EventMetadata, FieldMetadata, TypeCode};

#[test]
fn mean_counter() {
    let md = p::counters_metadata_mean(1, "System.Runtime");
    let payload = p::counter_mean("cpu-usage", "CPU Usage", "%", 12.5, 1.0);
    let c = decode_counter(&event(&md, &payload)).unwrap().unwrap();
    assert_eq!(c.name, "cpu-usage");
    assert_eq!(c.display_name, "CPU Usage");
    assert_eq!(c.display_units, "%");
    assert_eq!(c.kind, CounterKind::Mean);
    assert_eq!(c.value, 12.5);
    assert_eq!(c.interval_sec, 1.0);
    assert_eq!(c.series, "Interval=1000");
}

#[test]
fn sum_counter_uses_increment() {
    let md = p::counters_metadata_sum(2, "System.Runtime");
    let payload = p::counter_sum("alloc-rate", "Allocation Rate", "B", 4096.0, 2.0);
    let c = decode_counter(&event(&md, &payload)).unwrap().unwrap();
    assert_eq!((c.kind, c.value, c.display_units.as_str()), (CounterKind::Sum, 4096.0, "B"));
    assert_eq!(c.series, "Interval=2000");
}

#[test]
fn counter_with_flat_payload_field_and_reordered_fields() {
    // Decoding is by name: a Payload object at top level, fields in another order.
    let nested = vec![
        FieldMetadata::scalar("IntervalSec", TypeCode::Single),
        FieldMetadata::scalar("Mean", TypeCode::Double),
        FieldMetadata::scalar("Name", TypeCode::String),
    ];
    let md = EventMetadata {
        metadata_id: 3,
        provider: "My.Source".into(),
        event_id: 1,
        event_name: "EventCounters".into(),
        keywords: 0,
        version: 0,
        level: 4,
        opcode: None,
        fields: vec![FieldMetadata { name: "Payload".into(), type_code: TypeCode::Object, nested, element: None }],
    };
    let payload = Payload::new().f32(5.0).f64(3.0).utf16z("queue").build();
    let c = decode_counter(&event(&md, &payload)).unwrap().unwrap();
    assert_eq!((c.name.as_str(), c.value, c.interval_sec, c.kind), ("queue", 3.0, 5.0, CounterKind::Mean));
    assert_eq!(c.series, "");
    // Truncated payload.
    assert!(decode_counter(&event(&md, &payload[..6])).is_err());
}

#[test]
fn non_counter_events_are_none_and_broken_ones_are_errors() {
    let mut md = p::counters_metadata_mean(1, "System.Runtime");
    md.event_name = "Something".into();
    assert!(decode_counter(&event(&md, &[])).unwrap().is_none());
    let bare = EventMetadata { fields: vec![], ..p::counters_metadata_mean(1, "x") };
    assert!(matches!(decode_counter(&event(&bare, &[])), Err(Error::Malformed { .. })));
}

#[test]
fn decode_fields_covers_every_type_code() {
    let f = |n: &str, t| FieldMetadata::scalar(n, t);
    let fields = vec![
        f("b", TypeCode::Boolean),
        f("c", TypeCode::Char16),
        f("i8", TypeCode::SByte),
        f("u8", TypeCode::Byte),
        f("i16", TypeCode::Int16),
        f("u16", TypeCode::UInt16),
        f("i32", TypeCode::Int32),
        f("u32", TypeCode::UInt32),
        f("i64", TypeCode::Int64),
        f("u64", TypeCode::UInt64),
        f("f32", TypeCode::Single),
        f("f64", TypeCode::Double),
        f("dec", TypeCode::Decimal),
        f("dt", TypeCode::DateTime),
        f("g", TypeCode::Guid),
        f("s", TypeCode::String),
        FieldMetadata {
            name: "arr".into(),
            type_code: TypeCode::Array,
            nested: vec![],
            element: Some(Box::new(FieldMetadata {
                name: "arr".into(),
                type_code: TypeCode::Object,
                nested: vec![f("x", TypeCode::UInt16)],
                element: None,
            })),
        },
    ];
    let payload = Payload::new()
        .u32(1)
        .u16(u16::from(b'Z'))
        .u8(0xFF)
        .u8(200)
        .u16(0xFFFE)
        .u16(65535)
        .i32(-5)
        .u32(5)
        .i64(-6)
        .u64(6)
        .f32(1.5)
        .f64(2.5)
        .bytes(&[9; 16])
        .i64(133_000_000_000_000_000)
        .bytes(&[7; 16])
        .utf16z("hé")
        .u16(2)
        .u16(10)
        .u16(11)
        .u8(0xEE) // trailing bytes are ignored
        .build();
    let v = decode_fields(&fields, &payload).unwrap();
    let vals: Vec<&Value> = v.iter().map(|(_, v)| v).collect();
    assert_eq!(vals[0], &Value::Bool(true));
    assert_eq!(vals[1], &Value::Char('Z'));
    assert_eq!(vals[2], &Value::I8(-1));
    assert_eq!(vals[3], &Value::U8(200));
    assert_eq!(vals[4], &Value::I16(-2));
    assert_eq!(vals[5], &Value::U16(65535));
    assert_eq!(vals[6], &Value::I32(-5));
    assert_eq!(vals[7], &Value::U32(5));
    assert_eq!(vals[8], &Value::I64(-6));
    assert_eq!(vals[9], &Value::U64(6));
    assert_eq!(vals[10], &Value::F32(1.5));
    assert_eq!(vals[11], &Value::F64(2.5));
    assert_eq!(vals[12], &Value::Decimal([9; 16]));
    assert_eq!(vals[13], &Value::DateTime(133_000_000_000_000_000));
    assert_eq!(vals[14], &Value::Guid([7; 16]));
    assert_eq!(vals[15].as_str(), Some("hé"));
    let Value::Array(items) = vals[16] else { panic!("{:?}", vals[16]) };
    assert_eq!(items.len(), 2);
    assert_eq!(items[1].get("x"), Some(&Value::U16(11)));
    assert_eq!(vals[6].as_i64(), Some(-5));
    assert_eq!(vals[10].as_f64(), Some(1.5));
    assert_eq!(vals[15].as_f64(), None);
    // Every strict prefix fails cleanly.
    let needed = payload.len() - 1;
    for cut in 0..needed {
        assert!(decode_fields(&fields, &payload[..cut]).is_err(), "cut {cut}");
    }
}

#[test]
fn unknown_type_codes_are_errors() {
    let fields = vec![FieldMetadata::scalar("x", TypeCode::Unknown(77))];
    assert!(decode_fields(&fields, &[0; 8]).is_err());
}
