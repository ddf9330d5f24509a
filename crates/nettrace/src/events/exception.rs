//! Exception events (keyword 0x8000): every managed exception the runtime raises (first
//! chance), with the throwing thread's stack attached by EventPipe.

use super::{RuntimeEvent, Utf16Str};
use crate::Error;
use crate::cursor::Cursor;

/// ExceptionThrown_V1 (id 80, level Error): what was thrown, as `Exception.GetType().FullName`
/// and `Exception.Message`. The same layout on .NET Core 3.1 and .NET 8.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExceptionThrown<'a> {
    /// e.g. `System.InvalidOperationException`.
    pub exception_type: Utf16Str<'a>,
    pub message: Utf16Str<'a>,
    /// The instruction pointer of the throw (0 when the runtime does not know it).
    pub throw_ip: u64,
    pub hresult: u32,
    /// 0x01 has an inner exception, 0x02 nested, 0x04 rethrown, 0x08 corrupted state,
    /// 0x10 CLS compliant.
    pub flags: u16,
}

impl ExceptionThrown<'_> {
    pub const RETHROWN: u16 = 0x04;
}

/// `string ExceptionType, string ExceptionMessage, ptr ExceptionEIPCodeThrow,
/// u32 ExceptionHRESULT, u16 ExceptionFlags, u16 ClrInstanceID`. Version 0 has no payload
/// (the runtime has written version 1 since .NET Framework 4): refused as malformed rather
/// than reported as an exception without a type.
pub(super) fn thrown(p: &[u8], version: u32, ptr: u32) -> Result<RuntimeEvent<'_>, Error> {
    if version < 1 {
        return Err(Error::malformed(0, "ExceptionThrown version 0 carries no exception"));
    }
    let mut c = Cursor::new(p, 0);
    let exception_type = Utf16Str::from_bytes(c.utf16z("ExceptionThrown ExceptionType")?);
    let message = Utf16Str::from_bytes(c.utf16z("ExceptionThrown ExceptionMessage")?);
    let throw_ip = c.ptr(ptr, "ExceptionThrown ExceptionEIPCodeThrow")?;
    let hresult = c.u32("ExceptionThrown ExceptionHRESULT")?;
    let flags = c.u16("ExceptionThrown ExceptionFlags")?;
    Ok(RuntimeEvent::ExceptionThrown(ExceptionThrown { exception_type, message, throw_ip, hresult, flags }))
}
