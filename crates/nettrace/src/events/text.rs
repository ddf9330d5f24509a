//! Zero-copy view of a UTF-16LE string inside an event payload.

use std::fmt;

/// A UTF-16LE string (terminator excluded) borrowed from a payload. Decoding is deferred
/// so that bulk decoders never allocate; invalid code units decode to U+FFFD.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Utf16Str<'a> {
    bytes: &'a [u8],
}

impl<'a> Utf16Str<'a> {
    /// `bytes` must hold whole code units; a trailing odd byte is ignored.
    pub fn from_bytes(bytes: &'a [u8]) -> Self {
        Utf16Str { bytes: &bytes[..bytes.len() & !1] }
    }

    /// The raw UTF-16LE bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Number of UTF-16 code units.
    pub fn len_utf16(&self) -> usize {
        self.bytes.len() / 2
    }

    pub fn chars(&self) -> impl Iterator<Item = char> + 'a {
        let units = self.bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]));
        char::decode_utf16(units).map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
    }

    pub fn to_string_lossy(&self) -> String {
        self.chars().collect()
    }

    /// Compare with a `&str` without allocating.
    pub fn eq_str(&self, s: &str) -> bool {
        let mut units = s.encode_utf16();
        for c in self.bytes.chunks_exact(2) {
            match units.next() {
                Some(u) if u == u16::from_le_bytes([c[0], c[1]]) => {}
                _ => return false,
            }
        }
        units.next().is_none()
    }
}

impl fmt::Display for Utf16Str<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write;
        for c in self.chars() {
            f.write_char(c)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Utf16Str<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_string_lossy(), f)
    }
}

impl PartialEq<str> for Utf16Str<'_> {
    fn eq(&self, other: &str) -> bool {
        self.eq_str(other)
    }
}

impl PartialEq<&str> for Utf16Str<'_> {
    fn eq(&self, other: &&str) -> bool {
        self.eq_str(other)
    }
}
