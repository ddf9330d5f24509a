//! The Diagnostics IPC wire format: message framing, request payloads and reply parsing.
//!
//! Everything here is pure (bytes in, values out) so that it can be unit-tested and fuzzed
//! without a runtime. Layouts follow the runtime's `ds-protocol.c` and the public IPC design
//! document; all integers are little-endian.

use crate::Error;

/// `"DOTNET_IPC_V1\0"`: every request and reply header starts with it.
pub const MAGIC: &[u8; 14] = b"DOTNET_IPC_V1\0";
/// Size of the fixed header (magic, u16 size, command set, command id, u16 reserved).
pub const HEADER_LEN: usize = 20;
/// The size field is a u16 that counts the header too.
pub const MAX_MESSAGE_LEN: usize = u16::MAX as usize;

/// HRESULT the runtime answers when it does not know a command: the signal to fall back.
pub const HR_UNKNOWN_COMMAND: i32 = 0x8013_1385_u32 as i32;

/// Command sets and ids, named as in the IPC design document.
pub mod command {
    pub const SET_DUMP: u8 = 0x01;
    pub const SET_EVENTPIPE: u8 = 0x02;
    pub const SET_PROCESS: u8 = 0x04;
    pub const SET_SERVER: u8 = 0xFF;

    pub const GENERATE_CORE_DUMP: u8 = 0x01;
    pub const GENERATE_CORE_DUMP2: u8 = 0x02;
    pub const GENERATE_CORE_DUMP3: u8 = 0x03;

    pub const STOP_TRACING: u8 = 0x01;
    pub const COLLECT_TRACING: u8 = 0x02;
    pub const COLLECT_TRACING2: u8 = 0x03;
    pub const COLLECT_TRACING3: u8 = 0x04;

    pub const PROCESS_INFO: u8 = 0x00;
    pub const RESUME_RUNTIME: u8 = 0x01;
    pub const PROCESS_ENVIRONMENT: u8 = 0x02;
    pub const PROCESS_INFO2: u8 = 0x04;
    pub const PROCESS_INFO3: u8 = 0x08;

    pub const SERVER_OK: u8 = 0x00;
    pub const SERVER_ERROR: u8 = 0xFF;
}

/// Kind of core dump the runtime writes (values of the `dumpType` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DumpType {
    /// Stacks and module list only: small, but no heap or locks.
    Mini = 1,
    /// Everything needed to walk the GC heap and the sync blocks (what the analyzer wants).
    WithHeap = 2,
    /// A mini dump with personal data removed.
    Triage = 3,
    /// Every mapped page: the largest.
    Full = 4,
}

impl DumpType {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "mini" | "normal" => Some(Self::Mini),
            "heap" | "withheap" | "with-heap" => Some(Self::WithHeap),
            "triage" => Some(Self::Triage),
            "full" => Some(Self::Full),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Mini => "mini",
            Self::WithHeap => "heap",
            Self::Triage => "triage",
            Self::Full => "full",
        }
    }
}

/// One EventPipe provider to enable in a tracing session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    pub name: String,
    pub keywords: u64,
    /// 1 critical .. 5 verbose.
    pub level: u32,
    /// `key=value` pairs joined with `;` (e.g. `EventCounterIntervalSec=1`).
    pub arguments: String,
}

impl Provider {
    pub fn new(name: &str, keywords: u64, level: u32) -> Self {
        Self { name: name.to_string(), keywords, level, arguments: String::new() }
    }

    pub fn with_arguments(mut self, arguments: impl Into<String>) -> Self {
        self.arguments = arguments.into();
        self
    }
}

/// What a tracing session asks for. `request_stackwalk = false` needs CollectTracing3 (.NET 8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    pub circular_buffer_mb: u32,
    pub request_rundown: bool,
    pub request_stackwalk: bool,
    pub providers: Vec<Provider>,
}

impl SessionConfig {
    pub fn new(providers: Vec<Provider>) -> Self {
        Self { circular_buffer_mb: 256, request_rundown: false, request_stackwalk: true, providers }
    }
}

/// A request message: header plus payload, ready to write to the socket.
pub fn encode_message(command_set: u8, command_id: u8, payload: &[u8]) -> Result<Vec<u8>, Error> {
    let len = HEADER_LEN + payload.len();
    if len > MAX_MESSAGE_LEN {
        return Err(Error::RequestTooLarge { len });
    }
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(len as u16).to_le_bytes());
    out.push(command_set);
    out.push(command_id);
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

/// Little builder for request payloads in the IPC encoding.
#[derive(Default)]
pub struct PayloadWriter {
    buf: Vec<u8>,
}

impl PayloadWriter {
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// u32 count of UTF-16 units including the NUL, then the units; the runtime rejects a
    /// non-empty string without the NUL, and count 0 stands for an empty string.
    pub fn string(&mut self, s: &str) -> &mut Self {
        if s.is_empty() {
            return self.u32(0);
        }
        let units: Vec<u16> = s.encode_utf16().chain(std::iter::once(0)).collect();
        self.u32(units.len() as u32);
        for u in units {
            self.buf.extend_from_slice(&u.to_le_bytes());
        }
        self
    }
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }
}

/// Payload of GenerateCoreDump (v1: the third field is a logging bool sent as u32) and of
/// GenerateCoreDump2/3 (a flags word); the layout is the same.
pub fn dump_payload(path: &str, dump_type: DumpType, flags: u32) -> Vec<u8> {
    PayloadWriter::default().string(path).u32(dump_type as u32).u32(flags).finish()
}

/// Payload of CollectTracing2 (v3 adds the stackwalk bool after the rundown bool).
pub fn collect_tracing_payload(config: &SessionConfig, version: u8) -> Vec<u8> {
    let mut w = PayloadWriter::default();
    w.u32(config.circular_buffer_mb).u32(1 /* nettrace */);
    w.u8(config.request_rundown as u8);
    if version >= command::COLLECT_TRACING3 {
        w.u8(config.request_stackwalk as u8);
    }
    w.u32(config.providers.len() as u32);
    for p in &config.providers {
        w.u64(p.keywords).u32(p.level).string(&p.name).string(&p.arguments);
    }
    w.finish()
}

/// A reply header as read from the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyHeader {
    pub command_set: u8,
    pub command_id: u8,
    /// Bytes of payload that follow the header.
    pub payload_len: usize,
}

pub fn parse_header(bytes: &[u8; HEADER_LEN]) -> Result<ReplyHeader, Error> {
    if &bytes[..14] != MAGIC {
        return Err(Error::BadReply("reply does not start with DOTNET_IPC_V1".into()));
    }
    let size = u16::from_le_bytes([bytes[14], bytes[15]]) as usize;
    if size < HEADER_LEN {
        return Err(Error::BadReply(format!("reply size {size} is smaller than its header")));
    }
    Ok(ReplyHeader { command_set: bytes[16], command_id: bytes[17], payload_len: size - HEADER_LEN })
}

/// The outcome of a command: OK with its payload, or the runtime's error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Ok(Vec<u8>),
    Error { hresult: i32, message: Option<String> },
}

/// Classify a full reply (header + payload). GenerateCoreDump3 errors carry a message string
/// after the HRESULT; other errors carry only the HRESULT.
pub fn parse_reply(header: ReplyHeader, payload: Vec<u8>) -> Result<Reply, Error> {
    if header.command_set != command::SET_SERVER {
        return Err(Error::BadReply(format!(
            "reply has command set 0x{:02x}, expected the server set 0xff",
            header.command_set
        )));
    }
    match header.command_id {
        command::SERVER_OK => Ok(Reply::Ok(payload)),
        command::SERVER_ERROR => {
            let mut r = PayloadReader::new(&payload);
            let hresult = r.u32()? as i32;
            let message = if r.remaining() > 0 { Some(r.string()?) } else { None };
            Ok(Reply::Error { hresult, message })
        }
        other => Err(Error::BadReply(format!("unknown server reply id 0x{other:02x}"))),
    }
}

/// Bounds-checked reader for reply payloads; every failure is a typed error, never a panic.
pub struct PayloadReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> PayloadReader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if self.remaining() < n {
            return Err(Error::BadReply(format!(
                "payload ends at byte {} but {} more bytes were expected",
                self.bytes.len(),
                n
            )));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    pub fn u16(&mut self) -> Result<u16, Error> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }
    pub fn u32(&mut self) -> Result<u32, Error> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    pub fn u64(&mut self) -> Result<u64, Error> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    pub fn guid(&mut self) -> Result<[u8; 16], Error> {
        Ok(self.take(16)?.try_into().expect("16 bytes"))
    }
    /// A u32 unit count (including the NUL) then UTF-16LE units.
    pub fn string(&mut self) -> Result<String, Error> {
        let count = self.u32()? as usize;
        if count == 0 {
            return Ok(String::new());
        }
        let bytes = self.take(count.checked_mul(2).ok_or_else(|| Error::BadReply("string too long".into()))?)?;
        let mut units: Vec<u16> = bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
        if units.last() == Some(&0) {
            units.pop();
        }
        Ok(String::from_utf16_lossy(&units))
    }
}

/// Answer of ProcessInfo / ProcessInfo2 / ProcessInfo3.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct ProcessInfo {
    /// The pid as the runtime sees it (inside its own PID namespace).
    pub pid: u64,
    #[serde(serialize_with = "ser_guid")]
    pub runtime_cookie: [u8; 16],
    pub command_line: String,
    pub os: String,
    pub arch: String,
    pub entrypoint_assembly: Option<String>,
    pub runtime_version: Option<String>,
    pub runtime_identifier: Option<String>,
}

fn ser_guid<S: serde::Serializer>(g: &[u8; 16], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_guid(g))
}

/// .NET `Guid.ToString()` form of 16 bytes in `ToByteArray` order.
pub fn format_guid(g: &[u8; 16]) -> String {
    let d1 = u32::from_le_bytes([g[0], g[1], g[2], g[3]]);
    let d2 = u16::from_le_bytes([g[4], g[5]]);
    let d3 = u16::from_le_bytes([g[6], g[7]]);
    let tail: String = g[8..].iter().map(|b| format!("{b:02x}")).collect();
    format!("{d1:08x}-{d2:04x}-{d3:04x}-{}-{}", &tail[..4], &tail[4..])
}

/// Parse a ProcessInfo reply of the given command id (v3 starts with a version word).
pub fn parse_process_info(payload: &[u8], command_id: u8) -> Result<ProcessInfo, Error> {
    let mut r = PayloadReader::new(payload);
    let v3_version = if command_id == command::PROCESS_INFO3 { Some(r.u32()?) } else { None };
    let mut info = ProcessInfo {
        pid: r.u64()?,
        runtime_cookie: r.guid()?,
        command_line: r.string()?,
        os: r.string()?,
        arch: r.string()?,
        ..Default::default()
    };
    if command_id == command::PROCESS_INFO2 || command_id == command::PROCESS_INFO3 {
        info.entrypoint_assembly = Some(r.string()?);
        info.runtime_version = Some(r.string()?);
    }
    if v3_version.is_some_and(|v| v >= 1) && r.remaining() > 0 {
        info.runtime_identifier = Some(r.string()?);
    }
    Ok(info)
}

/// Parse the environment block that follows a ProcessEnvironment reply: u32 count, then
/// `NAME=value` strings.
pub fn parse_environment(bytes: &[u8]) -> Result<Vec<(String, String)>, Error> {
    let mut r = PayloadReader::new(bytes);
    let count = r.u32()? as usize;
    // Each entry needs at least 4 bytes: refuse counts the payload cannot hold.
    if count > r.remaining() / 4 {
        return Err(Error::BadReply(format!("environment claims {count} entries in {} bytes", bytes.len())));
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let entry = r.string()?;
        let (k, v) = entry.split_once('=').unwrap_or((entry.as_str(), ""));
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

/// The 34-byte greeting a runtime sends when it connects to our listen socket
/// (`DOTNET_DiagnosticPorts`): magic, instance cookie, pid, reserved.
pub const ADVERTISE_LEN: usize = 34;
pub const ADVERTISE_MAGIC: &[u8; 8] = b"ADVR_V1\0";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advertise {
    pub runtime_cookie: [u8; 16],
    pub pid: u64,
}

pub fn parse_advertise(bytes: &[u8; ADVERTISE_LEN]) -> Result<Advertise, Error> {
    if &bytes[..8] != ADVERTISE_MAGIC {
        return Err(Error::BadReply("connection did not start with the ADVR_V1 advertise".into()));
    }
    Ok(Advertise {
        runtime_cookie: bytes[8..24].try_into().expect("16 bytes"),
        pid: u64::from_le_bytes(bytes[24..32].try_into().expect("8 bytes")),
    })
}

/// Human name of the HRESULTs the diagnostics server answers with.
pub fn hresult_name(hr: i32) -> &'static str {
    match hr as u32 {
        0x8013_1384 => "bad encoding",
        0x8013_1385 => "unknown command",
        0x8013_1386 => "unknown magic",
        0x8013_1515 => "not supported",
        0x8000_4005 => "failure",
        0x8013_135B => "not yet available",
        0x8013_1371 => "runtime uninitialized",
        0x8007_0057 => "invalid argument",
        0x8007_007A => "insufficient buffer",
        0x8000_00CB => "environment variable not found",
        _ => "unknown error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_header_counts_itself() {
        let m = encode_message(command::SET_PROCESS, command::PROCESS_INFO, &[]).unwrap();
        assert_eq!(m.len(), 20);
        assert_eq!(&m[..14], MAGIC);
        assert_eq!(u16::from_le_bytes([m[14], m[15]]), 20);
        assert_eq!((m[16], m[17]), (0x04, 0x00));
        let big = vec![0u8; MAX_MESSAGE_LEN];
        assert!(matches!(encode_message(1, 1, &big), Err(Error::RequestTooLarge { .. })));
    }

    #[test]
    fn strings_carry_their_nul() {
        let p = PayloadWriter::default().string("ab").finish();
        assert_eq!(p, [3, 0, 0, 0, b'a', 0, b'b', 0, 0, 0]);
        assert_eq!(PayloadWriter::default().string("").finish(), [0, 0, 0, 0]);
        assert_eq!(PayloadReader::new(&p).string().unwrap(), "ab");
    }

    #[test]
    fn dump_payload_layout() {
        let p = dump_payload("/d", DumpType::WithHeap, 1);
        assert_eq!(p, [3, 0, 0, 0, b'/', 0, b'd', 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0]);
    }

    #[test]
    fn collect_tracing_payload_layout() {
        let mut cfg = SessionConfig::new(vec![Provider::new("P", 0x4000, 4).with_arguments("a=1")]);
        cfg.circular_buffer_mb = 16;
        let v2 = collect_tracing_payload(&cfg, command::COLLECT_TRACING2);
        let mut expect = vec![16, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0];
        expect.extend_from_slice(&0x4000u64.to_le_bytes());
        expect.extend_from_slice(&[4, 0, 0, 0, 2, 0, 0, 0, b'P', 0, 0, 0, 4, 0, 0, 0]);
        expect.extend_from_slice(&[b'a', 0, b'=', 0, b'1', 0, 0, 0]);
        assert_eq!(v2, expect);
        let v3 = collect_tracing_payload(&cfg, command::COLLECT_TRACING3);
        assert_eq!(v3.len(), v2.len() + 1);
        assert_eq!(v3[9], 1, "stackwalk bool follows the rundown bool");
    }

    #[test]
    fn error_replies_with_and_without_message() {
        let h = ReplyHeader { command_set: 0xFF, command_id: 0xFF, payload_len: 4 };
        let r = parse_reply(h, HR_UNKNOWN_COMMAND.to_le_bytes().to_vec()).unwrap();
        assert_eq!(r, Reply::Error { hresult: HR_UNKNOWN_COMMAND, message: None });
        let mut p = 0x8000_4005u32.to_le_bytes().to_vec();
        p.extend(PayloadWriter::default().string("disk full").finish());
        let r = parse_reply(h, p).unwrap();
        assert_eq!(r, Reply::Error { hresult: 0x8000_4005u32 as i32, message: Some("disk full".into()) });
        assert!(parse_reply(h, vec![1, 2]).is_err());
        let bad_set = ReplyHeader { command_set: 2, ..h };
        assert!(parse_reply(bad_set, vec![]).is_err());
    }

    #[test]
    fn header_rejects_bad_magic_and_size() {
        let mut h = [0u8; 20];
        h[..14].copy_from_slice(MAGIC);
        h[14..16].copy_from_slice(&19u16.to_le_bytes());
        assert!(parse_header(&h).is_err());
        h[14..16].copy_from_slice(&28u16.to_le_bytes());
        h[16] = 0xFF;
        assert_eq!(parse_header(&h).unwrap().payload_len, 8);
        h[0] = b'X';
        assert!(parse_header(&h).is_err());
    }

    #[test]
    fn process_info_v2_round_trip() {
        let mut w = PayloadWriter::default();
        w.u64(42);
        let mut p = w.finish();
        p.extend_from_slice(&[1u8; 16]);
        for s in ["dotnet app.dll", "Linux", "x64", "app", "8.0.4+abc"] {
            p.extend(PayloadWriter::default().string(s).finish());
        }
        let info = parse_process_info(&p, command::PROCESS_INFO2).unwrap();
        assert_eq!(info.pid, 42);
        assert_eq!(info.command_line, "dotnet app.dll");
        assert_eq!(info.runtime_version.as_deref(), Some("8.0.4+abc"));
        // Truncated anywhere: an error, never a panic.
        for cut in 0..p.len() {
            assert!(parse_process_info(&p[..cut], command::PROCESS_INFO2).is_err());
        }
    }

    #[test]
    fn environment_refuses_absurd_counts() {
        assert!(parse_environment(&u32::MAX.to_le_bytes()).is_err());
        let mut p = 1u32.to_le_bytes().to_vec();
        p.extend(PayloadWriter::default().string("TMPDIR=/x").finish());
        assert_eq!(parse_environment(&p).unwrap(), vec![("TMPDIR".into(), "/x".into())]);
    }

    #[test]
    fn advertise_parses() {
        let mut b = [0u8; ADVERTISE_LEN];
        b[..8].copy_from_slice(ADVERTISE_MAGIC);
        b[24..32].copy_from_slice(&77u64.to_le_bytes());
        assert_eq!(parse_advertise(&b).unwrap().pid, 77);
        b[0] = 0;
        assert!(parse_advertise(&b).is_err());
    }

    #[test]
    fn guid_formats_like_dotnet() {
        let g = [0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff];
        assert_eq!(format_guid(&g), "00112233-4455-6677-8899-aabbccddeeff");
    }
}
