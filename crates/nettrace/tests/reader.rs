//! Reader behaviour on streams from the test writer: framing, errors, caches, limits.

mod common;

use common::{OwnedEvent, collect, parse_chunked};
use nettrace::testing::payloads::{self as p, Payload};
use nettrace::testing::{EventSpec, TraceWriter, WriterOptions, native_metadata};
use nettrace::{Error, EventMetadata, FieldMetadata, Limits, Reader, Step, TypeCode};

fn md(id: u32) -> EventMetadata {
    native_metadata(id, nettrace::events::RUNTIME_PROVIDER, 18, 0)
}

fn simple_stream(opts: WriterOptions) -> Vec<u8> {
    let mut w = TraceWriter::new(opts);
    w.metadata_block(&[md(1), md(2)]);
    w.stack_block(1, &[vec![0x10, 0x20, 0x30], vec![]]);
    let mut e1 = EventSpec::new(1, vec![1, 2, 3]);
    e1.stack_id = 1;
    let mut e2 = EventSpec::new(2, vec![]);
    e2.sequence_number = 2;
    e2.stack_id = 2;
    e2.timestamp = 10_050;
    w.event_block(&[e1, e2]);
    w.finish()
}

fn run_all(data: &[u8]) -> Result<Vec<OwnedEvent>, Error> {
    collect(data, &[data.len().max(1)]).map(|(e, _)| e)
}

#[test]
fn decodes_header_fields_and_stacks_both_encodings_and_pointer_sizes() {
    for compressed in [true, false] {
        for pointer_size in [4, 8] {
            let data = simple_stream(WriterOptions { compressed, pointer_size, ..Default::default() });
            let mut r = Reader::new();
            r.feed(&data);
            let mut events = Vec::new();
            let mut steps = Vec::new();
            loop {
                let s = r.next_block(&mut |e| events.push(OwnedEvent::from_event(e))).unwrap();
                steps.push(s);
                if s != Step::Block {
                    break;
                }
            }
            // Trace, metadata, stack, event block, then End.
            assert_eq!(steps, vec![Step::Block, Step::Block, Step::Block, Step::Block, Step::End]);
            let info = r.trace_info().unwrap();
            assert_eq!((info.pointer_size, info.process_id, info.qpc_frequency), (pointer_size, 4242, 1_000_000_000));
            assert_eq!(info.sync_time_utc[0], 2024);
            assert_eq!(events.len(), 2);
            assert_eq!(events[0].stack, vec![0x10, 0x20, 0x30]);
            assert_eq!(events[0].payload, vec![1, 2, 3]);
            assert_eq!((events[0].sequence_number, events[0].thread_id, events[0].timestamp), (1, 100, 10_000));
            assert!(events[1].stack.is_empty());
            assert_eq!(events[1].stack_id, 2);
            assert_eq!(events[1].timestamp, 10_050);
            let stats = r.stats();
            assert_eq!(
                (stats.events, stats.metadata, stats.blocks, stats.bytes_consumed),
                (2, 2, 4, data.len() as u64)
            );
            // End is sticky; feeding after End is ignored.
            r.feed(&[1, 2, 3]);
            assert_eq!(r.next_block(&mut |_| panic!()).unwrap(), Step::End);
        }
    }
}

#[test]
fn bad_magic_and_v6_are_refused() {
    let mut r = Reader::new();
    r.feed(b"Nettrahe");
    assert!(matches!(r.next_block(&mut |_| {}), Err(Error::BadMagic)));
    // Detected from the first differing byte, without waiting for more input.
    let mut r = Reader::new();
    r.feed(b"X");
    assert!(matches!(r.next_block(&mut |_| {}), Err(Error::BadMagic)));
    let mut r = Reader::new();
    r.feed(b"Nettrace\x14\x00\x00\x00!FastSerializatioX.1");
    assert!(matches!(r.next_block(&mut |_| {}), Err(Error::BadMagic)));

    let mut v6 = b"Nettrace".to_vec();
    v6.extend_from_slice(&0u32.to_le_bytes());
    v6.extend_from_slice(&6u32.to_le_bytes());
    v6.extend_from_slice(&0u32.to_le_bytes());
    let mut r = Reader::new();
    r.feed(&v6[..14]);
    assert_eq!(r.next_block(&mut |_| {}).unwrap(), Step::NeedData);
    r.feed(&v6[14..]);
    let err = r.next_block(&mut |_| {}).unwrap_err();
    assert!(matches!(err, Error::UnsupportedVersion { major: 6 }));
    assert_eq!(err.to_string(), "nettrace V6 streams are not supported yet");
    // Poisoned afterwards.
    assert!(matches!(r.next_block(&mut |_| {}), Err(Error::Poisoned)));
}

#[test]
fn trace_object_version_is_checked() {
    let mut data = simple_stream(WriterOptions::default());
    // Trace object's version field sits right after "Nettrace", the FS header and 3 tags.
    let at = 8 + 4 + 20 + 3;
    data[at..at + 4].copy_from_slice(&3i32.to_le_bytes());
    assert!(matches!(run_all(&data), Err(Error::UnsupportedVersion { major: 3 })));
}

#[test]
fn truncation_anywhere_is_truncated() {
    let data = simple_stream(WriterOptions::default());
    for cut in 0..data.len() {
        let r = collect(&data[..cut], &[5]);
        assert!(matches!(r, Err(Error::Truncated { .. })), "cut {cut}: {r:?}");
    }
    let mut r = Reader::new();
    r.feed(&data[..50]);
    assert_eq!(r.next_block(&mut |_| {}).unwrap(), Step::NeedData);
    r.finish_input();
    assert!(matches!(r.next_block(&mut |_| {}), Err(Error::Truncated { offset: 50 })));
}

#[test]
fn oversized_block_is_rejected_before_buffering_it() {
    let mut w = TraceWriter::default();
    w.raw_block("EventBlock", &vec![0u8; 4096]);
    let data = w.finish();
    let mut r = Reader::with_limits(Limits { max_block_size: 1024, ..Limits::default() });
    // Only the block header is needed to know it is too large.
    let header_end = data.len() - 4096 - 2;
    r.feed(&data[..header_end]);
    let mut got = None;
    for _ in 0..4 {
        match r.next_block(&mut |_| {}) {
            Ok(Step::Block) => continue,
            other => {
                got = Some(other);
                break;
            }
        }
    }
    assert!(matches!(got, Some(Err(Error::BlockTooLarge { size: 4096, limit: 1024 }))), "{got:?}");
}

#[test]
fn unknown_metadata_id_and_block_before_trace_are_errors() {
    let mut w = TraceWriter::default();
    w.metadata_block(&[md(1)]);
    w.event_block(&[EventSpec::new(7, vec![])]);
    assert!(matches!(run_all(&w.finish()), Err(Error::UnknownMetadataId { id: 7, .. })));

    let mut w = TraceWriter::default();
    w.raw_block("FancyBlock", &[0; 8]);
    assert!(matches!(run_all(&w.finish()), Err(Error::UnknownObject { .. })));

    // A stream whose first object is a block, not the Trace object.
    let mut data = b"Nettrace\x14\x00\x00\x00!FastSerialization.1".to_vec();
    data.extend_from_slice(&[5, 5, 1, 2, 0, 0, 0, 2, 0, 0, 0, 7, 0, 0, 0]);
    data.extend_from_slice(b"SPBlock");
    data.push(6);
    data.extend_from_slice(&12u32.to_le_bytes());
    data.push(0); // pad the body to offset 60
    data.extend_from_slice(&[0; 12]);
    data.extend_from_slice(&[6, 1]);
    let r = run_all(&data);
    assert!(matches!(r, Err(Error::Malformed { what: "block before the Trace object", .. })), "{r:?}");
}

#[test]
fn stack_cache_is_flushed_at_sequence_points() {
    let mut w = TraceWriter::default();
    w.metadata_block(&[md(1)]);
    w.stack_block(1, &[vec![0xAA]]);
    let mut e = EventSpec::new(1, vec![]);
    e.stack_id = 1;
    w.event_block(std::slice::from_ref(&e));
    w.sequence_point(20_000, &[(100, 1)]);
    e.sequence_number = 2;
    w.event_block(std::slice::from_ref(&e)); // refers to a stack from before the SP
    w.stack_block(1, &[vec![0xBB, 0xCC]]); // the runtime restarts ids after an SP
    e.sequence_number = 3;
    w.event_block(&[e]);
    let (events, stats) = collect(&w.finish(), &[7]).unwrap();
    assert_eq!(events[0].stack, vec![0xAA]);
    assert!(events[1].stack.is_empty());
    assert_eq!(events[2].stack, vec![0xBB, 0xCC]);
    assert_eq!(stats.unresolved_stacks, 1);
    assert_eq!(stats.sequence_points, 1);
}

#[test]
fn sequence_gaps_are_counted_per_capture_thread() {
    let mut w = TraceWriter::default();
    w.metadata_block(&[md(1)]);
    let ev = |seq, thread| {
        let mut e = EventSpec::new(1, vec![]);
        e.sequence_number = seq;
        e.capture_thread_id = thread;
        e
    };
    // Thread 1: 1,2,5 (2 dropped). Thread 2: 1,2,3 interleaved. Thread 1 then restarts at 1
    // (a new OS thread with a recycled id: not a drop).
    w.event_block(&[ev(1, 1), ev(1, 2), ev(2, 1), ev(2, 2), ev(5, 1), ev(3, 2)]);
    w.event_block(&[ev(1, 1), ev(2, 1)]);
    // The sequence point says thread 2 attempted 10 events: 7 more were dropped.
    w.sequence_point(0, &[(2, 10), (3, 4)]);
    w.event_block(&[ev(11, 2), ev(5, 3)]);
    let (events, stats) = collect(&w.finish(), &[64]).unwrap();
    assert_eq!(events.len(), 10);
    assert_eq!(stats.sequence_gaps, 2);
    assert_eq!(stats.dropped_events, 2 + 7);
}

#[test]
fn metadata_v1_nested_objects_and_v5_tags_round_trip() {
    let nested = FieldMetadata {
        name: "Payload".into(),
        type_code: TypeCode::Object,
        nested: vec![FieldMetadata::scalar("Name", TypeCode::String), FieldMetadata::scalar("Mean", TypeCode::Double)],
        element: None,
    };
    let array = FieldMetadata {
        name: "Values".into(),
        type_code: TypeCode::Array,
        nested: vec![],
        element: Some(Box::new(FieldMetadata {
            name: "Values".into(),
            type_code: TypeCode::Object,
            nested: vec![FieldMetadata::scalar("A", TypeCode::UInt64)],
            element: None,
        })),
    };
    let with_opcode = EventMetadata {
        metadata_id: 5,
        provider: "My-Provider".into(),
        event_id: 12,
        event_name: "WorkStart".into(),
        keywords: 0xF0,
        version: 3,
        level: 2,
        opcode: Some(1),
        fields: vec![nested.clone()],
    };
    let with_array = EventMetadata {
        metadata_id: 6,
        opcode: None,
        fields: vec![FieldMetadata::scalar("n", TypeCode::Int32), array],
        ..with_opcode.clone()
    };
    let forced_v2 = EventMetadata { metadata_id: 7, fields: vec![nested], ..with_opcode.clone() };
    let mut w = TraceWriter::default();
    w.metadata_block(&[with_opcode.clone(), with_array.clone()]);
    w.metadata_block_with(std::slice::from_ref(&forced_v2), true);
    let payload = Payload::new().i32(2).u16(2).u64(10).u64(20).build();
    w.event_block(&[EventSpec::new(5, vec![]), EventSpec::new(6, payload), EventSpec::new(7, vec![])]);
    let data = w.finish();
    let mut seen = Vec::new();
    parse_chunked(&data, &[3], &mut |e| {
        seen.push(e.metadata.clone());
        if e.metadata.metadata_id == 6 {
            let v = nettrace::payload::decode_event(e).unwrap();
            assert_eq!(
                format!("{v:?}"),
                r#"[("n", I32(2)), ("Values", Array([Object([("A", U64(10))]), Object([("A", U64(20))])]))]"#
            );
        }
    })
    .unwrap();
    assert_eq!(seen, vec![with_opcode, with_array, forced_v2]);
}

#[test]
fn unparsable_field_lists_are_dropped_not_fatal() {
    let good = EventMetadata { fields: vec![FieldMetadata::scalar("x", TypeCode::Int32)], ..md(1) };
    let mut record = nettrace::testing::encode_metadata(&good, false);
    // Corrupt the field count to a huge value: the list cannot be parsed.
    let n = record.len();
    record[n - 4 - 4 - 4..n - 4 - 4].copy_from_slice(&1000u32.to_le_bytes());
    let mut w = TraceWriter::default();
    let mut body = Vec::new();
    body.extend_from_slice(&20u16.to_le_bytes());
    body.extend_from_slice(&0u16.to_le_bytes());
    body.extend_from_slice(&[0; 16]);
    let blob_len = 76 + record.len();
    let padded = blob_len.next_multiple_of(4);
    body.extend_from_slice(&(padded as u32).to_le_bytes());
    body.extend_from_slice(&[0; 72]);
    body.extend_from_slice(&(record.len() as u32).to_le_bytes());
    body.extend_from_slice(&record);
    body.resize(body.len() + padded - blob_len, 0);
    w.raw_block("MetadataBlock", &body);
    w.event_block(&[EventSpec::new(1, vec![1, 0, 0, 0])]);
    let (events, stats) = collect(&w.finish(), &[11]).unwrap();
    assert_eq!(stats.metadata_fields_dropped, 1);
    assert_eq!(events.len(), 1);
}

#[test]
fn memory_stays_bounded_by_the_largest_block() {
    // ~20 MB of 64 KiB blocks fed in 1 MiB chunks: the buffer must never approach the
    // stream size (it is compacted as blocks are consumed).
    let mut w = TraceWriter::default();
    w.metadata_block(&[md(1)]);
    let nodes: Vec<_> =
        (0..2000).map(|i| nettrace::events::BulkNode { address: i, size: 24, type_id: 1, edge_count: 0 }).collect();
    let payload = p::bulk_node(0, 8, &nodes);
    for i in 0..400u32 {
        let mut e = EventSpec::new(1, payload.clone());
        e.sequence_number = i + 1;
        w.event_block(&[e]);
    }
    let data = w.finish();
    assert!(data.len() > 25_000_000);
    let mut r = Reader::new();
    let mut max_cap = 0;
    let mut events = 0u64;
    for chunk in data.chunks(1 << 20) {
        r.feed(chunk);
        max_cap = max_cap.max(r.buffer_capacity());
        while r.next_block(&mut |_| events += 1).unwrap() == Step::Block {}
    }
    r.finish_input();
    assert_eq!(r.next_block(&mut |_| {}).unwrap(), Step::End);
    assert_eq!(events, 400);
    assert!(max_cap < 4 << 20, "buffer grew to {max_cap}");
}

#[test]
fn feeding_one_byte_at_a_time_works_and_is_not_quadratic() {
    let mut w = TraceWriter::default();
    w.metadata_block(&[md(1)]);
    let payload = vec![7u8; 60_000];
    for i in 0..20u32 {
        let mut e = EventSpec::new(1, payload.clone());
        e.sequence_number = i + 1;
        w.event_block(&[e]);
    }
    let data = w.finish();
    let start = std::time::Instant::now();
    let (events, stats) = collect(&data, &[1]).unwrap();
    assert_eq!(events.len(), 20);
    assert_eq!(stats.bytes_consumed, data.len() as u64);
    // 1.2 MB byte by byte; quadratic buffering would take minutes.
    assert!(start.elapsed().as_secs() < 20);
}

#[test]
fn read_from_reads_a_whole_stream_from_io() {
    let data = simple_stream(WriterOptions::default());
    let mut n = 0;
    let stats = nettrace::read_from(std::io::Cursor::new(&data), &mut |_| n += 1).unwrap();
    assert_eq!((n, stats.events), (2, 2));
    // Bytes after the end tag are not read into the result.
    let mut longer = data.clone();
    longer.extend_from_slice(&[0xFF; 10]);
    assert!(nettrace::read_from(std::io::Cursor::new(&longer), &mut |_| {}).is_ok());
    let r = nettrace::read_from(std::io::Cursor::new(&data[..data.len() - 1]), &mut |_| {});
    assert!(matches!(r, Err(Error::Truncated { .. })));
}

#[test]
fn uncompressed_blobs_whose_size_excludes_the_padding_are_realigned() {
    // Two events with 1-byte payloads; EventSize = 77 (no padding counted) and 3 zero
    // bytes of padding after each, so the next blob starts 4-byte aligned.
    let mut body = Vec::new();
    body.extend_from_slice(&20u16.to_le_bytes());
    body.extend_from_slice(&0u16.to_le_bytes());
    body.extend_from_slice(&[0; 16]);
    for (seq, byte) in [(1u32, 0xAAu8), (2, 0xBB)] {
        body.extend_from_slice(&77u32.to_le_bytes());
        body.extend_from_slice(&1u32.to_le_bytes()); // metadata id, sorted
        body.extend_from_slice(&seq.to_le_bytes());
        body.extend_from_slice(&5u64.to_le_bytes());
        body.extend_from_slice(&5u64.to_le_bytes());
        body.extend_from_slice(&0u32.to_le_bytes());
        body.extend_from_slice(&0u32.to_le_bytes());
        body.extend_from_slice(&(seq as i64 * 10).to_le_bytes());
        body.extend_from_slice(&[0; 32]);
        body.extend_from_slice(&1u32.to_le_bytes());
        body.push(byte);
        body.extend_from_slice(&[0; 3]);
    }
    let mut w = TraceWriter::new(WriterOptions { compressed: false, ..Default::default() });
    w.metadata_block(&[md(1)]);
    w.raw_block("EventBlock", &body);
    let events = run_all(&w.finish()).unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!((events[0].payload.clone(), events[1].payload.clone()), (vec![0xAA], vec![0xBB]));
    assert_eq!(events[1].timestamp, 20);
}
