//! Decode throughput over a nettrace stream: framing + event headers + typed iteration of
//! every BulkNode/BulkEdge item (the gcdump hot path).
//!
//! Input: the file named by `NETTRACE_BENCH_FILE`, or else a synthetic stream of at least
//! 50 MB of GC bulk events built with the test writer. Besides criterion's figures it
//! prints MB/s for the decode and for a plain sum over the same bytes (the memory read
//! floor) measured in the same run, and their ratio.
//!
//! Run: `cargo bench -p nettrace --bench decode`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use nettrace::events::{BulkEdge, BulkNode, RUNTIME_PROVIDER, RuntimeEvent, decode_runtime};
use nettrace::testing::payloads as p;
use nettrace::testing::{EventSpec, TraceWriter, native_metadata};
use nettrace::{Reader, Step};

const FEED_CHUNK: usize = 1 << 20;

fn synthetic() -> Vec<u8> {
    let mut w = TraceWriter::default();
    w.metadata_block(&[native_metadata(1, RUNTIME_PROVIDER, 18, 0), native_metadata(2, RUNTIME_PROVIDER, 19, 0)]);
    // Shaped like the runtime's heap dump: ~64 KB bulk events, two per block.
    let nodes: Vec<BulkNode> = (0..2000u64)
        .map(|i| BulkNode {
            address: 0x7f00_0000_0000 + i * 48,
            size: 24 + i % 100,
            type_id: 0x7f10_0000 + i % 37,
            edge_count: i % 4,
        })
        .collect();
    let edges: Vec<BulkEdge> =
        (0..5000u64).map(|i| BulkEdge { target: 0x7f00_0000_0000 + i * 40, referencing_field_id: 0 }).collect();
    let (mut node_index, mut edge_index, mut seq) = (0u32, 0u32, 0u32);
    while w.bytes().len() < 52 << 20 {
        let mut block = Vec::new();
        for _ in 0..2 {
            seq += 1;
            let (id, payload) = if seq % 2 == 0 {
                node_index += 1;
                (1, p::bulk_node(node_index - 1, 8, &nodes))
            } else {
                edge_index += 1;
                (2, p::bulk_edge(edge_index - 1, 8, &edges))
            };
            let mut e = EventSpec::new(id, payload);
            e.sequence_number = seq;
            e.timestamp = i64::from(seq) * 1000;
            block.push(e);
        }
        w.event_block(&block);
    }
    w.finish()
}

/// Parse the whole stream, iterating every bulk item. Returns a checksum.
fn decode_all(data: &[u8]) -> u64 {
    let mut r = Reader::new();
    let mut sum = 0u64;
    let mut pos = 0;
    loop {
        let ptr = r.trace_info().map_or(8, |t| t.pointer_size);
        let step = r
            .next_block(&mut |e| match decode_runtime(e, ptr) {
                Ok(RuntimeEvent::BulkNode(it)) => {
                    for n in it.flatten() {
                        sum = sum.wrapping_add(n.address ^ n.size ^ n.type_id ^ n.edge_count);
                    }
                }
                Ok(RuntimeEvent::BulkEdge(it)) => {
                    for edge in it.flatten() {
                        sum = sum.wrapping_add(edge.target);
                    }
                }
                _ => sum = sum.wrapping_add(e.payload.len() as u64),
            })
            .expect("bench input parses");
        match step {
            Step::Block => {}
            Step::End => return sum,
            Step::NeedData => {
                if pos >= data.len() {
                    r.finish_input();
                } else {
                    let end = (pos + FEED_CHUNK).min(data.len());
                    r.feed(&data[pos..end]);
                    pos = end;
                }
            }
        }
    }
}

/// The memory read floor: touch every byte once with the cheapest possible reduction.
fn read_floor(data: &[u8]) -> u64 {
    data.chunks_exact(8)
        .fold(0u64, |a, c| a.wrapping_add(u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])))
}

fn best_of(n: usize, f: impl Fn() -> u64) -> Duration {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            black_box(f());
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn main() {
    let (data, source) = match std::env::var("NETTRACE_BENCH_FILE") {
        Ok(path) => (std::fs::read(&path).expect("NETTRACE_BENCH_FILE readable"), path),
        Err(_) => (synthetic(), "synthetic GC bulk node/edge stream".to_string()),
    };
    let mb = data.len() as f64 / 1e6;
    let decode = best_of(5, || decode_all(&data));
    let floor = best_of(5, || read_floor(&data));
    let decode_mbs = mb / decode.as_secs_f64();
    let floor_mbs = mb / floor.as_secs_f64();
    println!("input: {source}, {mb:.1} MB");
    println!("decode (framing + headers + typed bulk items): {decode_mbs:.0} MB/s");
    println!("memory read floor (u64 sum over the same bytes): {floor_mbs:.0} MB/s");
    println!(
        "decode / floor: {:.2}x slower than the read floor ({:.1}% of floor throughput)",
        decode.as_secs_f64() / floor.as_secs_f64(),
        100.0 * decode_mbs / floor_mbs
    );

    let mut c = Criterion::default().configure_from_args().sample_size(10);
    let mut g = c.benchmark_group("nettrace");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("decode_bulk_events", |b| b.iter(|| decode_all(black_box(&data))));
    g.bench_function("memory_read_floor", |b| b.iter(|| read_floor(black_box(&data))));
    g.finish();
    c.final_summary();
}
