//! Shared helpers for the integration tests.
#![allow(dead_code)]

use std::io::Read;

use nettrace::{Event, Reader, ReaderStats, Step, TraceInfo};

/// An event copied out of the reader's buffers.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnedEvent {
    pub provider: String,
    pub event_id: u32,
    pub version: u32,
    pub event_name: String,
    pub metadata_id: u32,
    pub sequence_number: u32,
    pub thread_id: u64,
    pub capture_thread_id: u64,
    pub processor_number: u32,
    pub stack_id: u32,
    pub stack: Vec<u64>,
    pub timestamp: i64,
    pub activity_id: [u8; 16],
    pub related_activity_id: [u8; 16],
    pub payload: Vec<u8>,
}

impl OwnedEvent {
    pub fn from_event(e: &Event<'_>) -> Self {
        OwnedEvent {
            provider: e.metadata.provider.clone(),
            event_id: e.metadata.event_id,
            version: e.metadata.version,
            event_name: e.metadata.event_name.clone(),
            metadata_id: e.metadata.metadata_id,
            sequence_number: e.sequence_number,
            thread_id: e.thread_id,
            capture_thread_id: e.capture_thread_id,
            processor_number: e.processor_number,
            stack_id: e.stack_id,
            stack: e.stack.to_vec(),
            timestamp: e.timestamp,
            activity_id: e.activity_id,
            related_activity_id: e.related_activity_id,
            payload: e.payload.to_vec(),
        }
    }
}

/// Feed `data` to a fresh reader in chunks of the given sizes (cycled), driving
/// `next_block` until End. Calls `f` for every event.
pub fn parse_chunked(
    data: &[u8],
    chunk_sizes: &[usize],
    f: &mut dyn FnMut(&Event<'_>),
) -> Result<(ReaderStats, Option<TraceInfo>), nettrace::Error> {
    let mut r = Reader::new();
    let mut pos = 0;
    let mut i = 0;
    loop {
        match r.next_block(f)? {
            Step::Block => {}
            Step::End => return Ok((r.stats(), r.trace_info().cloned())),
            Step::NeedData => {
                if pos >= data.len() {
                    r.finish_input();
                    continue;
                }
                let n = chunk_sizes[i % chunk_sizes.len()].max(1);
                i += 1;
                let end = (pos + n).min(data.len());
                r.feed(&data[pos..end]);
                pos = end;
            }
        }
    }
}

/// All events of a stream, chunked.
pub fn collect(data: &[u8], chunk_sizes: &[usize]) -> Result<(Vec<OwnedEvent>, ReaderStats), nettrace::Error> {
    let mut out = Vec::new();
    let (stats, _) = parse_chunked(data, chunk_sizes, &mut |e| out.push(OwnedEvent::from_event(e)))?;
    Ok((out, stats))
}

/// A gzip'd fixture from tests/data.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/{name}.nettrace.gz", env!("CARGO_MANIFEST_DIR"));
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(file).read_to_end(&mut out).expect("gunzip fixture");
    out
}

pub const FIXTURES: &[&str] = &[
    "contention-net31",
    "contention-net8",
    "counters-net31",
    "counters-net8",
    "gcdump-net31",
    "gcdump-net8",
    "stacks-net31",
    "stacks-net8",
];
