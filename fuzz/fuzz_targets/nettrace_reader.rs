//! Feeds arbitrary bytes to the nettrace reader in arbitrary chunking, decodes every event
//! with every decoder, and checks that chunked and whole-input parsing agree.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nettrace::events::{RuntimeEvent, decode_runtime};
use nettrace::{Event, Reader, Step};

/// Order-sensitive digest of everything observable about the events.
#[derive(Default, PartialEq, Debug)]
struct Digest {
    events: u64,
    hash: u64,
}

impl Digest {
    fn mix(&mut self, v: u64) {
        self.hash = (self.hash ^ v).wrapping_mul(0x100_0000_01b3).rotate_left(7);
    }
}

fn exercise(e: &Event<'_>, ptr: u32, d: &mut Digest) {
    d.events += 1;
    d.mix(u64::from(e.metadata.metadata_id));
    d.mix(u64::from(e.sequence_number));
    d.mix(e.thread_id ^ e.capture_thread_id.rotate_left(17));
    d.mix(e.timestamp as u64);
    d.mix(e.stack.len() as u64);
    d.mix(e.stack.iter().fold(0, |a, ip| a ^ ip));
    d.mix(e.payload.len() as u64);
    let _ = nettrace::payload::decode_event(e);
    let _ = nettrace::counters::decode_counter(e);
    let decoded = decode_runtime(e, ptr);
    if let Ok(ev) = decoded {
        match ev {
            RuntimeEvent::BulkType(it) => it.for_each(|t| {
                if let Ok(t) = t {
                    let _ = t.name.to_string_lossy();
                    t.type_parameters.iter().for_each(drop);
                }
            }),
            RuntimeEvent::BulkNode(it) => it.for_each(drop),
            RuntimeEvent::BulkEdge(it) => it.for_each(drop),
            RuntimeEvent::BulkRootEdge(it) => it.for_each(drop),
            RuntimeEvent::BulkRootStaticVar(it) => it.for_each(drop),
            RuntimeEvent::BulkRootCwt(it) => it.for_each(drop),
            RuntimeEvent::MethodLoad(m) => {
                let _ = m.full_name();
            }
            _ => {}
        }
    }
}

fn run(data: &[u8], chunks: &[u8]) -> (Result<Step, String>, Digest) {
    let mut r = Reader::new();
    let mut d = Digest::default();
    let mut pos = 0;
    let mut i = 0;
    let mut steps = 0u64;
    loop {
        steps += 1;
        assert!(steps < 10_000_000, "reader does not make progress");
        let ptr = r.trace_info().map_or(8, |t| t.pointer_size);
        let step = r.next_block(&mut |e| exercise(e, ptr, &mut d));
        match step {
            Ok(Step::Block) => {}
            Ok(Step::End) => return (Ok(Step::End), d),
            Err(e) => return (Err(format!("{e:?}")), d),
            Ok(Step::NeedData) => {
                if pos >= data.len() {
                    r.finish_input();
                    continue;
                }
                let n = if chunks.is_empty() { data.len() } else { usize::from(chunks[i % chunks.len()]) + 1 };
                i += 1;
                let end = (pos + n).min(data.len());
                r.feed(&data[pos..end]);
                pos = end;
            }
        }
    }
}

fuzz_target!(|input: &[u8]| {
    // First byte: how many chunk-size bytes follow; the rest is the stream.
    let Some((&k, rest)) = input.split_first() else {
        return;
    };
    let k = usize::from(k % 8).min(rest.len());
    let (chunks, data) = rest.split_at(k);
    let (whole, dw) = run(data, &[]);
    let (chunked, dc) = run(data, chunks);
    assert_eq!(dw, dc, "events differ between chunkings");
    assert_eq!(whole.is_ok(), chunked.is_ok(), "{whole:?} vs {chunked:?}");
});
