//! The streaming, sans-IO reader: bytes go in with [`Reader::feed`], objects come out of
//! [`Reader::next_block`] one at a time.

use crate::block::{BlockCounters, EventContext, process_event_block, process_metadata_block, process_sequence_point};
use crate::cursor::Cursor;
use crate::framing::{Frame, Header, ObjectKind, STREAM_HEADER_LEN, parse_frame, parse_stream_header};
use crate::metadata::MetadataTable;
use crate::sequence::SeqTracker;
use crate::stack::StackCache;
use crate::{Error, Event, TraceInfo};

/// Resource limits; the defaults suit real runtime streams (blocks are at most a few
/// hundred KiB) while rejecting absurd sizes from corrupt input.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest block body accepted ([`Error::BlockTooLarge`] beyond).
    pub max_block_size: u32,
    /// Most distinct metadata records kept.
    pub max_metadata: usize,
    /// Most instruction pointers cached between two sequence points.
    pub max_stack_ips: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_block_size: 64 << 20, max_metadata: 1 << 20, max_stack_ips: 32 << 20 }
    }
}

/// What one [`Reader::next_block`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The next object is incomplete: feed more bytes (or call `finish_input`).
    NeedData,
    /// One object (trace header, metadata, stack, sequence point or event block) was parsed.
    Block,
    /// The end-of-stream tag was read. Further calls keep returning `End`.
    End,
}

/// Running totals. `dropped_events` is an estimate from sequence-number gaps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReaderStats {
    /// Stream bytes fully parsed (including the header and end tag).
    pub bytes_consumed: u64,
    /// Objects parsed, the Trace object included.
    pub blocks: u64,
    pub event_blocks: u64,
    pub metadata_blocks: u64,
    pub stack_blocks: u64,
    pub sequence_points: u64,
    /// Events delivered to the callback.
    pub events: u64,
    /// Distinct metadata ids defined.
    pub metadata: u64,
    /// Number of sequence-number gaps seen (per capture thread, and at sequence points).
    pub sequence_gaps: u64,
    /// Sum of the sizes of those gaps: events the runtime attempted but did not deliver.
    pub dropped_events: u64,
    /// Events whose non-zero stack id was not in the stack cache (delivered with no stack).
    pub unresolved_stacks: u64,
    /// Metadata records whose field list could not be parsed and was dropped.
    pub metadata_fields_dropped: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    StreamHeader,
    Objects,
    End,
    Failed,
}

/// Streaming nettrace (V4/V5) reader. Memory use is bounded by the largest single object
/// plus the metadata table plus the stacks since the last sequence point.
pub struct Reader {
    buf: Vec<u8>,
    /// Start of the unconsumed bytes in `buf`.
    start: usize,
    /// Absolute stream offset of `buf[0]`.
    base: u64,
    input_finished: bool,
    phase: Phase,
    limits: Limits,
    trace: Option<TraceInfo>,
    metadata: MetadataTable,
    stacks: StackCache,
    seq: SeqTracker,
    counters: BlockCounters,
    stats: ReaderStats,
}

impl Default for Reader {
    fn default() -> Self {
        Self::new()
    }
}

impl Reader {
    pub fn new() -> Self {
        Self::with_limits(Limits::default())
    }

    pub fn with_limits(limits: Limits) -> Self {
        Reader {
            buf: Vec::new(),
            start: 0,
            base: 0,
            input_finished: false,
            phase: Phase::StreamHeader,
            limits,
            trace: None,
            metadata: MetadataTable::default(),
            stacks: StackCache::default(),
            seq: SeqTracker::default(),
            counters: BlockCounters::default(),
            stats: ReaderStats::default(),
        }
    }

    /// Append input. Any chunking works. Consumed bytes are dropped here: the live tail is
    /// moved to the front once at least half of the buffer is consumed, so every byte is
    /// moved at most a constant number of times on average.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.phase == Phase::End || self.phase == Phase::Failed {
            return;
        }
        if self.start > 0 && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.base += self.start as u64;
            self.start = 0;
            // Give back the memory of an unusually large block once it is gone.
            if self.buf.capacity() > (1 << 20) && self.buf.capacity() > 4 * self.buf.len() {
                self.buf.shrink_to((self.buf.len() * 2).max(1 << 16));
            }
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Declare end of input: an incomplete object then becomes [`Error::Truncated`].
    pub fn finish_input(&mut self) {
        self.input_finished = true;
    }

    /// Bytes buffered but not yet parsed.
    pub fn buffered_len(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Allocated size of the input buffer (for memory-bound checks).
    pub fn buffer_capacity(&self) -> usize {
        self.buf.capacity()
    }

    pub fn trace_info(&self) -> Option<&TraceInfo> {
        self.trace.as_ref()
    }

    pub fn stats(&self) -> ReaderStats {
        let mut s = self.stats;
        s.events = self.counters.events;
        s.unresolved_stacks = self.counters.unresolved_stacks;
        s.metadata_fields_dropped = self.counters.metadata_fields_dropped;
        s.metadata = self.metadata.len() as u64;
        s.sequence_gaps = self.seq.gaps;
        s.dropped_events = self.seq.dropped;
        s
    }

    /// Parse at most one object. For an EventBlock, `on_event` is called for each event in
    /// stream order (events are sorted per capture thread only, as the runtime wrote them).
    /// After an error the reader is poisoned and returns [`Error::Poisoned`].
    pub fn next_block(&mut self, on_event: &mut dyn FnMut(&Event<'_>)) -> Result<Step, Error> {
        let result = self.step(on_event);
        if result.is_err() {
            self.phase = Phase::Failed;
        }
        result
    }

    fn abs(&self) -> u64 {
        self.base + self.start as u64
    }

    fn need_data(&self) -> Result<Step, Error> {
        if self.input_finished {
            Err(Error::Truncated { offset: self.base + self.buf.len() as u64 })
        } else {
            Ok(Step::NeedData)
        }
    }

    fn step(&mut self, on_event: &mut dyn FnMut(&Event<'_>)) -> Result<Step, Error> {
        match self.phase {
            Phase::Failed => return Err(Error::Poisoned),
            Phase::End => return Ok(Step::End),
            Phase::StreamHeader => match parse_stream_header(&self.buf[self.start..])? {
                Header::NeedData => return self.need_data(),
                Header::FastSerialization => {
                    self.start += STREAM_HEADER_LEN;
                    self.stats.bytes_consumed = self.abs();
                    self.phase = Phase::Objects;
                }
            },
            Phase::Objects => {}
        }
        let abs = self.abs();
        let frame = parse_frame(&self.buf[self.start..], abs, self.limits.max_block_size)?;
        let (kind, version, min_version, body_start, body_len, total_len) = match frame {
            Frame::NeedData => return self.need_data(),
            Frame::EndOfStream => {
                self.start += 1;
                self.stats.bytes_consumed = self.abs();
                self.phase = Phase::End;
                return Ok(Step::End);
            }
            Frame::Object { kind, version, min_version, body_start, body_len, total_len } => {
                (kind, version, min_version, body_start, body_len, total_len)
            }
        };
        let body_abs = abs + body_start as u64;
        let body_from = self.start + body_start;
        let body = &self.buf[body_from..body_from + body_len];
        if kind != ObjectKind::Trace && self.trace.is_none() {
            return Err(Error::malformed(abs, "block before the Trace object"));
        }
        match kind {
            ObjectKind::Trace => {
                if self.trace.is_some() {
                    return Err(Error::malformed(abs, "second Trace object"));
                }
                // V5 is a compatible extension that keeps Trace version 4; a reader may
                // accept any version whose minimum reader version it satisfies.
                if version < 4 || min_version > 4 {
                    let major = if version < 4 { version } else { min_version };
                    let major = u32::try_from(major).unwrap_or(0);
                    return Err(Error::UnsupportedVersion { major });
                }
                self.trace = Some(parse_trace(body, body_abs)?);
            }
            ObjectKind::EventBlock
            | ObjectKind::MetadataBlock
            | ObjectKind::StackBlock
            | ObjectKind::SequencePointBlock
                if min_version > 2 =>
            {
                return Err(Error::malformed(abs, "block needs a newer reader"));
            }
            ObjectKind::EventBlock => {
                let ctx = EventContext {
                    metadata: &self.metadata,
                    stacks: &self.stacks,
                    seq: &mut self.seq,
                    counters: &mut self.counters,
                };
                process_event_block(body, body_abs, ctx, on_event)?;
                self.stats.event_blocks += 1;
            }
            ObjectKind::MetadataBlock => {
                process_metadata_block(
                    body,
                    body_abs,
                    &mut self.metadata,
                    self.limits.max_metadata,
                    &mut self.counters,
                )?;
                self.stats.metadata_blocks += 1;
            }
            ObjectKind::StackBlock => {
                let pointer_size = self.trace.as_ref().map_or(8, |t| t.pointer_size);
                self.stacks.add_block(body, body_abs, pointer_size, self.limits.max_stack_ips)?;
                self.stats.stack_blocks += 1;
            }
            ObjectKind::SequencePointBlock => {
                process_sequence_point(body, body_abs, &mut self.seq)?;
                // Events after a sequence point may only refer to stacks written after it.
                self.stacks.clear();
                self.stats.sequence_points += 1;
            }
        }
        self.start += total_len;
        self.stats.blocks += 1;
        self.stats.bytes_consumed = self.abs();
        Ok(Step::Block)
    }
}

fn parse_trace(body: &[u8], base: u64) -> Result<TraceInfo, Error> {
    let mut c = Cursor::new(body, base);
    let mut sync_time_utc = [0i16; 8];
    for v in &mut sync_time_utc {
        *v = i16::from_le_bytes(c.array("trace sync time")?);
    }
    let info = TraceInfo {
        sync_time_utc,
        sync_time_qpc: c.i64("trace sync qpc")?,
        qpc_frequency: c.i64("trace qpc frequency")?,
        pointer_size: c.u32("trace pointer size")?,
        process_id: c.u32("trace process id")?,
        number_of_processors: c.u32("trace processor count")?,
        expected_cpu_sampling_rate: c.u32("trace sampling rate")?,
    };
    if info.pointer_size != 4 && info.pointer_size != 8 {
        return Err(Error::malformed(base + 32, "pointer size is neither 4 nor 8"));
    }
    Ok(info)
}

/// Read a whole stream from `r`, calling `on_event` for every event. Stops at the
/// end-of-stream tag without waiting for EOF (an IPC socket may stay open a moment longer).
pub fn read_from<R: std::io::Read>(mut r: R, on_event: &mut dyn FnMut(&Event<'_>)) -> Result<ReaderStats, Error> {
    let mut reader = Reader::new();
    let mut chunk = vec![0u8; 256 * 1024];
    loop {
        match reader.next_block(on_event)? {
            Step::Block => continue,
            Step::End => return Ok(reader.stats()),
            Step::NeedData => {
                let n = loop {
                    match r.read(&mut chunk) {
                        Ok(n) => break n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e.into()),
                    }
                };
                if n == 0 {
                    reader.finish_input();
                } else {
                    reader.feed(&chunk[..n]);
                }
            }
        }
    }
}
