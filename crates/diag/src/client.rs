//! Sending Diagnostics IPC commands to one runtime.
//!
//! The protocol allows one command per connection: the runtime answers, may stream more on the
//! same socket (an EventPipe session), and closes it. A [`DiagnosticsClient`] therefore holds
//! an [`Endpoint`] and opens a fresh connection per command: to the runtime's socket in
//! connect mode, or by taking the next connection the runtime made to us in listen mode.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::Error;
use crate::protocol::{self, DumpType, HR_UNKNOWN_COMMAND, ProcessInfo, Reply, SessionConfig, command};
use crate::reverse::ReverseRuntime;

/// How to reach a runtime.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// The runtime's own listening socket (`dotnet-diagnostic-<pid>-<key>-socket`).
    Socket(PathBuf),
    /// A runtime that connected to our listen socket (`DOTNET_DiagnosticPorts`).
    Reverse(Arc<ReverseRuntime>),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Socket(p) => write!(f, "{}", p.display()),
            Endpoint::Reverse(r) => write!(f, "reverse connection from pid {}", r.pid()),
        }
    }
}

/// Timeouts for the different kinds of commands. A dump of a big heap takes long; a
/// ProcessInfo that takes more than seconds means a stuck runtime.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub reply: Duration,
    pub dump: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self { connect: Duration::from_secs(5), reply: Duration::from_secs(10), dump: Duration::from_secs(600) }
    }
}

#[derive(Debug, Clone)]
pub struct DiagnosticsClient {
    endpoint: Endpoint,
    timeouts: Timeouts,
}

impl DiagnosticsClient {
    pub fn new(endpoint: Endpoint) -> Self {
        Self { endpoint, timeouts: Timeouts::default() }
    }

    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// A fresh connection for one command.
    pub async fn connect(&self) -> Result<UnixStream, Error> {
        let what = format!("connecting to {}", self.endpoint);
        let fut = async {
            match &self.endpoint {
                Endpoint::Socket(path) => connect_socket(path).await,
                Endpoint::Reverse(rt) => rt.next_connection().await,
            }
        };
        with_timeout(self.timeouts.connect, what, fut).await?
    }

    /// Send one command and read its reply header and payload. The connection is returned so
    /// that streaming commands can keep reading from it.
    async fn request(
        &self,
        name: &'static str,
        set: u8,
        id: u8,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<(Reply, UnixStream), Error> {
        let msg = protocol::encode_message(set, id, payload)?;
        let mut stream = self.connect().await?;
        let ep = self.endpoint.to_string();
        stream.write_all(&msg).await.map_err(Error::io(format!("sending {name} to {ep}")))?;
        let reply =
            with_timeout(timeout, format!("the reply to {name} from {ep}"), read_reply(&mut stream, name)).await??;
        Ok((reply, stream))
    }

    /// Like [`request`](Self::request), but an error reply becomes `Err` and 'unknown command'
    /// becomes [`Error::Unsupported`] so callers can fall back to an older command.
    async fn call(
        &self,
        name: &'static str,
        set: u8,
        id: u8,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<(Vec<u8>, UnixStream), Error> {
        match self.request(name, set, id, payload, timeout).await? {
            (Reply::Ok(p), s) => Ok((p, s)),
            (Reply::Error { hresult, .. }, _) if hresult == HR_UNKNOWN_COMMAND => {
                Err(Error::Unsupported { command: name })
            }
            (Reply::Error { hresult, message }, _) => Err(Error::Runtime { command: name, hresult, message }),
        }
    }

    /// ProcessInfo3 → 2 → 1. .NET Core 3.1 has none of them: that is `Error::Unsupported`,
    /// and callers use what `/proc` tells them instead.
    pub async fn process_info(&self) -> Result<ProcessInfo, Error> {
        let attempts = [
            ("ProcessInfo3", command::PROCESS_INFO3),
            ("ProcessInfo2", command::PROCESS_INFO2),
            ("ProcessInfo", command::PROCESS_INFO),
        ];
        let mut last = None;
        for (name, id) in attempts {
            match self.call(name, command::SET_PROCESS, id, &[], self.timeouts.reply).await {
                Ok((payload, _)) => return protocol::parse_process_info(&payload, id),
                Err(e @ (Error::Unsupported { .. } | Error::Runtime { .. })) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(Error::Unsupported { command: "ProcessInfo" }))
    }

    /// The process's environment (.NET 5+).
    pub async fn environment(&self) -> Result<Vec<(String, String)>, Error> {
        let (payload, mut stream) = self
            .call("ProcessEnvironment", command::SET_PROCESS, command::PROCESS_ENVIRONMENT, &[], self.timeouts.reply)
            .await?;
        let n = protocol::PayloadReader::new(&payload).u32()? as usize;
        // The block is streamed after the reply; bound it so a bad length cannot exhaust memory.
        if n > 64 << 20 {
            return Err(Error::BadReply(format!("environment block of {n} bytes is implausible")));
        }
        let mut block = vec![0u8; n];
        with_timeout(self.timeouts.reply, "the environment block".into(), stream.read_exact(&mut block))
            .await?
            .map_err(Error::io("reading the environment block"))?;
        protocol::parse_environment(&block)
    }

    /// Let a runtime that waits at startup (`suspend` diagnostic port) continue. A no-op for a
    /// runtime that is not suspended.
    pub async fn resume_runtime(&self) -> Result<(), Error> {
        self.call("ResumeRuntime", command::SET_PROCESS, command::RESUME_RUNTIME, &[], self.timeouts.reply).await?;
        Ok(())
    }

    /// Ask the runtime to write a core dump to `path` (a path in the *runtime's* mount
    /// namespace). Newest command first: v3 carries an error message, v1 exists on 3.x.
    pub async fn write_dump(&self, path: &str, dump_type: DumpType, diagnostics_logging: bool) -> Result<(), Error> {
        let flags = diagnostics_logging as u32;
        let payload = protocol::dump_payload(path, dump_type, flags);
        let attempts = [
            ("GenerateCoreDump3", command::GENERATE_CORE_DUMP3),
            ("GenerateCoreDump2", command::GENERATE_CORE_DUMP2),
            ("GenerateCoreDump", command::GENERATE_CORE_DUMP),
        ];
        for (name, id) in attempts {
            match self.call(name, command::SET_DUMP, id, &payload, self.timeouts.dump).await {
                Ok(_) => return Ok(()),
                Err(Error::Unsupported { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Unsupported { command: "GenerateCoreDump" })
    }

    /// Start an EventPipe session. The returned stream carries the nettrace bytes; stop the
    /// session with [`stop_tracing`](Self::stop_tracing) on its id.
    pub async fn collect_tracing(&self, config: &SessionConfig) -> Result<(u64, UnixStream), Error> {
        // CollectTracing2 works from 3.0 on; v3 is only needed to turn stack walking off.
        let (name, id) = if config.request_stackwalk {
            ("CollectTracing2", command::COLLECT_TRACING2)
        } else {
            ("CollectTracing3", command::COLLECT_TRACING3)
        };
        let payload = protocol::collect_tracing_payload(config, id);
        let (reply, stream) = self.call(name, command::SET_EVENTPIPE, id, &payload, self.timeouts.reply).await?;
        let session_id = protocol::PayloadReader::new(&reply).u64()?;
        Ok((session_id, stream))
    }

    /// Stop a session; the runtime then flushes (and runs rundown if asked) and closes the
    /// session's stream.
    pub async fn stop_tracing(&self, session_id: u64) -> Result<(), Error> {
        let payload = session_id.to_le_bytes();
        self.call("StopTracing", command::SET_EVENTPIPE, command::STOP_TRACING, &payload, self.timeouts.reply).await?;
        Ok(())
    }
}

async fn read_reply(stream: &mut UnixStream, name: &str) -> Result<Reply, Error> {
    let mut header = [0u8; protocol::HEADER_LEN];
    stream.read_exact(&mut header).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => Error::Disconnected(format!("answering {name}")),
        _ => Error::Io { what: format!("reading the reply to {name}"), source: e },
    })?;
    let header = protocol::parse_header(&header)?;
    let mut payload = vec![0u8; header.payload_len];
    stream.read_exact(&mut payload).await.map_err(Error::io(format!("reading the reply payload of {name}")))?;
    protocol::parse_reply(header, payload)
}

/// Connect to a Unix socket. `sun_path` holds 107 bytes: a deep `/proc/<pid>/root/...` path
/// can be longer, so we then go through a directory fd (`/proc/self/fd/<n>/<name>`).
pub async fn connect_socket(path: &Path) -> Result<UnixStream, Error> {
    let what = || format!("connecting to {}", path.display());
    if path.as_os_str().len() < 100 {
        return UnixStream::connect(path).await.map_err(Error::io(what()));
    }
    let dir = path.parent().ok_or_else(|| Error::Invalid(format!("{} has no parent", path.display())))?;
    let name = path.file_name().ok_or_else(|| Error::Invalid(format!("{} has no file name", path.display())))?;
    let dir_file = std::fs::File::open(dir).map_err(Error::io(format!("opening {}", dir.display())))?;
    use std::os::fd::AsRawFd;
    let short = PathBuf::from(format!("/proc/self/fd/{}", dir_file.as_raw_fd())).join(name);
    let r = UnixStream::connect(&short).await.map_err(Error::io(what()));
    drop(dir_file);
    r
}

pub(crate) async fn with_timeout<T>(
    d: Duration,
    what: String,
    f: impl std::future::Future<Output = T>,
) -> Result<T, Error> {
    tokio::time::timeout(d, f).await.map_err(|_| Error::Timeout { what, seconds: d.as_secs_f64() })
}
