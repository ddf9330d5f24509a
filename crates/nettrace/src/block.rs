//! Bodies of EventBlock, MetadataBlock and SPBlock: the event blob headers (compressed and
//! uncompressed) and the per-block loops.

use crate::cursor::Cursor;
use crate::metadata::{MetadataTable, parse_metadata_record};
use crate::sequence::SeqTracker;
use crate::stack::StackCache;
use crate::{Error, Event};

/// Fixed part of an uncompressed blob header after its EventSize field.
const UNCOMPRESSED_HEADER_LEN: usize = 4 + 4 + 8 + 8 + 4 + 4 + 8 + 16 + 16 + 4;

const FLAG_METADATA_ID: u8 = 1 << 0;
const FLAG_CAPTURE_THREAD_AND_SEQUENCE: u8 = 1 << 1;
const FLAG_THREAD_ID: u8 = 1 << 2;
const FLAG_STACK_ID: u8 = 1 << 3;
const FLAG_ACTIVITY_ID: u8 = 1 << 4;
const FLAG_RELATED_ACTIVITY_ID: u8 = 1 << 5;
const FLAG_SORTED: u8 = 1 << 6;
const FLAG_DATA_LENGTH: u8 = 1 << 7;

/// Decoded blob header. With header compression every field defaults to the previous
/// blob's value, so one instance lives for a whole block and starts zeroed.
#[derive(Default, Clone, Copy)]
pub(crate) struct BlobHeader {
    pub(crate) metadata_id: u32,
    pub(crate) sequence_number: u32,
    pub(crate) thread_id: u64,
    pub(crate) capture_thread_id: u64,
    pub(crate) processor_number: u32,
    pub(crate) stack_id: u32,
    pub(crate) timestamp: i64,
    pub(crate) activity_id: [u8; 16],
    pub(crate) related_activity_id: [u8; 16],
    pub(crate) payload_size: u32,
    pub(crate) is_sorted: bool,
}

/// Read the 20+ byte header shared by EventBlock and MetadataBlock; returns whether
/// header compression is on.
fn read_block_header(c: &mut Cursor<'_>) -> Result<bool, Error> {
    let header_size = c.u16("block header size")?;
    if header_size < 20 {
        return Err(c.err("block header size below 20"));
    }
    let flags = c.u16("block flags")?;
    // Min/max timestamps and any future header fields are not needed for decoding.
    c.skip(usize::from(header_size) - 4, "block header")?;
    Ok(flags & 1 != 0)
}

/// Decode one blob header and return its payload.
#[inline]
pub(crate) fn next_blob<'a>(c: &mut Cursor<'a>, compressed: bool, h: &mut BlobHeader) -> Result<&'a [u8], Error> {
    if compressed { compressed_blob(c, h) } else { uncompressed_blob(c, h) }
}

#[inline]
fn compressed_blob<'a>(c: &mut Cursor<'a>, h: &mut BlobHeader) -> Result<&'a [u8], Error> {
    let flags = c.u8("event flags")?;
    if flags & FLAG_METADATA_ID != 0 {
        h.metadata_id = c.varu32("metadata id")?;
    }
    if flags & FLAG_CAPTURE_THREAD_AND_SEQUENCE != 0 {
        let delta = c.varu32("sequence delta")?;
        // The writer encodes seq - prev - 1 in u32 arithmetic; metadata blobs even use it
        // to encode 0 after 0 (delta 0xFFFFFFFF), so this must wrap.
        h.sequence_number = h.sequence_number.wrapping_add(delta).wrapping_add(1);
        h.capture_thread_id = c.varu64("capture thread id")?;
        h.processor_number = c.varu32("processor number")?;
    } else if h.metadata_id != 0 {
        h.sequence_number = h.sequence_number.wrapping_add(1);
    }
    if flags & FLAG_THREAD_ID != 0 {
        h.thread_id = c.varu64("thread id")?;
    }
    if flags & FLAG_STACK_ID != 0 {
        h.stack_id = c.varu32("stack id")?;
    }
    let delta = c.varu64("timestamp delta")?;
    h.timestamp = h.timestamp.wrapping_add(delta as i64);
    if flags & FLAG_ACTIVITY_ID != 0 {
        h.activity_id = c.array("activity id")?;
    }
    if flags & FLAG_RELATED_ACTIVITY_ID != 0 {
        h.related_activity_id = c.array("related activity id")?;
    }
    h.is_sorted = flags & FLAG_SORTED != 0;
    if flags & FLAG_DATA_LENGTH != 0 {
        h.payload_size = c.varu32("payload size")?;
    }
    c.bytes(h.payload_size as usize, "event payload")
}

fn uncompressed_blob<'a>(c: &mut Cursor<'a>, h: &mut BlobHeader) -> Result<&'a [u8], Error> {
    let event_size = c.u32("event size")? as usize;
    let base = c.offset();
    let event = c.bytes(event_size, "event blob")?;
    if event_size < UNCOMPRESSED_HEADER_LEN {
        return Err(Error::malformed(base, "event blob smaller than its header"));
    }
    let mut e = Cursor::new(event, base);
    let raw_id = e.u32("metadata id")?;
    h.metadata_id = raw_id & 0x7fff_ffff;
    // The runtime sets bit 31 for events that are NOT sorted.
    h.is_sorted = raw_id & 0x8000_0000 == 0;
    h.sequence_number = e.u32("sequence number")?;
    h.thread_id = e.u64("thread id")?;
    h.capture_thread_id = e.u64("capture thread id")?;
    h.processor_number = e.u32("processor number")?;
    h.stack_id = e.u32("stack id")?;
    h.timestamp = e.i64("timestamp")?;
    h.activity_id = e.array("activity id")?;
    h.related_activity_id = e.array("related activity id")?;
    h.payload_size = e.u32("payload size")?;
    let payload = e.bytes(h.payload_size as usize, "event payload")?;
    // EventSize already includes the runtime's alignment padding; aligning again to the
    // absolute offset keeps us right for writers that leave it out.
    c.align4_clamped();
    Ok(payload)
}

/// Counters updated while walking event blocks.
#[derive(Default)]
pub(crate) struct BlockCounters {
    pub(crate) events: u64,
    pub(crate) unresolved_stacks: u64,
    pub(crate) metadata_fields_dropped: u64,
}

/// Everything an EventBlock needs to resolve and dispatch its events.
pub(crate) struct EventContext<'r> {
    pub(crate) metadata: &'r MetadataTable,
    pub(crate) stacks: &'r StackCache,
    pub(crate) seq: &'r mut SeqTracker,
    pub(crate) counters: &'r mut BlockCounters,
}

pub(crate) fn process_event_block(
    body: &[u8],
    base: u64,
    ctx: EventContext<'_>,
    on_event: &mut dyn FnMut(&Event<'_>),
) -> Result<(), Error> {
    let mut c = Cursor::new(body, base);
    let compressed = read_block_header(&mut c)?;
    let mut h = BlobHeader::default();
    while !c.is_empty() {
        let blob_offset = c.offset();
        let payload = next_blob(&mut c, compressed, &mut h)?;
        let metadata = ctx
            .metadata
            .get(h.metadata_id)
            .ok_or(Error::UnknownMetadataId { id: h.metadata_id, offset: blob_offset })?;
        ctx.seq.observe(h.capture_thread_id, h.sequence_number);
        let stack = match ctx.stacks.get(h.stack_id) {
            Some(s) => s,
            None => {
                ctx.counters.unresolved_stacks += 1;
                &[]
            }
        };
        let event = Event {
            metadata,
            sequence_number: h.sequence_number,
            thread_id: h.thread_id,
            capture_thread_id: h.capture_thread_id,
            processor_number: h.processor_number,
            stack_id: h.stack_id,
            stack,
            timestamp: h.timestamp,
            activity_id: h.activity_id,
            related_activity_id: h.related_activity_id,
            payload,
        };
        on_event(&event);
        ctx.counters.events += 1;
    }
    Ok(())
}

pub(crate) fn process_metadata_block(
    body: &[u8],
    base: u64,
    table: &mut MetadataTable,
    max_metadata: usize,
    counters: &mut BlockCounters,
) -> Result<(), Error> {
    let mut c = Cursor::new(body, base);
    let compressed = read_block_header(&mut c)?;
    let mut h = BlobHeader::default();
    while !c.is_empty() {
        let payload = next_blob(&mut c, compressed, &mut h)?;
        // The payload is a sub-slice of `body`; its address difference is its position.
        let payload_base = base + (payload.as_ptr() as usize - body.as_ptr() as usize) as u64;
        let parsed = parse_metadata_record(payload, payload_base)?;
        if parsed.fields_dropped {
            counters.metadata_fields_dropped += 1;
        }
        if table.len() >= max_metadata && table.get(parsed.metadata.metadata_id).is_none() {
            return Err(Error::LimitExceeded { what: "number of metadata records" });
        }
        table.insert(parsed.metadata);
    }
    Ok(())
}

/// Parse an SPBlock body, feeding its per-thread checkpoints to `seq`.
pub(crate) fn process_sequence_point(body: &[u8], base: u64, seq: &mut SeqTracker) -> Result<(), Error> {
    let mut c = Cursor::new(body, base);
    let _timestamp = c.i64("sequence point timestamp")?;
    let count = c.u32("sequence point thread count")?;
    for _ in 0..count {
        let thread = c.u64("sequence point thread id")?;
        let number = c.u32("sequence point sequence number")?;
        seq.checkpoint(thread, number);
    }
    Ok(())
}
