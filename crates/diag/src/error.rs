use std::path::PathBuf;

/// Everything that can go wrong talking to a runtime. Variants say what to do next where
/// there is something to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("request of {len} bytes exceeds the 65535-byte limit of a Diagnostics IPC message")]
    RequestTooLarge { len: usize },

    #[error("malformed reply from the runtime: {0}")]
    BadReply(String),

    #[error("the runtime refused {command}: {} (HRESULT 0x{:08x}){}",
        crate::protocol::hresult_name(*hresult), *hresult as u32,
        message.as_deref().filter(|m| !m.is_empty()).map(|m| format!(": {m}")).unwrap_or_default())]
    Runtime { command: &'static str, hresult: i32, message: Option<String> },

    #[error("{command} is not supported by this runtime (it answered 'unknown command')")]
    Unsupported { command: &'static str },

    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },

    #[error("timed out after {seconds:.1} s waiting for {what}")]
    Timeout { what: String, seconds: f64 },

    #[error("process {pid} is not a .NET process we can reach: {reason}")]
    NoEndpoint { pid: u32, reason: String },

    #[error("the runtime closed the connection before {0}")]
    Disconnected(String),

    #[error("not enough free space in {dir}: {needed} bytes needed (estimate), {available} available")]
    InsufficientDisk { dir: PathBuf, needed: u64, available: u64 },

    #[error("{0}")]
    Invalid(String),

    /// A `System.Diagnostics.Metrics` event whose payload is not what its name and version promise.
    #[error("malformed {event} event of System.Diagnostics.Metrics: {reason}")]
    MeterPayload { event: String, reason: String },

    #[error(transparent)]
    Trace(#[from] nettrace::Error),

    #[error(transparent)]
    Analysis(#[from] analysis::Error),
}

impl Error {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}
