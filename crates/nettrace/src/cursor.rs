//! Bounds-checked little-endian reads over a byte slice.
//!
//! Every read either succeeds or returns `Error::Malformed` carrying the absolute offset
//! of the failing read, so callers never index slices directly.

use crate::Error;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
    /// Absolute offset of `data[0]`, only used for error reporting.
    base: u64,
}

impl<'a> Cursor<'a> {
    #[inline]
    pub(crate) fn new(data: &'a [u8], base: u64) -> Self {
        Cursor { data, pos: 0, base }
    }

    #[inline]
    pub(crate) fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    #[inline]
    pub(crate) fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    #[inline]
    pub(crate) fn rest(&self) -> &'a [u8] {
        &self.data[self.pos..]
    }

    #[inline]
    pub(crate) fn err(&self, what: &'static str) -> Error {
        Error::malformed(self.offset(), what)
    }

    #[inline]
    pub(crate) fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Error> {
        if n > self.remaining() {
            return Err(self.err(what));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    #[inline]
    pub(crate) fn skip(&mut self, n: usize, what: &'static str) -> Result<(), Error> {
        self.bytes(n, what).map(|_| ())
    }

    #[inline]
    pub(crate) fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], Error> {
        let s = self.bytes(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    #[inline]
    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, Error> {
        Ok(self.array::<1>(what)?[0])
    }

    #[inline]
    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, Error> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    #[inline]
    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, Error> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    #[inline]
    pub(crate) fn i32(&mut self, what: &'static str) -> Result<i32, Error> {
        Ok(i32::from_le_bytes(self.array(what)?))
    }

    #[inline]
    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, Error> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    #[inline]
    pub(crate) fn i64(&mut self, what: &'static str) -> Result<i64, Error> {
        Ok(i64::from_le_bytes(self.array(what)?))
    }

    /// A pointer-sized value (`win:Pointer`), widened to u64.
    #[inline]
    pub(crate) fn ptr(&mut self, pointer_size: u32, what: &'static str) -> Result<u64, Error> {
        match pointer_size {
            4 => self.u32(what).map(u64::from),
            _ => self.u64(what),
        }
    }

    /// Unsigned LEB128, at most 5 bytes; bits beyond 32 are an error rather than silently dropped.
    #[inline]
    pub(crate) fn varu32(&mut self, what: &'static str) -> Result<u32, Error> {
        let v = self.varu64_max(5, what)?;
        u32::try_from(v).map_err(|_| self.err(what))
    }

    /// Unsigned LEB128, at most 10 bytes.
    #[inline]
    pub(crate) fn varu64(&mut self, what: &'static str) -> Result<u64, Error> {
        self.varu64_max(10, what)
    }

    #[inline]
    fn varu64_max(&mut self, max_bytes: u32, what: &'static str) -> Result<u64, Error> {
        let mut value: u64 = 0;
        let mut shift: u32 = 0;
        for _ in 0..max_bytes {
            let b = self.u8(what)?;
            // checked_shl never fails here (shift <= 63); overflowing high bits are dropped
            // like the runtime's own reader does, except for the u32 range check above.
            value |= u64::from(b & 0x7f).checked_shl(shift).unwrap_or(0);
            if b & 0x80 == 0 {
                return Ok(value);
            }
            shift += 7;
        }
        Err(self.err(what))
    }

    /// A NUL-terminated UTF-16LE string; returns the code-unit bytes without the terminator.
    #[inline]
    pub(crate) fn utf16z(&mut self, what: &'static str) -> Result<&'a [u8], Error> {
        let rest = self.rest();
        let mut i = 0;
        while i + 1 < rest.len() {
            if rest[i] == 0 && rest[i + 1] == 0 {
                self.pos += i + 2;
                return Ok(&rest[..i]);
            }
            i += 2;
        }
        Err(self.err(what))
    }

    /// Advance to the next multiple of four of the *absolute* offset, but never past the end.
    #[inline]
    pub(crate) fn align4_clamped(&mut self) {
        let pad = ((4 - (self.offset() & 3)) & 3) as usize;
        self.pos = (self.pos + pad).min(self.data.len());
    }
}

/// Decode UTF-16LE bytes (without terminator) to a String, replacing invalid units.
pub(crate) fn utf16_to_string(bytes: &[u8]) -> String {
    let units = bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]));
    char::decode_utf16(units).map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER)).collect()
}
