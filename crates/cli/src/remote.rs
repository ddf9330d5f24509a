//! `dumpwatch analyze` on stored artifacts (docs/operator.md): fetch a dump and its DAC from a
//! presigned `https://` URL or a `file://` path, check the SHA-256 of the stored bytes,
//! decompress `.zst`, and afterwards POST the findings to the operator (`--report-to`).
//!
//! Everything fetched lives in one temporary directory that is removed whatever happens: a
//! failed or mismatching download leaves no file behind.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use store::redact::error_chain as chain;

/// What can go wrong between an artifact URL and a dump on disk, or sending the findings.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("{name}: checksum mismatch: expected sha256 {expected}, the stored bytes have {actual}")]
    Checksum { name: String, expected: String, actual: String },
    #[error("{name}: HTTP {status} from storage{hint}")]
    Status { name: String, status: u16, hint: &'static str },
    #[error("{name}: truncated download: {got} of {expected} bytes")]
    Truncated { name: String, got: u64, expected: u64 },
    #[error("{name}: {message}")]
    Transfer { name: String, message: String },
    #[error("{name}: {source}")]
    Stored { name: String, source: store::Error },
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("{0}")]
    Usage(String),
    #[error("reporting the findings to {url}: HTTP {status}: {body}")]
    Report { url: String, status: u16, body: String },
    #[error(transparent)]
    Dump(#[from] clrdump::Error),
    #[error(
        "{local}; and no symbol server may be asked for it (--no-symbol-server, or DUMPWATCH_SYMBOL_SERVER set empty). \
         Allow a symbol server (it holds {key}), pass --dac, or run the sidecar in connect mode so the DAC is captured beside the dump"
    )]
    DacLocalOnly { local: String, key: String },
    #[error(
        "{local}; and the symbol server could not provide it: {tried}. If the analysis runs in a cluster, allow its egress to \
         the symbol server (or set a reachable mirror with --symbol-server / DUMPWATCH_SYMBOL_SERVER), pass --dac, or run the \
         sidecar in connect mode so the DAC is captured beside the dump"
    )]
    DacUnavailable { local: String, tried: String },
    #[error("refused the DAC from {url}: {why} (runtime {runtime}); a DAC of another build reads garbage")]
    DacRefused { url: String, why: String, runtime: String },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RemoteError {
    let what = what.into();
    move |source| RemoteError::Io { what, source }
}

/// One stored file: as the `DumpSnapshot` lists it (`--artifacts`: an `api::Artifact`, whose
/// size and checksum a person may leave out), or from the flags.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ArtifactSource {
    #[serde(default)]
    pub kind: Option<api::CaptureKind>,
    pub uri: String,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub sha256: Option<String>,
}

impl From<api::Artifact> for ArtifactSource {
    fn from(a: api::Artifact) -> Self {
        Self { kind: Some(a.kind), uri: a.uri, size: Some(a.size), sha256: Some(a.sha256) }
    }
}

impl ArtifactSource {
    pub fn new(uri: &str, sha256: Option<String>) -> Self {
        Self { kind: None, uri: uri.to_string(), size: None, sha256 }
    }

    /// The file name: the URL's last path segment, without the query (a presigned signature).
    pub fn name(&self) -> String {
        let no_query = self.uri.split(['?', '#']).next().unwrap_or(&self.uri);
        no_query.rsplit('/').next().unwrap_or(no_query).to_string()
    }

    /// The URL without its query, safe to print (the signature is a credential).
    pub fn display(&self) -> String {
        self.uri.split('?').next().unwrap_or(&self.uri).to_string()
    }

    fn local_path(&self) -> Option<PathBuf> {
        if let Some(p) = self.uri.strip_prefix("file://") {
            return Some(PathBuf::from(p));
        }
        (!self.uri.contains("://")).then(|| PathBuf::from(&self.uri))
    }
}

/// From `--artifacts`: the dump (`core*`) and the DAC (`libmscordaccore*`); without a dump, the
/// heap snapshot (`heap.nettrace*`).
pub fn pick(artifacts: &[ArtifactSource]) -> Result<(ArtifactSource, Option<ArtifactSource>), RemoteError> {
    use api::CaptureKind;
    let of_kind = |kind: CaptureKind, prefix: &str| {
        artifacts.iter().find(|a| a.kind.is_none_or(|k| k == kind) && a.name().starts_with(prefix)).cloned()
    };
    let core = of_kind(CaptureKind::Dump, "core")
        .or_else(|| of_kind(CaptureKind::Gcdump, "heap.nettrace"))
        .ok_or_else(|| {
            let names: Vec<String> = artifacts.iter().map(ArtifactSource::name).collect();
            RemoteError::Usage(format!(
                "no core dump or heap snapshot among the artifacts ({}): nothing to analyze",
                names.join(", ")
            ))
        })?;
    let dac = artifacts.iter().find(|a| a.name().starts_with("libmscordaccore")).cloned();
    Ok((core, dac))
}

/// The runtime's crash report among the artifacts (a crash capture of .NET 6+), if any.
pub fn pick_crash_report(artifacts: &[ArtifactSource]) -> Option<ArtifactSource> {
    artifacts.iter().find(|a| a.name().starts_with(CRASH_REPORT)).cloned()
}

/// The name the sidecar gives the runtime's crash report in a crash capture.
pub const CRASH_REPORT: &str = "crashreport.json";

/// The dump and DAC ready on local disk; `_scratch` holds whatever had to be fetched.
pub struct Prepared {
    pub core: PathBuf,
    /// The DAC given with `--dac`.
    pub dac: Option<PathBuf>,
    /// The DAC that travelled with the capture: fetched when it is trusted, else only named
    /// (never downloaded) so that the warning can say which file was ignored.
    pub captured: Option<PathBuf>,
    pub display: String,
    _scratch: tempfile::TempDir,
}

impl Prepared {
    /// Fetches and checks one more artifact into the same temporary directory.
    pub async fn fetch(&self, a: &ArtifactSource) -> Result<PathBuf, RemoteError> {
        materialize(&client()?, a, self._scratch.path()).await
    }
}

/// The crash report the runtime wrote with a local dump: `<dump>.crashreport.json` where the
/// runtime left it, or `crashreport.json` in a crash capture's folder.
pub fn crash_report_beside(core: &Path) -> Option<PathBuf> {
    let name = core.file_name()?.to_string_lossy();
    let candidates = [core.with_file_name(format!("{name}.{CRASH_REPORT}")), core.with_file_name(CRASH_REPORT)];
    candidates.into_iter().find(|p| p.is_file())
}

/// Fetch, verify and decompress what is needed. A local, uncompressed dump is used in place.
/// `captured` is the capture's own DAC (from `--artifacts`); for a dump on a volume, the one
/// stored beside it. It is fetched only when `trust_captured`.
pub async fn prepare(
    core: &ArtifactSource,
    explicit: Option<&ArtifactSource>,
    captured: Option<&ArtifactSource>,
    trust_captured: bool,
) -> Result<Prepared, RemoteError> {
    let scratch = tempfile::Builder::new().prefix("dumpwatch-analyze-").tempdir().map_err(io("creating a temp dir"))?;
    let http = client()?;
    let core_path = materialize(&http, core, scratch.path()).await?;
    let dac = match explicit {
        Some(d) => Some(materialize(&http, d, scratch.path()).await?),
        None => None,
    };
    // A dump on a volume: the DAC the sidecar stored beside it.
    let beside =
        core.local_path().and_then(|p| dac_beside(&p)).map(|d| ArtifactSource::new(&d.display().to_string(), None));
    let captured = match (explicit, captured.or(beside.as_ref())) {
        (None, Some(c)) if trust_captured => Some(materialize(&http, c, scratch.path()).await?),
        (None, Some(c)) => Some(PathBuf::from(c.display())),
        _ => None,
    };
    Ok(Prepared { core: core_path, dac, captured, display: core.display(), _scratch: scratch })
}

fn dac_beside(core: &Path) -> Option<PathBuf> {
    let dir = core.parent()?;
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("libmscordaccore")))
        .collect();
    found.sort();
    found.into_iter().next()
}

pub(crate) fn client() -> Result<reqwest::Client, RemoteError> {
    reqwest::Client::builder()
        .use_rustls_tls()
        .connect_timeout(Duration::from_secs(15))
        .read_timeout(Duration::from_secs(120))
        .build()
        .map_err(|e| RemoteError::Usage(format!("HTTP client: {e}")))
}

/// A local path of `a` with the stored bytes checked and `.zst` undone.
async fn materialize(http: &reqwest::Client, a: &ArtifactSource, scratch: &Path) -> Result<PathBuf, RemoteError> {
    let name = a.name();
    let plain_name = name.strip_suffix(".zst").unwrap_or(&name).to_string();
    if plain_name.is_empty() || plain_name.starts_with('.') || plain_name.contains('/') {
        return Err(RemoteError::Usage(format!("{}: not a file name", a.display())));
    }
    let out = scratch.join(&plain_name);
    let compressed = name.ends_with(".zst");
    if let Some(path) = a.local_path() {
        if !compressed {
            // Used where it is: only checked.
            if let Some(expected) = &a.sha256 {
                let (len, actual) =
                    store::sha256_file(&path).map_err(|source| RemoteError::Stored { name: name.clone(), source })?;
                if !expected.eq_ignore_ascii_case(&actual) {
                    return Err(RemoteError::Checksum { name, expected: expected.clone(), actual });
                }
                if let Some(size) = a.size.filter(|s| *s != len) {
                    return Err(RemoteError::Truncated { name, got: len, expected: size });
                }
            }
            return Ok(path);
        }
        let f = std::fs::File::open(&path).map_err(io(format!("opening {}", path.display())))?;
        copy_all(f, Sink::new(&out, true, &name)?, &name)?.finish(a)?;
        return Ok(out);
    }
    if !(a.uri.starts_with("https://") || a.uri.starts_with("http://")) {
        return Err(RemoteError::Usage(format!(
            "{}: use a path, file:// or https:// (s3:// needs a presigned URL)",
            a.display()
        )));
    }
    let mut resp =
        http.get(&a.uri).send().await.map_err(|e| RemoteError::Transfer { name: name.clone(), message: chain(&e) })?;
    let status = resp.status();
    if !status.is_success() {
        let hint = match status.as_u16() {
            403 => " (the presigned URL expired or its signature is not valid)",
            404 => " (no such object: deleted by retention?)",
            _ => "",
        };
        return Err(RemoteError::Status { name, status: status.as_u16(), hint });
    }
    let expected = resp.content_length().or(a.size);
    let mut sink = Sink::new(&out, compressed, &name)?;
    let mut progress = Progress::new(&name, expected);
    loop {
        let chunk = resp.chunk().await.map_err(|e| RemoteError::Transfer { name: name.clone(), message: chain(&e) })?;
        let Some(chunk) = chunk else { break };
        sink.write(&chunk)?;
        progress.update(sink.len());
    }
    progress.done(sink.len());
    if let Some(n) = expected
        && sink.len() != n
    {
        return Err(RemoteError::Truncated { name, got: sink.len(), expected: n });
    }
    sink.finish(a)?;
    Ok(out)
}

fn copy_all(mut from: impl Read, mut sink: Sink, name: &str) -> Result<Sink, RemoteError> {
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = from.read(&mut buf).map_err(io(format!("reading {name}")))?;
        if n == 0 {
            return Ok(sink);
        }
        sink.write(&buf[..n])?;
    }
}

/// The stored bytes, checked and (`.zst`) decompressed into `out` by the artifact codec
/// (`store::codec::Verifier`) as they arrive. Dropped before [`Sink::finish`] succeeded, it
/// removes `out`.
struct Sink {
    out: PathBuf,
    name: String,
    verifier: Option<store::codec::Verifier<std::io::BufWriter<std::fs::File>>>,
    kept: bool,
}

impl Sink {
    fn new(out: &Path, compressed: bool, name: &str) -> Result<Self, RemoteError> {
        let f = std::fs::File::create(out).map_err(io(format!("creating {}", out.display())))?;
        let verifier = store::codec::Verifier::new(std::io::BufWriter::with_capacity(1 << 20, f), compressed)
            .map_err(|source| RemoteError::Stored { name: name.to_string(), source })?;
        Ok(Self { out: out.to_path_buf(), name: name.to_string(), verifier: Some(verifier), kept: false })
    }

    fn len(&self) -> u64 {
        self.verifier.as_ref().map_or(0, |v| v.stored_len())
    }

    fn write(&mut self, data: &[u8]) -> Result<(), RemoteError> {
        let Some(v) = self.verifier.as_mut() else { return Ok(()) };
        // The verifier keeps a decoding error for `finish`, where the checksum is known.
        v.write_all(data).map_err(io(format!("writing {}", self.out.display())))
    }

    fn finish(&mut self, a: &ArtifactSource) -> Result<(), RemoteError> {
        let len = self.len();
        let Some(v) = self.verifier.take() else { return Ok(()) };
        let (_, _, _) = v.finish(a.sha256.as_deref()).map_err(|e| match e {
            store::Error::ChecksumMismatch { expected, actual } => {
                RemoteError::Checksum { name: self.name.clone(), expected, actual }
            }
            source => RemoteError::Stored { name: self.name.clone(), source },
        })?;
        if let Some(size) = a.size
            && size != len
        {
            return Err(RemoteError::Truncated { name: self.name.clone(), got: len, expected: size });
        }
        self.kept = true;
        Ok(())
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.verifier.take();
        if !self.kept {
            let _ = std::fs::remove_file(&self.out);
        }
    }
}

/// Progress on stderr: at most once a second, and a last line.
struct Progress {
    name: String,
    total: Option<u64>,
    last: Instant,
    started: Instant,
}

impl Progress {
    fn new(name: &str, total: Option<u64>) -> Self {
        let now = Instant::now();
        Self { name: name.to_string(), total, last: now, started: now }
    }

    fn update(&mut self, got: u64) {
        if self.last.elapsed() >= Duration::from_secs(1) {
            self.last = Instant::now();
            eprintln!("downloading {}: {}", self.name, self.figures(got));
        }
    }

    fn done(&self, got: u64) {
        let secs = self.started.elapsed().as_secs_f64();
        eprintln!("downloaded {}: {} in {secs:.1} s", self.name, self.figures(got));
    }

    fn figures(&self, got: u64) -> String {
        let mib = |n: u64| n as f64 / (1 << 20) as f64;
        match self.total {
            Some(t) if t > 0 => {
                format!("{:.1} of {:.1} MiB ({:.0} %)", mib(got), mib(t), got as f64 * 100.0 / t as f64)
            }
            _ => format!("{:.1} MiB", mib(got)),
        }
    }
}

/// Where and how to send the findings.
pub struct ReportTo {
    pub url: String,
    pub snapshot: String,
    pub token_file: PathBuf,
    /// PEM of the operator's CA (from `--ca-file`, or `DUMPWATCH_OPERATOR_CA`).
    pub ca_pem: Option<String>,
}

/// `POST /v1/jobs/findings` with `{snapshot, findings}` (`api::wire::FindingsReport`).
pub async fn report(to: &ReportTo, findings: &serde_json::Value) -> Result<(), RemoteError> {
    let mut b = reqwest::Client::builder().use_rustls_tls().connect_timeout(Duration::from_secs(15));
    if let Some(pem) = &to.ca_pem {
        let ca = reqwest::Certificate::from_pem(pem.as_bytes())
            .map_err(|e| RemoteError::Usage(format!("the operator CA is not PEM: {e}")))?;
        b = b.tls_built_in_root_certs(false).add_root_certificate(ca);
    }
    let http = b.build().map_err(|e| RemoteError::Usage(format!("HTTP client: {e}")))?;
    let token = std::fs::read_to_string(&to.token_file).map_err(io(format!("reading {}", to.token_file.display())))?;
    let url = format!("{}{}", to.url.trim_end_matches('/'), api::wire::FINDINGS.path);
    let body = api::wire::FindingsReport { snapshot: to.snapshot.clone(), findings: findings.clone() };
    let body = serde_json::to_vec(&body).map_err(|e| RemoteError::Usage(format!("the findings: {e}")))?;
    let resp = http
        .post(&url)
        .bearer_auth(token.trim())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .map_err(|e| RemoteError::Transfer { name: url.clone(), message: chain(&e) })?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let body: String = resp.text().await.unwrap_or_default().chars().take(500).collect();
    Err(RemoteError::Report { url, status: status.as_u16(), body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_path_not_the_signature() {
        let a = ArtifactSource::new("https://s3/b/k/c1/core.42.zst?X-Amz-Signature=abc/def", None);
        assert_eq!(a.name(), "core.42.zst");
        assert_eq!(a.display(), "https://s3/b/k/c1/core.42.zst");
        assert_eq!(ArtifactSource::new("file:///d/c1/core.1", None).local_path(), Some(PathBuf::from("/d/c1/core.1")));
        assert_eq!(ArtifactSource::new("core.1", None).local_path(), Some(PathBuf::from("core.1")));
    }

    #[test]
    fn the_dump_and_its_dac_are_picked_from_the_artifacts() {
        let list: Vec<api::Artifact> = serde_json::from_str(
            r#"[{"kind":"stacks","uri":"https://x/c/stacks.json.zst?s=1","size":1,"sha256":"a"},
                {"kind":"dump","uri":"https://x/c/libmscordaccore.so.zst?s=2","size":2,"sha256":"b"},
                {"kind":"dump","uri":"https://x/c/core.9.zst?s=3","size":3,"sha256":"c"}]"#,
        )
        .unwrap();
        let list: Vec<ArtifactSource> = list.into_iter().map(Into::into).collect();
        let (core, dac) = pick(&list).unwrap();
        assert_eq!(core.name(), "core.9.zst");
        assert_eq!(dac.unwrap().name(), "libmscordaccore.so.zst");
        let err = pick(&list[..1]).unwrap_err().to_string();
        assert!(err.contains("no core dump") && err.contains("stacks.json.zst"), "{err}");
        let heap: Vec<ArtifactSource> = ["file:///d/c/histogram.json.zst", "file:///d/c/heap.nettrace.zst"]
            .into_iter()
            .map(|uri| ArtifactSource { kind: Some(api::CaptureKind::Gcdump), ..ArtifactSource::new(uri, None) })
            .collect();
        assert_eq!(pick(&heap).unwrap().0.name(), "heap.nettrace.zst", "a heap snapshot when there is no dump");
    }
}
