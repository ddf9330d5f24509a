//! Typed decoders on hand-built payloads laid out as in the runtime manifest.

use nettrace::events::{
    BulkEdge, BulkNode, BulkRootCwt, BulkRootEdge, MethodEventKind, RUNDOWN_PROVIDER, RUNTIME_PROVIDER, RuntimeEvent,
    SAMPLE_PROFILER_PROVIDER, decode_runtime,
};
use nettrace::testing::event;
use nettrace::testing::native_metadata;
use nettrace::testing::payloads::{self as p, MethodSpec, Payload, StaticVarSpec, TypeSpec};
use nettrace::{Error, EventMetadata};

fn decode<'a>(md: &'a EventMetadata, payload: &'a [u8], ptr: u32) -> Result<RuntimeEvent<'a>, Error> {
    decode_runtime(&event(md, payload), ptr)
}

/// Leaked so that decoded events (which borrow their metadata) can outlive a statement.
fn rt(id: u32, version: u32) -> &'static EventMetadata {
    Box::leak(Box::new(native_metadata(1, RUNTIME_PROVIDER, id, version)))
}

#[test]
fn contention_start_v2_is_27_bytes_on_64_bit() {
    let payload = p::contention_start_v2(8, 0, 0x7f00_0000_1000, 0x7f00_0000_2000, 4242);
    assert_eq!(payload.len(), 27);
    let md = rt(81, 2);
    match decode(md, &payload, 8).unwrap() {
        RuntimeEvent::ContentionStart { flags, lock_id, object_id, owner_thread_id } => {
            assert_eq!(flags, 0);
            assert_eq!(lock_id, Some(0x7f00_0000_1000));
            assert_eq!(object_id, Some(0x7f00_0000_2000));
            assert_eq!(owner_thread_id, Some(4242));
        }
        other => panic!("{other:?}"),
    }
    // One byte short: the owner thread id is incomplete.
    assert!(matches!(decode(md, &payload[..26], 8), Err(Error::Malformed { offset: 19, .. })));
}

#[test]
fn contention_start_v2_with_4_byte_pointers_is_19_bytes() {
    let payload = p::contention_start_v2(4, 1, 0x1000, 0x2000, 99);
    assert_eq!(payload.len(), 19);
    match decode(rt(81, 2), &payload, 4).unwrap() {
        RuntimeEvent::ContentionStart {
            flags: 1,
            lock_id: Some(0x1000),
            object_id: Some(0x2000),
            owner_thread_id: Some(99),
        } => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn contention_start_v1_and_v0_have_no_identity() {
    let payload = p::contention_start_v1(1);
    match decode(rt(81, 1), &payload, 8).unwrap() {
        RuntimeEvent::ContentionStart { flags: 1, lock_id: None, object_id: None, owner_thread_id: None } => {}
        other => panic!("{other:?}"),
    }
    // Version 0 has an empty payload.
    assert!(matches!(
        decode(rt(81, 0), &[], 8).unwrap(),
        RuntimeEvent::ContentionStart { flags: 0, lock_id: None, .. }
    ));
}

#[test]
fn contention_stop_versions() {
    let v1 = p::contention_stop_v1(0, 1234.5);
    match decode(rt(91, 1), &v1, 8).unwrap() {
        RuntimeEvent::ContentionStop { flags: 0, duration_ns: Some(d) } => assert_eq!(d, 1234.5),
        other => panic!("{other:?}"),
    }
    let v0 = Payload::new().u8(1).u16(0).build();
    assert!(matches!(decode(rt(91, 0), &v0, 8).unwrap(), RuntimeEvent::ContentionStop { flags: 1, duration_ns: None }));
    assert!(decode(rt(91, 1), &v1[..5], 8).is_err());
}

#[test]
fn contention_lock_created() {
    let payload = p::contention_lock_created(8, 0xAA, 0xBB);
    assert_eq!(payload.len(), 18);
    assert!(matches!(
        decode(rt(90, 0), &payload, 8).unwrap(),
        RuntimeEvent::ContentionLockCreated { lock_id: 0xAA, object_id: 0xBB }
    ));
}

#[test]
fn gc_start_and_end() {
    let md = rt(1, 2);
    let payload = p::gc_start(7, 2, 1, 0);
    assert!(matches!(
        decode(md, &payload, 8).unwrap(),
        RuntimeEvent::GcStart { count: 7, depth: 2, reason: 1, gc_type: 0 }
    ));
    let v0 = Payload::new().u32(3).u32(4).build();
    assert!(matches!(
        decode(rt(1, 0), &v0, 8).unwrap(),
        RuntimeEvent::GcStart { count: 3, depth: 0, reason: 4, gc_type: 0 }
    ));
    assert!(matches!(decode(rt(2, 1), &p::gc_end(7, 2), 8).unwrap(), RuntimeEvent::GcEnd { count: 7, depth: 2 }));
    assert!(decode(rt(2, 1), &[1, 2, 3], 8).is_err());
}

fn nodes() -> Vec<BulkNode> {
    (0..5)
        .map(|i| BulkNode { address: 0x1000 + i * 32, size: 24 + i, type_id: 0xAB00 + i % 2, edge_count: i })
        .collect()
}

#[test]
fn bulk_node_both_pointer_sizes() {
    for ptr in [4, 8] {
        let payload = p::bulk_node(3, ptr, &nodes());
        assert_eq!(payload.len(), 10 + 5 * (ptr as usize + 24));
        let RuntimeEvent::BulkNode(it) = decode(rt(18, 0), &payload, ptr).unwrap() else { panic!() };
        assert_eq!((it.index, it.count), (3, 5));
        assert_eq!(it.size_hint(), (5, Some(5)));
        let got: Vec<_> = it.map(Result::unwrap).collect();
        assert_eq!(got, nodes());
    }
}

#[test]
fn bulk_node_short_payload_yields_complete_items_then_one_error() {
    let payload = p::bulk_node(0, 8, &nodes());
    let cut = &payload[..payload.len() - 1];
    let RuntimeEvent::BulkNode(it) = decode(rt(18, 0), cut, 8).unwrap() else { panic!() };
    let items: Vec<_> = it.collect();
    assert_eq!(items.len(), 5);
    assert!(items[..4].iter().all(Result::is_ok));
    // The fifth node should have started at 10 + 4 * 32.
    assert!(matches!(items[4], Err(Error::Malformed { offset: 138, .. })));
    // A header-only payload claiming items.
    let RuntimeEvent::BulkNode(it) = decode(rt(18, 0), &payload[..10], 8).unwrap() else { panic!() };
    assert_eq!(it.filter(Result::is_err).count(), 1);
    // Too short for the header at all.
    assert!(decode(rt(18, 0), &payload[..9], 8).is_err());
}

#[test]
fn bulk_edge_root_edge_and_cwt() {
    let edges =
        vec![BulkEdge { target: 0x10, referencing_field_id: 0 }, BulkEdge { target: 0x20, referencing_field_id: 5 }];
    let roots = vec![BulkRootEdge { rooted_node_address: 0x30, root_kind: 2, root_flags: 1, root_id: 0x40 }];
    let cwts = vec![BulkRootCwt { key_node_id: 1, value_node_id: 2, root_id: 3 }];
    for ptr in [4, 8] {
        let payload = p::bulk_edge(9, ptr, &edges);
        let RuntimeEvent::BulkEdge(it) = decode(rt(19, 0), &payload, ptr).unwrap() else { panic!() };
        assert_eq!(it.index, 9);
        assert_eq!(it.map(Result::unwrap).collect::<Vec<_>>(), edges);
        let payload = p::bulk_root_edge(0, ptr, &roots);
        assert_eq!(payload.len(), 10 + 2 * ptr as usize + 5);
        let RuntimeEvent::BulkRootEdge(it) = decode(rt(16, 0), &payload, ptr).unwrap() else { panic!() };
        assert_eq!(it.map(Result::unwrap).collect::<Vec<_>>(), roots);
        let payload = p::bulk_root_cwt(1, ptr, &cwts);
        let RuntimeEvent::BulkRootCwt(it) = decode(rt(17, 0), &payload, ptr).unwrap() else { panic!() };
        assert_eq!(it.index, 1);
        assert_eq!(it.map(Result::unwrap).collect::<Vec<_>>(), cwts);
    }
}

#[test]
fn bulk_type_with_generic_parameters() {
    let types = vec![
        TypeSpec {
            type_id: 0x100,
            module_id: 0x200,
            type_name_id: 1,
            flags: 0x2,
            cor_element_type: 0x12,
            name: "DiagScenarios.Customer".into(),
            type_parameters: vec![],
        },
        TypeSpec {
            type_id: 0x101,
            module_id: 0x200,
            type_name_id: 2,
            flags: 0,
            cor_element_type: 0x15,
            name: "System.Collections.Generic.List`1[[DiagScenarios.Customer]]".into(),
            type_parameters: vec![0x100],
        },
        TypeSpec { type_id: 0x102, name: String::new(), ..Default::default() },
    ];
    let payload = p::bulk_type(&types);
    let RuntimeEvent::BulkType(it) = decode(rt(15, 0), &payload, 8).unwrap() else { panic!() };
    assert_eq!(it.count, 3);
    let got: Vec<_> = it.map(Result::unwrap).collect();
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].name, "DiagScenarios.Customer");
    assert_eq!((got[0].type_id, got[0].module_id, got[0].flags, got[0].cor_element_type), (0x100, 0x200, 2, 0x12));
    assert_eq!(got[1].type_parameters.iter().collect::<Vec<_>>(), vec![0x100]);
    assert_eq!(got[1].type_parameters.get(0), Some(0x100));
    assert_eq!(got[1].type_parameters.get(1), None);
    assert!(got[2].name.is_empty());
    // A truncated type parameter list ends the iteration with an error.
    let RuntimeEvent::BulkType(it) = decode(rt(15, 0), &payload[..payload.len() - 30], 8).unwrap() else { panic!() };
    let items: Vec<_> = it.collect();
    assert!(items.last().unwrap().is_err());
    assert!(items.len() <= 3);
}

#[test]
fn bulk_root_static_var() {
    let vars =
        vec![StaticVarSpec { root_id: 1, object_id: 0xCAFE, type_id: 0x100, flags: 0, field_name: "Leaked".into() }];
    let payload = p::bulk_root_static_var(0xAD, &vars);
    let RuntimeEvent::BulkRootStaticVar(it) = decode(rt(38, 0), &payload, 8).unwrap() else { panic!() };
    assert_eq!((it.count, it.app_domain_id), (1, 0xAD));
    let v: Vec<_> = it.map(Result::unwrap).collect();
    assert_eq!(v[0].field_name.to_string(), "Leaked");
    assert_eq!(v[0].object_id, 0xCAFE);
    let RuntimeEvent::BulkRootStaticVar(mut it) = decode(rt(38, 0), &payload[..payload.len() - 1], 8).unwrap() else {
        panic!()
    };
    assert!(it.next().unwrap().is_err());
    assert!(it.next().is_none());
}

fn method() -> MethodSpec {
    MethodSpec {
        method_id: 1,
        module_id: 2,
        start_address: 0x7000,
        size: 0x40,
        token: 0x0600_0001,
        flags: 0,
        namespace: "DiagScenarios.Program".into(),
        name: "DeadlockFunc".into(),
        signature: "void  (class System.Object,class System.Object)".into(),
    }
}

#[test]
fn method_verbose_events_by_provider_and_id() {
    let payload = p::method_verbose(&method());
    let cases = [
        (RUNTIME_PROVIDER, 143, MethodEventKind::Load),
        (RUNTIME_PROVIDER, 144, MethodEventKind::Unload),
        (RUNTIME_PROVIDER, 139, MethodEventKind::DcStart),
        (RUNTIME_PROVIDER, 140, MethodEventKind::DcEnd),
        (RUNDOWN_PROVIDER, 143, MethodEventKind::DcStart),
        (RUNDOWN_PROVIDER, 144, MethodEventKind::DcEnd),
    ];
    for (provider, id, kind) in cases {
        let md = native_metadata(1, provider, id, 1);
        let RuntimeEvent::MethodLoad(m) = decode(&md, &payload, 8).unwrap() else { panic!("{provider} {id}") };
        assert_eq!(m.kind, kind);
        assert_eq!((m.method_id, m.module_id, m.start_address, m.size, m.token), (1, 2, 0x7000, 0x40, 0x0600_0001));
        assert_eq!(m.name, "DeadlockFunc");
        assert_eq!(m.full_name(), "DiagScenarios.Program.DeadlockFunc(class System.Object,class System.Object)");
        assert!(m.contains(0x7000) && m.contains(0x703f));
        assert!(!m.contains(0x7040) && !m.contains(0x6fff));
    }
    // Missing terminator of the signature.
    let cut = &payload[..payload.len() - 4];
    assert!(decode(&native_metadata(1, RUNDOWN_PROVIDER, 144, 1), cut, 8).is_err());
}

#[test]
fn module_load_and_rundown() {
    let payload = p::module_load(0x11, 0x22, "/app/app.dll", "");
    for (provider, id) in [(RUNTIME_PROVIDER, 152), (RUNDOWN_PROVIDER, 153), (RUNDOWN_PROVIDER, 154)] {
        let md = native_metadata(1, provider, id, 2);
        match decode(&md, &payload, 8).unwrap() {
            RuntimeEvent::ModuleLoad { module_id: 0x11, assembly_id: 0x22, il_path, native_path } => {
                assert_eq!(il_path.to_string_lossy(), "/app/app.dll");
                assert!(native_path.is_empty());
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn thread_sample_and_unknown_events() {
    let md = native_metadata(1, SAMPLE_PROFILER_PROVIDER, 0, 0);
    assert!(matches!(decode(&md, &p::thread_sample(2), 8).unwrap(), RuntimeEvent::ThreadSample { kind: 2 }));
    assert!(decode(&md, &[1, 0], 8).is_err());
    // Same ids under another provider are not runtime events.
    let other = native_metadata(1, "My-EventSource", 18, 0);
    assert!(matches!(decode(&other, &[], 8).unwrap(), RuntimeEvent::Other));
    assert!(matches!(decode(rt(999, 0), &[], 8).unwrap(), RuntimeEvent::Other));
    assert!(matches!(decode(&native_metadata(1, RUNDOWN_PROVIDER, 18, 0), &[], 8).unwrap(), RuntimeEvent::Other));
}

#[test]
fn utf16_view_handles_non_ascii_and_invalid_units() {
    let md = native_metadata(1, RUNDOWN_PROVIDER, 144, 1);
    let mut m = method();
    m.name = "Größe€𝄞".into();
    let payload = p::method_verbose(&m);
    let RuntimeEvent::MethodLoad(info) = decode(&md, &payload, 8).unwrap() else { panic!() };
    assert_eq!(info.name.to_string(), "Größe€𝄞");
    assert!(info.name.eq_str("Größe€𝄞"));
    assert!(!info.name.eq_str("Größe€"));
    let lone = nettrace::events::Utf16Str::from_bytes(&[0x00, 0xD8, 0x41, 0x00, 0x7]);
    assert_eq!(lone.to_string_lossy(), "\u{FFFD}A");
}

#[test]
fn exception_thrown_v1_on_both_pointer_sizes_and_every_truncation_is_an_error() {
    for ptr in [8u32, 4] {
        let payload =
            p::exception_thrown_v1(ptr, "System.TimeoutException", "took too long", 0x7f00_1234, 0x8013_1505, 0x10);
        let md = rt(80, 1);
        match decode(md, &payload, ptr).unwrap() {
            RuntimeEvent::ExceptionThrown(e) => {
                assert_eq!(e.exception_type.to_string_lossy(), "System.TimeoutException");
                assert_eq!(e.message.to_string_lossy(), "took too long");
                assert_eq!((e.throw_ip, e.hresult, e.flags), (0x7f00_1234, 0x8013_1505, 0x10));
            }
            other => panic!("{other:?}"),
        }
        // The ClrInstanceID (last 2 bytes) is not read; every shorter cut misses a field.
        for cut in 0..payload.len() - 2 {
            assert!(
                matches!(decode(md, &payload[..cut], ptr), Err(Error::Malformed { .. })),
                "cut at {cut} of {}",
                payload.len()
            );
        }
    }
    // An empty message is a message (Exception.Message is never null, but may be "").
    let payload = p::exception_thrown_v1(8, "App.E", "", 0, 0, 0);
    assert!(
        matches!(decode(rt(80, 1), &payload, 8).unwrap(), RuntimeEvent::ExceptionThrown(e) if e.message.is_empty())
    );
    // Version 0 has no payload: an error, not an exception without a type.
    assert!(decode(rt(80, 0), &[], 8).is_err());
    // An unterminated string is malformed, not read past.
    assert!(decode(rt(80, 1), &[b'A', 0, b'B'], 8).is_err());
}
