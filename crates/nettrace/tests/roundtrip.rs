//! Property tests: streams from the test writer round-trip through the reader under any
//! chunking; truncation is always `Truncated`; corruption is an error, never a panic.

mod common;

use common::{OwnedEvent, collect};
use nettrace::testing::{EventSpec, TraceWriter, WriterOptions, native_metadata};
use nettrace::{EventMetadata, FieldMetadata, TypeCode};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Segment {
    stacks: Vec<Vec<u64>>,
    blocks: Vec<Vec<EventSpec>>,
}

#[derive(Debug, Clone)]
struct Scenario {
    opts: WriterOptions,
    metadata: Vec<EventMetadata>,
    segments: Vec<Segment>,
}

fn metadata(n: u32) -> Vec<EventMetadata> {
    (1..=n)
        .map(|id| {
            let mut m = native_metadata(id, "Provider-X", id * 10, id % 3);
            if id % 2 == 0 {
                m.event_name = format!("Event{id}");
                m.fields = vec![FieldMetadata::scalar("a", TypeCode::Int32)];
            }
            m
        })
        .collect()
}

fn event(n_meta: u32, n_stacks: usize) -> impl Strategy<Value = EventSpec> {
    (
        1..=n_meta,
        any::<u32>(),
        prop_oneof![Just(100u64), any::<u64>()],
        prop_oneof![Just(100u64), 0..4u64, any::<u64>()],
        prop_oneof![Just(0u32), any::<u32>()],
        0..=n_stacks as u32,
        any::<i64>(),
        prop_oneof![3 => Just([0u8; 16]), 1 => any::<[u8; 16]>()],
        prop_oneof![3 => Just([0u8; 16]), 1 => any::<[u8; 16]>()],
        any::<bool>(),
        proptest::collection::vec(any::<u8>(), 0..40),
    )
        .prop_map(|(m, seq, tid, ctid, proc_, stack, ts, act, rel, sorted, payload)| EventSpec {
            metadata_id: m,
            sequence_number: seq,
            thread_id: tid,
            capture_thread_id: ctid,
            processor_number: proc_,
            stack_id: stack,
            timestamp: ts,
            activity_id: act,
            related_activity_id: rel,
            sorted,
            payload,
        })
}

fn segment(n_meta: u32, ptr: u32) -> impl Strategy<Value = Segment> {
    let ip = if ptr == 4 { (0..=u64::from(u32::MAX)).boxed() } else { any::<u64>().boxed() };
    proptest::collection::vec(proptest::collection::vec(ip, 0..6), 0..4).prop_flat_map(move |stacks| {
        let n = stacks.len();
        let blocks = proptest::collection::vec(proptest::collection::vec(event(n_meta, n), 1..12), 1..4);
        (Just(stacks), blocks).prop_map(|(stacks, blocks)| Segment { stacks, blocks })
    })
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (prop_oneof![Just(4u32), Just(8u32)], any::<bool>(), 1..5u32).prop_flat_map(|(ptr, compressed, n_meta)| {
        proptest::collection::vec(segment(n_meta, ptr), 1..4).prop_map(move |segments| Scenario {
            opts: WriterOptions { pointer_size: ptr, compressed, ..WriterOptions::default() },
            metadata: metadata(n_meta),
            segments,
        })
    })
}

/// Write the scenario and compute the events a correct reader must produce.
fn build(s: &Scenario) -> (Vec<u8>, Vec<OwnedEvent>) {
    let mut w = TraceWriter::new(s.opts);
    w.metadata_block(&s.metadata);
    let mut expected = Vec::new();
    for (i, seg) in s.segments.iter().enumerate() {
        if !seg.stacks.is_empty() {
            w.stack_block(1, &seg.stacks);
        }
        for block in &seg.blocks {
            w.event_block(block);
            for e in block {
                let m = &s.metadata[e.metadata_id as usize - 1];
                let stack = match e.stack_id {
                    0 => Vec::new(),
                    id => seg.stacks[id as usize - 1].clone(),
                };
                expected.push(OwnedEvent {
                    provider: m.provider.clone(),
                    event_id: m.event_id,
                    version: m.version,
                    event_name: m.event_name.clone(),
                    metadata_id: e.metadata_id,
                    sequence_number: e.sequence_number,
                    thread_id: e.thread_id,
                    capture_thread_id: e.capture_thread_id,
                    processor_number: e.processor_number,
                    stack_id: e.stack_id,
                    stack,
                    timestamp: e.timestamp,
                    activity_id: e.activity_id,
                    related_activity_id: e.related_activity_id,
                    payload: e.payload.clone(),
                });
            }
        }
        w.sequence_point(i as i64, &[(100, 1)]);
    }
    (w.finish(), expected)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn round_trips_under_any_chunking(s in scenario(), sizes in proptest::collection::vec(1usize..300, 1..8)) {
        let (data, expected) = build(&s);
        let (whole, stats) = collect(&data, &[data.len()]).unwrap();
        prop_assert_eq!(&whole, &expected);
        prop_assert_eq!(stats.events, expected.len() as u64);
        prop_assert_eq!(stats.bytes_consumed, data.len() as u64);
        let (chunked, stats2) = collect(&data, &sizes).unwrap();
        prop_assert_eq!(&chunked, &expected);
        prop_assert_eq!(stats2, stats);
    }

    #[test]
    fn truncation_is_always_truncated(s in scenario(), cut in any::<prop::sample::Index>(), chunk in 1usize..200) {
        let (data, _) = build(&s);
        let cut = cut.index(data.len());
        let r = collect(&data[..cut], &[chunk]);
        prop_assert!(matches!(r, Err(nettrace::Error::Truncated { .. })), "{:?}", r);
    }

    #[test]
    fn corruption_never_panics(
        s in scenario(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        chunk in 1usize..500,
    ) {
        let (mut data, expected) = build(&s);
        for (at, v) in flips {
            let i = at.index(data.len());
            data[i] = v;
        }
        // Any outcome but a panic or a hang is acceptable; a successful parse cannot
        // produce more events than were written plus what corruption could forge.
        if let Ok((events, _)) = collect(&data, &[chunk]) {
            prop_assert!(events.len() <= expected.len() + data.len());
        }
        // Decoders must survive whatever the corrupted events contain.
        let _ = common::parse_chunked(&data, &[chunk], &mut |e| {
            let _ = nettrace::events::decode_runtime(e, 8);
            let _ = nettrace::payload::decode_event(e);
        });
    }
}

#[test]
fn decreasing_timestamps_and_wrapping_sequences_survive_compression() {
    let mut w = TraceWriter::default();
    w.metadata_block(&metadata(1));
    let mut a = EventSpec::new(1, vec![]);
    a.timestamp = i64::MAX;
    a.sequence_number = u32::MAX;
    let mut b = EventSpec::new(1, vec![]);
    b.timestamp = i64::MIN;
    b.sequence_number = 0;
    w.event_block(&[a, b]);
    let (events, _) = collect(&w.finish(), &[9]).unwrap();
    assert_eq!((events[0].timestamp, events[1].timestamp), (i64::MAX, i64::MIN));
    assert_eq!((events[0].sequence_number, events[1].sequence_number), (u32::MAX, 0));
}
