//! The one error type of the `clrdump` crate.

use std::path::PathBuf;

/// Everything that can go wrong reading a core dump or driving the DAC. Each variant says
/// what the operator can do about it (wrong file, wrong DAC, truncated copy, DAC bug).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be opened or read.
    #[error("{what}")]
    Io {
        /// What we were doing.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Not an ELF x86-64 little-endian core file.
    #[error("not an x86-64 ELF core dump: {0}")]
    NotACore(String),
    /// The ELF structure is inconsistent (bad offsets, overlapping notes, …).
    #[error("corrupted core dump: {0}")]
    Corrupt(String),
    /// The file ends before the data its headers promise: an incomplete copy.
    #[error("truncated core dump: headers promise {expected} bytes, file has {actual}")]
    Truncated {
        /// Bytes the program headers require.
        expected: u64,
        /// Bytes in the file.
        actual: u64,
    },
    /// The dump holds no .NET runtime (`libcoreclr.so` is not mapped).
    #[error("no .NET runtime (libcoreclr.so) in this dump")]
    NoRuntime,
    /// The build-id of an ELF image in the dump could not be read (memory absent or damaged).
    #[error("no GNU build-id for libcoreclr.so in this dump: {0}")]
    BuildId(String),
    /// No DAC was given and none was found next to the dump or in a runtime folder.
    #[error("no DAC (libmscordaccore.so) found for runtime {runtime_version}; looked in: {looked_in}")]
    DacNotFound {
        /// The dumped runtime's version string.
        runtime_version: String,
        /// Candidate paths tried.
        looked_in: String,
    },
    /// The DAC's build does not match the dumped runtime.
    #[error(
        "DAC {dac} is version {dac_version} but the dump's runtime is {runtime_version}: use the DAC of that exact runtime build"
    )]
    DacMismatch {
        /// The DAC file.
        dac: PathBuf,
        /// Its `@(#)Version` string.
        dac_version: String,
        /// The runtime's `@(#)Version` string.
        runtime_version: String,
    },
    /// An entry of the admin DAC store is damaged or incomplete.
    #[error("DAC store entry {entry}: {why}")]
    DacStore {
        /// `<store>/<build-id>`.
        entry: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The DAC could not be loaded or refused to initialize.
    #[error("DAC failed: {0}")]
    Dac(String),
    /// A DAC call failed with an HRESULT.
    #[error("DAC call {call} failed with HRESULT {hr:#010x}")]
    DacCall {
        /// The interface method.
        call: &'static str,
        /// The HRESULT, as unsigned for display.
        hr: u32,
    },
    /// The isolated worker process died or sent garbage (a DAC crash lands here).
    #[error("DAC worker failed: {0}")]
    Worker(String),
    /// The worker took longer than allowed.
    #[error("DAC worker timed out after {0} s")]
    WorkerTimeout(u64),
    /// The dump does not contain the GC heap (a mini or triage dump).
    #[error("this dump holds no GC heap ({0}): take a heap or full dump (`dumpwatch dump --type heap`)")]
    NoHeap(String),
    /// The heap walk met an inconsistent heap (dump taken mid-GC or damaged).
    #[error("heap walk failed: {0}")]
    Heap(String),
    /// The objects the worker sent do not form a graph (their references do not add up).
    #[error("object graph: {0}")]
    Graph(#[from] analysis::Error),
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { what: what.into(), source }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
