//! A writer of valid nettrace V4/V5 streams, for tests (this crate's and other crates').
//! Enabled by `cfg(test)` or the `testing` feature. It encodes the way the runtime does:
//! compressed headers with per-block delta state, metadata with V1 field lists or V5
//! V2Params tags, interned stacks and sequence points.

pub mod payloads;

use crate::{EventMetadata, FieldMetadata, TypeCode};

pub use payloads::Payload;

/// Stream-wide settings.
#[derive(Debug, Clone, Copy)]
pub struct WriterOptions {
    pub pointer_size: u32,
    /// Header compression (the runtime always uses it); `false` writes uncompressed blobs.
    pub compressed: bool,
    pub process_id: u32,
    pub qpc_frequency: i64,
    pub sync_time_qpc: i64,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            pointer_size: 8,
            compressed: true,
            process_id: 4242,
            qpc_frequency: 1_000_000_000,
            sync_time_qpc: 1_000,
        }
    }
}

/// One event to write.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventSpec {
    pub metadata_id: u32,
    pub sequence_number: u32,
    pub thread_id: u64,
    pub capture_thread_id: u64,
    pub processor_number: u32,
    pub stack_id: u32,
    pub timestamp: i64,
    pub activity_id: [u8; 16],
    pub related_activity_id: [u8; 16],
    pub sorted: bool,
    pub payload: Vec<u8>,
}

impl EventSpec {
    pub fn new(metadata_id: u32, payload: Vec<u8>) -> Self {
        EventSpec {
            metadata_id,
            sequence_number: 1,
            thread_id: 100,
            capture_thread_id: 100,
            timestamp: 10_000,
            sorted: true,
            payload,
            ..Default::default()
        }
    }
}

/// Builds a stream in memory. Call the block methods in stream order, then [`finish`].
///
/// [`finish`]: TraceWriter::finish
pub struct TraceWriter {
    out: Vec<u8>,
    opts: WriterOptions,
}

impl Default for TraceWriter {
    fn default() -> Self {
        Self::new(WriterOptions::default())
    }
}

impl TraceWriter {
    /// Writes the stream header and the Trace object.
    pub fn new(opts: WriterOptions) -> Self {
        let mut w = TraceWriter { out: Vec::new(), opts };
        w.out.extend_from_slice(b"Nettrace");
        w.out.extend_from_slice(&20i32.to_le_bytes());
        w.out.extend_from_slice(b"!FastSerialization.1");
        w.object_header("Trace", 4, 4);
        for v in [2024i16, 5, 3, 15, 12, 30, 45, 500] {
            w.out.extend_from_slice(&v.to_le_bytes());
        }
        w.out.extend_from_slice(&opts.sync_time_qpc.to_le_bytes());
        w.out.extend_from_slice(&opts.qpc_frequency.to_le_bytes());
        w.out.extend_from_slice(&opts.pointer_size.to_le_bytes());
        w.out.extend_from_slice(&opts.process_id.to_le_bytes());
        w.out.extend_from_slice(&4u32.to_le_bytes());
        w.out.extend_from_slice(&1_000_000u32.to_le_bytes());
        w.out.push(6);
        w
    }

    pub fn options(&self) -> WriterOptions {
        self.opts
    }

    /// The bytes written so far.
    pub fn bytes(&self) -> &[u8] {
        &self.out
    }

    fn object_header(&mut self, name: &str, version: i32, min_version: i32) {
        self.out.extend_from_slice(&[5, 5, 1]);
        self.out.extend_from_slice(&version.to_le_bytes());
        self.out.extend_from_slice(&min_version.to_le_bytes());
        self.out.extend_from_slice(&(name.len() as i32).to_le_bytes());
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(6);
    }

    /// A block object: size, padding to the absolute 4-byte boundary, body, end tag.
    pub fn raw_block(&mut self, name: &str, body: &[u8]) {
        self.object_header(name, 2, 2);
        self.out.extend_from_slice(&(body.len() as i32).to_le_bytes());
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
        self.out.extend_from_slice(body);
        self.out.push(6);
    }

    /// A MetadataBlock defining `records`. Records whose fields contain an `Array` are
    /// written with a V5 V2Params tag (and an empty V1 list), others with a V1 list.
    pub fn metadata_block(&mut self, records: &[EventMetadata]) {
        self.metadata_block_with(records, false);
    }

    /// Like [`Self::metadata_block`]; `force_v2` writes every record with V2Params.
    pub fn metadata_block_with(&mut self, records: &[EventMetadata], force_v2: bool) {
        let events: Vec<EventSpec> = records
            .iter()
            .map(|m| EventSpec {
                metadata_id: 0,
                sequence_number: 0,
                thread_id: 0,
                capture_thread_id: 0,
                payload: encode_metadata(m, force_v2),
                sorted: true,
                ..Default::default()
            })
            .collect();
        let body = self.event_blob_body(&events);
        self.raw_block("MetadataBlock", &body);
    }

    /// An EventBlock holding `events` in order.
    pub fn event_block(&mut self, events: &[EventSpec]) {
        let body = self.event_blob_body(events);
        self.raw_block("EventBlock", &body);
    }

    /// A StackBlock with ids `first_id..` (IPs leaf first, pointer-size wide).
    pub fn stack_block(&mut self, first_id: u32, stacks: &[Vec<u64>]) {
        let mut body = Vec::new();
        body.extend_from_slice(&first_id.to_le_bytes());
        body.extend_from_slice(&(stacks.len() as u32).to_le_bytes());
        for s in stacks {
            body.extend_from_slice(&((s.len() as u32) * self.opts.pointer_size).to_le_bytes());
            for ip in s {
                if self.opts.pointer_size == 4 {
                    body.extend_from_slice(&(*ip as u32).to_le_bytes());
                } else {
                    body.extend_from_slice(&ip.to_le_bytes());
                }
            }
        }
        self.raw_block("StackBlock", &body);
    }

    /// An SPBlock; `threads` are (capture thread id, sequence number).
    pub fn sequence_point(&mut self, timestamp: i64, threads: &[(u64, u32)]) {
        let mut body = Vec::new();
        body.extend_from_slice(&timestamp.to_le_bytes());
        body.extend_from_slice(&(threads.len() as u32).to_le_bytes());
        for (t, s) in threads {
            body.extend_from_slice(&t.to_le_bytes());
            body.extend_from_slice(&s.to_le_bytes());
        }
        self.raw_block("SPBlock", &body);
    }

    /// Append the end-of-stream tag and return the stream.
    pub fn finish(mut self) -> Vec<u8> {
        self.out.push(1);
        self.out
    }

    /// Block header plus blobs, compressed or not per the options.
    fn event_blob_body(&self, events: &[EventSpec]) -> Vec<u8> {
        let mut body = Vec::new();
        let min = events.iter().map(|e| e.timestamp).min().unwrap_or(0);
        let max = events.iter().map(|e| e.timestamp).max().unwrap_or(0);
        body.extend_from_slice(&20u16.to_le_bytes());
        body.extend_from_slice(&u16::from(self.opts.compressed).to_le_bytes());
        body.extend_from_slice(&min.to_le_bytes());
        body.extend_from_slice(&max.to_le_bytes());
        let mut prev = EventSpec::default();
        for e in events {
            if self.opts.compressed {
                write_compressed(&mut body, e, &prev);
                prev = e.clone();
            } else {
                write_uncompressed(&mut body, e);
            }
        }
        body
    }
}

fn var(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Mirrors the runtime's encoder: a field group is written only when it differs from what
/// the reader would infer from the previous blob.
fn write_compressed(out: &mut Vec<u8>, e: &EventSpec, prev: &EventSpec) {
    let mut flags = 0u8;
    let mut h = Vec::new();
    if e.metadata_id != prev.metadata_id {
        var(&mut h, e.metadata_id.into());
        flags |= 1;
    }
    let implied = prev.sequence_number.wrapping_add(u32::from(e.metadata_id != 0));
    if implied != e.sequence_number
        || e.capture_thread_id != prev.capture_thread_id
        || e.processor_number != prev.processor_number
    {
        let delta = e.sequence_number.wrapping_sub(prev.sequence_number).wrapping_sub(1);
        var(&mut h, delta.into());
        var(&mut h, e.capture_thread_id);
        var(&mut h, e.processor_number.into());
        flags |= 2;
    }
    if e.thread_id != prev.thread_id {
        var(&mut h, e.thread_id);
        flags |= 4;
    }
    if e.stack_id != prev.stack_id {
        var(&mut h, e.stack_id.into());
        flags |= 8;
    }
    var(&mut h, e.timestamp.wrapping_sub(prev.timestamp) as u64);
    if e.activity_id != prev.activity_id {
        h.extend_from_slice(&e.activity_id);
        flags |= 0x10;
    }
    if e.related_activity_id != prev.related_activity_id {
        h.extend_from_slice(&e.related_activity_id);
        flags |= 0x20;
    }
    if e.sorted {
        flags |= 0x40;
    }
    if e.payload.len() != prev.payload.len() {
        var(&mut h, e.payload.len() as u64);
        flags |= 0x80;
    }
    out.push(flags);
    out.extend_from_slice(&h);
    out.extend_from_slice(&e.payload);
}

fn write_uncompressed(out: &mut Vec<u8>, e: &EventSpec) {
    let unpadded = 76 + e.payload.len();
    let size = unpadded.next_multiple_of(4);
    out.extend_from_slice(&(size as u32).to_le_bytes());
    let id = e.metadata_id | if e.sorted { 0 } else { 1 << 31 };
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&e.sequence_number.to_le_bytes());
    out.extend_from_slice(&e.thread_id.to_le_bytes());
    out.extend_from_slice(&e.capture_thread_id.to_le_bytes());
    out.extend_from_slice(&e.processor_number.to_le_bytes());
    out.extend_from_slice(&e.stack_id.to_le_bytes());
    out.extend_from_slice(&e.timestamp.to_le_bytes());
    out.extend_from_slice(&e.activity_id);
    out.extend_from_slice(&e.related_activity_id);
    out.extend_from_slice(&(e.payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&e.payload);
    out.resize(out.len() + (size - unpadded), 0);
}

fn utf16z(out: &mut Vec<u8>, s: &str) {
    for u in s.encode_utf16() {
        out.extend_from_slice(&u.to_le_bytes());
    }
    out.extend_from_slice(&[0, 0]);
}

fn has_array(fields: &[FieldMetadata]) -> bool {
    fields.iter().any(|f| f.type_code == TypeCode::Array || has_array(&f.nested))
}

/// Encode a metadata record payload.
pub fn encode_metadata(m: &EventMetadata, force_v2: bool) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&m.metadata_id.to_le_bytes());
    utf16z(&mut out, &m.provider);
    out.extend_from_slice(&m.event_id.to_le_bytes());
    utf16z(&mut out, &m.event_name);
    out.extend_from_slice(&m.keywords.to_le_bytes());
    out.extend_from_slice(&m.version.to_le_bytes());
    out.extend_from_slice(&m.level.to_le_bytes());
    let v2 = force_v2 || has_array(&m.fields);
    if v2 {
        out.extend_from_slice(&0u32.to_le_bytes());
    } else {
        fields_v1(&mut out, &m.fields);
    }
    if let Some(op) = m.opcode {
        out.extend_from_slice(&1u32.to_le_bytes());
        out.push(1);
        out.push(op);
    }
    if v2 {
        let mut tag = Vec::new();
        fields_v2(&mut tag, &m.fields);
        out.extend_from_slice(&(tag.len() as u32).to_le_bytes());
        out.push(2);
        out.extend_from_slice(&tag);
    }
    out
}

fn fields_v1(out: &mut Vec<u8>, fields: &[FieldMetadata]) {
    out.extend_from_slice(&(fields.len() as u32).to_le_bytes());
    for f in fields {
        out.extend_from_slice(&f.type_code.code().to_le_bytes());
        if f.type_code == TypeCode::Object {
            fields_v1(out, &f.nested);
        }
        utf16z(out, &f.name);
    }
}

fn fields_v2(out: &mut Vec<u8>, fields: &[FieldMetadata]) {
    out.extend_from_slice(&(fields.len() as u32).to_le_bytes());
    for f in fields {
        let mut body = Vec::new();
        utf16z(&mut body, &f.name);
        type_v2(&mut body, f);
        out.extend_from_slice(&(body.len() as u32 + 4).to_le_bytes());
        out.extend_from_slice(&body);
    }
}

fn type_v2(out: &mut Vec<u8>, f: &FieldMetadata) {
    out.extend_from_slice(&f.type_code.code().to_le_bytes());
    match f.type_code {
        TypeCode::Object => fields_v2(out, &f.nested),
        TypeCode::Array => {
            if let Some(e) = &f.element {
                type_v2(out, e);
            } else {
                out.extend_from_slice(&TypeCode::Byte.code().to_le_bytes());
            }
        }
        _ => {}
    }
}

/// Metadata the way the runtime registers native events: no name, no fields.
pub fn native_metadata(metadata_id: u32, provider: &str, event_id: u32, version: u32) -> EventMetadata {
    EventMetadata {
        metadata_id,
        provider: provider.to_string(),
        event_id,
        event_name: String::new(),
        keywords: 0,
        version,
        level: 4,
        opcode: None,
        fields: Vec::new(),
    }
}

/// A standalone event (no stream around it) for decoder tests: thread 1, no stack.
pub fn event<'a>(metadata: &'a EventMetadata, payload: &'a [u8]) -> crate::Event<'a> {
    crate::Event {
        metadata,
        sequence_number: 1,
        thread_id: 1,
        capture_thread_id: 1,
        processor_number: 0,
        stack_id: 0,
        stack: &[],
        timestamp: 0,
        activity_id: [0; 16],
        related_activity_id: [0; 16],
        payload,
    }
}
