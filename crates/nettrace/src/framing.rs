//! FastSerialization framing of a V4/V5 nettrace stream: the stream header and the
//! object envelope around each block. Pure functions over the buffered bytes: they either
//! describe a complete object or report that more input is needed.

use crate::Error;

pub(crate) const MAGIC: &[u8; 8] = b"Nettrace";
const FAST_SERIALIZATION: &[u8; 20] = b"!FastSerialization.1";
/// Length of "Nettrace" + i32 20 + "!FastSerialization.1".
pub(crate) const STREAM_HEADER_LEN: usize = 8 + 4 + 20;

const TAG_NULL_REFERENCE: u8 = 1;
const TAG_BEGIN_PRIVATE_OBJECT: u8 = 5;
const TAG_END_OBJECT: u8 = 6;
/// Size of the Trace object body for format versions 3..=5.
pub(crate) const TRACE_BODY_LEN: usize = 48;
/// Type names are short ASCII words; anything long is corruption, not a new type.
const MAX_TYPE_NAME_LEN: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ObjectKind {
    Trace,
    EventBlock,
    MetadataBlock,
    StackBlock,
    SequencePointBlock,
}

#[derive(Debug)]
pub(crate) enum Frame {
    NeedData,
    EndOfStream,
    Object {
        kind: ObjectKind,
        version: i32,
        min_version: i32,
        /// Body position relative to the start of the examined slice.
        body_start: usize,
        body_len: usize,
        /// Bytes the whole object occupies, end tag included.
        total_len: usize,
    },
}

pub(crate) enum Header {
    NeedData,
    /// A V4/V5 FastSerialization stream; the header is `STREAM_HEADER_LEN` bytes.
    FastSerialization,
}

/// Recognise the stream header at the start of the stream.
pub(crate) fn parse_stream_header(data: &[u8]) -> Result<Header, Error> {
    let n = data.len().min(8);
    if data[..n] != MAGIC[..n] {
        return Err(Error::BadMagic);
    }
    if data.len() < 12 {
        return Ok(Header::NeedData);
    }
    let after_magic = u32::from_le_bytes([data[8], data[9], data[10], data[11]]);
    if after_magic == 0 {
        // V6 puts a reserved zero here, then the major version.
        if data.len() < 16 {
            return Ok(Header::NeedData);
        }
        let major = u32::from_le_bytes([data[12], data[13], data[14], data[15]]);
        return Err(Error::UnsupportedVersion { major });
    }
    if after_magic != FAST_SERIALIZATION.len() as u32 {
        return Err(Error::BadMagic);
    }
    let n = data.len().min(STREAM_HEADER_LEN);
    if data[12..n] != FAST_SERIALIZATION[..n - 12] {
        return Err(Error::BadMagic);
    }
    if data.len() < STREAM_HEADER_LEN {
        return Ok(Header::NeedData);
    }
    Ok(Header::FastSerialization)
}

fn read_i32(data: &[u8], at: usize) -> Option<i32> {
    let b = data.get(at..at.checked_add(4)?)?;
    Some(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Examine the object starting at `data[0]`, whose absolute stream offset is `abs`.
pub(crate) fn parse_frame(data: &[u8], abs: u64, max_block_size: u32) -> Result<Frame, Error> {
    let Some(&tag) = data.first() else {
        return Ok(Frame::NeedData);
    };
    match tag {
        TAG_NULL_REFERENCE => return Ok(Frame::EndOfStream),
        TAG_BEGIN_PRIVATE_OBJECT => {}
        _ => return Err(Error::malformed(abs, "expected an object or end-of-stream tag")),
    }
    // BeginPrivateObject(type) NullReference(type of type) version minVersion nameLen
    const FIXED: usize = 3 + 12;
    if data.len() < FIXED {
        return Ok(Frame::NeedData);
    }
    if data[1] != TAG_BEGIN_PRIVATE_OBJECT || data[2] != TAG_NULL_REFERENCE {
        return Err(Error::malformed(abs + 1, "bad object type header"));
    }
    let version = read_i32(data, 3).unwrap_or_default();
    let min_version = read_i32(data, 7).unwrap_or_default();
    let name_len = read_i32(data, 11).unwrap_or_default();
    let name_len = usize::try_from(name_len)
        .ok()
        .filter(|&l| l <= MAX_TYPE_NAME_LEN)
        .ok_or_else(|| Error::malformed(abs + 11, "bad object type name length"))?;
    let name_end = FIXED + name_len;
    if data.len() < name_end + 1 {
        return Ok(Frame::NeedData);
    }
    if data[name_end] != TAG_END_OBJECT {
        return Err(Error::malformed(abs + name_end as u64, "missing end tag of object type"));
    }
    let name = &data[FIXED..name_end];
    let kind = match name {
        b"Trace" => ObjectKind::Trace,
        b"EventBlock" => ObjectKind::EventBlock,
        b"MetadataBlock" => ObjectKind::MetadataBlock,
        b"StackBlock" => ObjectKind::StackBlock,
        b"SPBlock" => ObjectKind::SequencePointBlock,
        other => {
            return Err(Error::UnknownObject { name: String::from_utf8_lossy(other).into_owned(), offset: abs });
        }
    };
    let payload_start = name_end + 1;
    let (body_start, body_len) = if kind == ObjectKind::Trace {
        (payload_start, TRACE_BODY_LEN)
    } else {
        let Some(size) = read_i32(data, payload_start) else {
            return Ok(Frame::NeedData);
        };
        let size =
            u32::try_from(size).map_err(|_| Error::malformed(abs + payload_start as u64, "negative block size"))?;
        if size > max_block_size {
            return Err(Error::BlockTooLarge { size: u64::from(size), limit: u64::from(max_block_size) });
        }
        // The body starts 4-byte aligned relative to the stream start, not the buffer.
        let after_size = abs + payload_start as u64 + 4;
        let pad = ((4 - (after_size & 3)) & 3) as usize;
        (payload_start + 4 + pad, size as usize)
    };
    let end_tag_at = body_start + body_len;
    if data.len() < end_tag_at + 1 {
        return Ok(Frame::NeedData);
    }
    if data[end_tag_at] != TAG_END_OBJECT {
        return Err(Error::malformed(abs + end_tag_at as u64, "missing end tag of object"));
    }
    Ok(Frame::Object { kind, version, min_version, body_start, body_len, total_len: end_tag_at + 1 })
}
