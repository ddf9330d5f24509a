//! The crate's single error type.

/// Everything that can go wrong while reading a nettrace stream or decoding an event.
///
/// Offsets are absolute stream offsets (counted from the `N` of `Nettrace`) for framing
/// errors, and offsets into the event payload for payload decoding errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The stream does not start with `Nettrace` + `!FastSerialization.1`.
    #[error("not a nettrace stream (bad magic)")]
    BadMagic,
    /// A nettrace format version this reader does not implement (V6, or pre-V4 NetPerf).
    #[error("{}", unsupported_message(*.major))]
    UnsupportedVersion { major: u32 },
    /// Input ended (after [`crate::Reader::finish_input`]) before the end-of-stream tag.
    #[error("nettrace stream truncated at offset {offset}")]
    Truncated { offset: u64 },
    /// A block announced more bytes than the reader's limit allows.
    #[error("nettrace block of {size} bytes exceeds the limit of {limit} bytes")]
    BlockTooLarge { size: u64, limit: u64 },
    /// Structurally invalid data.
    #[error("malformed nettrace data at offset {offset}: {what}")]
    Malformed { offset: u64, what: &'static str },
    /// An event refers to a metadata id that no MetadataBlock defined.
    #[error("event at offset {offset} refers to unknown metadata id {id}")]
    UnknownMetadataId { id: u32, offset: u64 },
    /// An object type this reader does not know how to skip.
    #[error("unknown nettrace object type {name:?} at offset {offset}")]
    UnknownObject { name: String, offset: u64 },
    /// A configured resource limit was hit (metadata count, stack cache size).
    #[error("nettrace reader limit exceeded: {what}")]
    LimitExceeded { what: &'static str },
    /// The reader returned an error earlier; it does not resynchronise.
    #[error("nettrace reader already failed on an earlier error")]
    Poisoned,
    /// An I/O error from [`crate::read_from`].
    #[error("i/o error while reading nettrace: {0}")]
    Io(#[from] std::io::Error),
}

fn unsupported_message(major: u32) -> String {
    if major >= 6 {
        "nettrace V6 streams are not supported yet".to_string()
    } else {
        format!("nettrace format version {major} is not supported (need V4 or V5)")
    }
}

impl Error {
    pub(crate) fn malformed(offset: u64, what: &'static str) -> Self {
        Error::Malformed { offset, what }
    }
}
