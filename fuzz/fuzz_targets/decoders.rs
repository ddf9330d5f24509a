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
});
