//! Metadata records (the payload of MetadataBlock blobs), V4 field lists plus V5 tags.

use crate::Error;
use crate::cursor::{Cursor, utf16_to_string};

/// Nested `Object` fields deeper than this are rejected: real EventSource payloads nest a
/// couple of levels, and unbounded recursion on hostile input would overflow the stack.
const MAX_FIELD_DEPTH: u32 = 16;

/// The type of one payload field (EventPipe type codes, a superset of `System.TypeCode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TypeCode {
    /// 1: a struct; its fields are in [`FieldMetadata::nested`].
    Object,
    /// 3: 4-byte boolean.
    Boolean,
    /// 4: one UTF-16 code unit.
    Char16,
    SByte,
    Byte,
    Int16,
    UInt16,
    Int32,
    UInt32,
    Int64,
    UInt64,
    Single,
    Double,
    /// 15: 16 raw bytes.
    Decimal,
    /// 16: 8 bytes, a Windows FILETIME (100 ns ticks since 1601, UTC).
    DateTime,
    Guid,
    /// 18: NUL-terminated UTF-16LE string.
    String,
    /// 19 (V5 V2Params only): u16 element count, then elements per [`FieldMetadata::element`].
    Array,
    /// Any other code. Payloads containing it cannot be decoded past that field.
    Unknown(u32),
}

impl TypeCode {
    pub fn from_code(code: u32) -> TypeCode {
        match code {
            1 => TypeCode::Object,
            3 => TypeCode::Boolean,
            4 => TypeCode::Char16,
            5 => TypeCode::SByte,
            6 => TypeCode::Byte,
            7 => TypeCode::Int16,
            8 => TypeCode::UInt16,
            9 => TypeCode::Int32,
            10 => TypeCode::UInt32,
            11 => TypeCode::Int64,
            12 => TypeCode::UInt64,
            13 => TypeCode::Single,
            14 => TypeCode::Double,
            15 => TypeCode::Decimal,
            16 => TypeCode::DateTime,
            17 => TypeCode::Guid,
            18 => TypeCode::String,
            19 => TypeCode::Array,
            other => TypeCode::Unknown(other),
        }
    }

    pub fn code(self) -> u32 {
        match self {
            TypeCode::Object => 1,
            TypeCode::Boolean => 3,
            TypeCode::Char16 => 4,
            TypeCode::SByte => 5,
            TypeCode::Byte => 6,
            TypeCode::Int16 => 7,
            TypeCode::UInt16 => 8,
            TypeCode::Int32 => 9,
            TypeCode::UInt32 => 10,
            TypeCode::Int64 => 11,
            TypeCode::UInt64 => 12,
            TypeCode::Single => 13,
            TypeCode::Double => 14,
            TypeCode::Decimal => 15,
            TypeCode::DateTime => 16,
            TypeCode::Guid => 17,
            TypeCode::String => 18,
            TypeCode::Array => 19,
            TypeCode::Unknown(c) => c,
        }
    }
}

/// One payload field as described by the metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldMetadata {
    pub name: String,
    pub type_code: TypeCode,
    /// Fields of an `Object`; empty otherwise.
    pub nested: Vec<FieldMetadata>,
    /// Element description of an `Array`; `None` otherwise.
    pub element: Option<Box<FieldMetadata>>,
}

impl FieldMetadata {
    /// A scalar field (convenience for tests and hand-built metadata).
    pub fn scalar(name: &str, type_code: TypeCode) -> Self {
        FieldMetadata { name: name.to_string(), type_code, nested: Vec::new(), element: None }
    }
}

/// Description of one event type. Runtime (native) events carry an empty name and no
/// fields: only provider, id, version, keywords and level are meaningful.
#[derive(Debug, Clone, PartialEq)]
pub struct EventMetadata {
    pub metadata_id: u32,
    pub provider: String,
    pub event_id: u32,
    pub event_name: String,
    pub keywords: u64,
    pub version: u32,
    pub level: u32,
    /// From the V5 OpCode tag, when present.
    pub opcode: Option<u8>,
    pub fields: Vec<FieldMetadata>,
}

/// Result of parsing one record: the metadata plus whether its field list had to be
/// dropped because it could not be parsed (the header was fine).
pub(crate) struct ParsedMetadata {
    pub(crate) metadata: EventMetadata,
    pub(crate) fields_dropped: bool,
}

/// Parse one metadata record. Header errors are fatal; field-list errors are tolerated
/// (the fields are dropped) because TraceEvent does the same so that newer descriptive
/// data does not make a whole trace unreadable.
pub(crate) fn parse_metadata_record(payload: &[u8], base: u64) -> Result<ParsedMetadata, Error> {
    let mut c = Cursor::new(payload, base);
    let metadata_id = c.u32("metadata id")?;
    let provider = utf16_to_string(c.utf16z("metadata provider name")?);
    let event_id = c.u32("metadata event id")?;
    let event_name = utf16_to_string(c.utf16z("metadata event name")?);
    let keywords = c.u64("metadata keywords")?;
    let version = c.u32("metadata version")?;
    let level = c.u32("metadata level")?;
    let mut md = EventMetadata {
        metadata_id,
        provider,
        event_id,
        event_name,
        keywords,
        version,
        level,
        opcode: None,
        fields: Vec::new(),
    };
    let mut fields_dropped = false;
    // The V1 parameter list is absent entirely for native runtime events.
    if c.is_empty() {
        return Ok(ParsedMetadata { metadata: md, fields_dropped });
    }
    match parse_fields_v1(&mut c, 0) {
        Ok(f) => md.fields = f,
        Err(_) => {
            // Without the V1 list we cannot find the tags that follow: stop here.
            return Ok(ParsedMetadata { metadata: md, fields_dropped: true });
        }
    }
    // V5 tags until the record ends.
    while !c.is_empty() {
        let Ok(len) = c.u32("metadata tag length") else {
            fields_dropped = true;
            break;
        };
        let Ok(kind) = c.u8("metadata tag kind") else {
            fields_dropped = true;
            break;
        };
        let Ok(body) = c.bytes(len as usize, "metadata tag body") else {
            fields_dropped = true;
            break;
        };
        let body_base = c.offset() - u64::from(len);
        match kind {
            1 => md.opcode = body.first().copied(),
            2 => {
                let mut tc = Cursor::new(body, body_base);
                match parse_fields_v2(&mut tc, 0) {
                    Ok(f) => md.fields = f,
                    Err(_) => {
                        md.fields.clear();
                        fields_dropped = true;
                    }
                }
            }
            _ => {} // unknown tags are skippable by design
        }
    }
    Ok(ParsedMetadata { metadata: md, fields_dropped })
}

fn field_count(c: &mut Cursor<'_>) -> Result<u32, Error> {
    let n = c.i32("field count")?;
    u32::try_from(n).map_err(|_| c.err("negative field count"))
}

fn parse_fields_v1(c: &mut Cursor<'_>, depth: u32) -> Result<Vec<FieldMetadata>, Error> {
    if depth > MAX_FIELD_DEPTH {
        return Err(c.err("metadata fields nested too deeply"));
    }
    let count = field_count(c)?;
    // Every field takes at least 6 bytes (type code + empty name), which bounds the
    // allocation by the input rather than by the declared count.
    let mut fields = Vec::with_capacity((count as usize).min(c.remaining() / 6));
    for _ in 0..count {
        let type_code = TypeCode::from_code(c.u32("field type code")?);
        let nested = match type_code {
            TypeCode::Object => parse_fields_v1(c, depth + 1)?,
            TypeCode::Array => return Err(c.err("array type code in a V1 field list")),
            _ => Vec::new(),
        };
        let name = utf16_to_string(c.utf16z("field name")?);
        fields.push(FieldMetadata { name, type_code, nested, element: None });
    }
    Ok(fields)
}

fn parse_fields_v2(c: &mut Cursor<'_>, depth: u32) -> Result<Vec<FieldMetadata>, Error> {
    if depth > MAX_FIELD_DEPTH {
        return Err(c.err("metadata fields nested too deeply"));
    }
    let count = field_count(c)?;
    let mut fields = Vec::with_capacity((count as usize).min(c.remaining() / 10));
    for _ in 0..count {
        let size = c.u32("V2 field size")?;
        let body_len = size.checked_sub(4).ok_or_else(|| c.err("V2 field size smaller than its own size field"))?;
        let base = c.offset();
        let body = c.bytes(body_len as usize, "V2 field body")?;
        let mut fc = Cursor::new(body, base);
        let name = utf16_to_string(fc.utf16z("V2 field name")?);
        // Trailing bytes inside the declared size are padding.
        fields.push(parse_type_v2(&mut fc, name, depth)?);
    }
    Ok(fields)
}

fn parse_type_v2(c: &mut Cursor<'_>, name: String, depth: u32) -> Result<FieldMetadata, Error> {
    if depth > MAX_FIELD_DEPTH {
        return Err(c.err("metadata fields nested too deeply"));
    }
    let type_code = TypeCode::from_code(c.u32("V2 type code")?);
    let mut field = FieldMetadata { name, type_code, nested: Vec::new(), element: None };
    match type_code {
        TypeCode::Object => field.nested = parse_fields_v2(c, depth + 1)?,
        TypeCode::Array => {
            let element = parse_type_v2(c, field.name.clone(), depth + 1)?;
            field.element = Some(Box::new(element));
        }
        _ => {}
    }
    Ok(field)
}

/// Metadata table indexed by metadata id. Ids are small and dense in practice (the
/// runtime counts from 1), so a direct-indexed vector makes the per-event lookup a single
/// bounds check; ids beyond the dense range go to a map.
#[derive(Default)]
pub(crate) struct MetadataTable {
    dense: Vec<Option<EventMetadata>>,
    sparse: std::collections::HashMap<u32, EventMetadata>,
    count: usize,
}

/// Real sessions define at most a few hundred event types; larger ids (hostile or
/// exotic) go to the map so a single huge id cannot force a huge vector.
const DENSE_LIMIT: u32 = 4096;

impl MetadataTable {
    #[inline]
    pub(crate) fn get(&self, id: u32) -> Option<&EventMetadata> {
        if id < DENSE_LIMIT { self.dense.get(id as usize).and_then(|m| m.as_ref()) } else { self.sparse.get(&id) }
    }

    /// Insert or replace; returns true when the id was new.
    pub(crate) fn insert(&mut self, md: EventMetadata) -> bool {
        let id = md.metadata_id;
        let was_new = if id < DENSE_LIMIT {
            let idx = id as usize;
            if self.dense.len() <= idx {
                self.dense.resize_with(idx + 1, || None);
            }
            self.dense[idx].replace(md).is_none()
        } else {
            self.sparse.insert(id, md).is_none()
        };
        if was_new {
            self.count += 1;
        }
        was_new
    }

    pub(crate) fn len(&self) -> usize {
        self.count
    }
}
