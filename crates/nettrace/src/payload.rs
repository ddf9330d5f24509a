//! Metadata-driven decoding of self-describing (EventSource / TraceLogging) payloads.

use crate::cursor::{Cursor, utf16_to_string};
use crate::{Error, Event, FieldMetadata, TypeCode};

/// A decoded payload value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Bool(bool),
    Char(char),
    I8(i8),
    U8(u8),
    I16(i16),
    U16(u16),
    I32(i32),
    U32(u32),
    I64(i64),
    U64(u64),
    F32(f32),
    F64(f64),
    /// Raw 16 bytes of a .NET `decimal`.
    Decimal([u8; 16]),
    /// Windows FILETIME: 100 ns ticks since 1601-01-01 UTC.
    DateTime(i64),
    /// Raw 16 bytes in .NET `Guid.ToByteArray()` order.
    Guid([u8; 16]),
    String(String),
    Array(Vec<Value>),
    Object(Vec<(String, Value)>),
}

impl Value {
    /// Any numeric value as f64 (booleans and strings are not numbers).
    pub fn as_f64(&self) -> Option<f64> {
        Some(match *self {
            Value::I8(v) => v.into(),
            Value::U8(v) => v.into(),
            Value::I16(v) => v.into(),
            Value::U16(v) => v.into(),
            Value::I32(v) => v.into(),
            Value::U32(v) => v.into(),
            Value::I64(v) => v as f64,
            Value::U64(v) => v as f64,
            Value::F32(v) => v.into(),
            Value::F64(v) => v,
            _ => return None,
        })
    }

    /// Any integer value that fits in i64.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::I8(v) => Some(v.into()),
            Value::U8(v) => Some(v.into()),
            Value::I16(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::I32(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::I64(v) => Some(v),
            Value::U64(v) => i64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// Field `name` of an `Object` value.
    pub fn get(&self, name: &str) -> Option<&Value> {
        match self {
            Value::Object(fields) => find(fields, name),
            _ => None,
        }
    }
}

/// Look a field up by name in a decoded field list.
pub fn find<'v>(fields: &'v [(String, Value)], name: &str) -> Option<&'v Value> {
    fields.iter().find(|(n, _)| n == name).map(|(_, v)| v)
}

/// Decode `payload` according to `fields`, in order. Bytes after the last field are
/// ignored (newer event versions append fields).
pub fn decode_fields(fields: &[FieldMetadata], payload: &[u8]) -> Result<Vec<(String, Value)>, Error> {
    let mut c = Cursor::new(payload, 0);
    decode_list(fields, &mut c)
}

/// Decode an event's payload from its own metadata.
pub fn decode_event(event: &Event<'_>) -> Result<Vec<(String, Value)>, Error> {
    decode_fields(&event.metadata.fields, event.payload)
}

fn decode_list(fields: &[FieldMetadata], c: &mut Cursor<'_>) -> Result<Vec<(String, Value)>, Error> {
    let mut out = Vec::with_capacity(fields.len());
    for f in fields {
        let v = decode_value(f, c)?;
        out.push((f.name.clone(), v));
    }
    Ok(out)
}

fn decode_value(f: &FieldMetadata, c: &mut Cursor<'_>) -> Result<Value, Error> {
    Ok(match f.type_code {
        TypeCode::Object => Value::Object(decode_list(&f.nested, c)?),
        TypeCode::Boolean => Value::Bool(c.u32("bool field")? != 0),
        TypeCode::Char16 => {
            let u = c.u16("char field")?;
            Value::Char(char::from_u32(u.into()).unwrap_or(char::REPLACEMENT_CHARACTER))
        }
        TypeCode::SByte => Value::I8(c.u8("sbyte field")? as i8),
        TypeCode::Byte => Value::U8(c.u8("byte field")?),
        TypeCode::Int16 => Value::I16(i16::from_le_bytes(c.array("int16 field")?)),
        TypeCode::UInt16 => Value::U16(c.u16("uint16 field")?),
        TypeCode::Int32 => Value::I32(c.i32("int32 field")?),
        TypeCode::UInt32 => Value::U32(c.u32("uint32 field")?),
        TypeCode::Int64 => Value::I64(c.i64("int64 field")?),
        TypeCode::UInt64 => Value::U64(c.u64("uint64 field")?),
        TypeCode::Single => Value::F32(f32::from_le_bytes(c.array("single field")?)),
        TypeCode::Double => Value::F64(f64::from_le_bytes(c.array("double field")?)),
        TypeCode::Decimal => Value::Decimal(c.array("decimal field")?),
        TypeCode::DateTime => Value::DateTime(c.i64("datetime field")?),
        TypeCode::Guid => Value::Guid(c.array("guid field")?),
        TypeCode::String => Value::String(utf16_to_string(c.utf16z("string field")?)),
        TypeCode::Array => {
            let element = f.element.as_deref().ok_or_else(|| c.err("array field without element type"))?;
            let count = c.u16("array count")?;
            let mut items = Vec::with_capacity(usize::from(count).min(c.remaining()));
            for _ in 0..count {
                items.push(decode_value(element, c)?);
            }
            Value::Array(items)
        }
        TypeCode::Unknown(_) => return Err(c.err("field of unknown type")),
    })
}
