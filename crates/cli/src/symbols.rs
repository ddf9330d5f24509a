//! The DAC from a symbol server, when none was found locally.
//!
//! A dump stored in listen mode has no DAC beside it (the sidecar cannot read the app
//! container's files), and the analysis Job's image has no .NET runtime. Like dotnet-dump and
//! dotnet-symbol, we then ask a symbol server (SSQP: `GET <server>/<key>`) for the DAC indexed
//! under the dumped `libcoreclr.so`'s GNU build-id, read from the dump itself
//! ([`clrdump::buildid`]). The file is checked (an x86-64 shared object whose `@(#)Version` is
//! the dumped runtime's), written under a temporary name and renamed into the cache, so a cut
//! download or a wrong file is never used and the next analysis of that runtime needs no
//! network.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clrdump::core::{CoreDump, find_version};

use store::redact::error_chain as chain;

use crate::remote::RemoteError;

/// Microsoft's public symbol server, the default of dotnet-symbol and SOS.
pub const MICROSOFT_SYMBOL_SERVER: &str = "https://msdl.microsoft.com/download/symbols";
/// DACs are 2–4 MiB; anything far larger is not one.
const MAX_DAC_BYTES: u64 = 128 << 20;
/// Per server and request, connection and transfer included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(180);

/// Where the DAC may come from besides `--dac`.
#[derive(Clone, Debug)]
pub struct DacSources {
    /// Symbol servers, tried in order; empty: no network.
    pub servers: Vec<String>,
    /// Downloaded DACs, by symbol-server key.
    pub cache: PathBuf,
    /// The DAC store, the DAC beside the dump, local runtimes ([`clrdump::locate`]).
    pub trust: clrdump::locate::Trust,
}

impl DacSources {
    /// `--symbol-server` values if any; else `DUMPWATCH_SYMBOL_SERVER` (comma or space
    /// separated; set but empty: none); else Microsoft's. `--no-symbol-server`: none.
    pub fn servers_from(flags: Vec<String>, env: Option<String>, none: bool) -> Vec<String> {
        if none {
            return Vec::new();
        }
        if !flags.is_empty() {
            return flags;
        }
        match env {
            Some(v) => v.split([',', ' ', '\n']).filter(|s| !s.is_empty()).map(str::to_string).collect(),
            None => vec![MICROSOFT_SYMBOL_SERVER.to_string()],
        }
    }

    /// Symbol servers must be HTTPS: a DAC is code the analyzer runs, and over plain HTTP
    /// anyone on the path could swap it. Plain HTTP is accepted only to a loopback address (a
    /// mirror or test server on this machine).
    pub fn check_servers(servers: &[String]) -> Result<(), RemoteError> {
        for s in servers {
            let url = reqwest::Url::parse(s)
                .map_err(|e| RemoteError::Usage(format!("symbol server {s:?} is not a URL: {e}")))?;
            let host = url.host_str().unwrap_or_default();
            let loopback = host == "localhost"
                || host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
                return Err(RemoteError::Usage(format!(
                    "symbol server {s}: only https:// (or http:// to a loopback address) may serve a DAC, which is \
                     code the analyzer runs"
                )));
            }
        }
        Ok(())
    }

    /// `--dac-cache`, else `$XDG_CACHE_HOME/dumpwatch/dac`, else `<temp dir>/dumpwatch-dac`.
    pub fn default_cache() -> PathBuf {
        match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
            Some(x) => PathBuf::from(x).join("dumpwatch/dac"),
            None => std::env::temp_dir().join("dumpwatch-dac"),
        }
    }
}

/// The DAC found, where from, and the runtime version it was checked against.
pub struct FoundDac {
    pub path: PathBuf,
    pub provenance: clrdump::locate::Provenance,
    /// DACs that travelled with the capture and were ignored, etc.
    pub warnings: Vec<String>,
    /// The dumped runtime's `@(#)Version`, from the dump, the runtime file, or the runtime
    /// binary fetched by its build-id; `None` when none of them told.
    pub runtime_version: Option<String>,
}

/// The DAC to analyze `core` with: the explicit one, else one from a trusted local source
/// ([`clrdump::locate`]: the DAC store, the capture's DAC when trusted, local runtimes), else
/// one cached or downloaded by the runtime's build-id. `captured` is the DAC that travelled
/// with the capture (fetched from the artifacts). The explicit one is checked against the dump
/// later, by [`clrdump::read_dump`].
pub async fn find_dac(
    core: &Path,
    explicit: Option<&Path>,
    captured: Option<&Path>,
    src: &DacSources,
) -> Result<FoundDac, RemoteError> {
    use clrdump::locate::{self, Provenance};
    if let Some(d) = explicit {
        return Ok(FoundDac {
            path: d.to_path_buf(),
            provenance: Provenance::Explicit,
            warnings: Vec::new(),
            runtime_version: None,
        });
    }
    let dump = CoreDump::open(core)?;
    let runtime_path = dump.runtime_path()?.to_string();
    let mut version = dump.runtime_version()?;
    let build_id = dump.runtime_build_id().ok();
    let dumped = locate::Dumped {
        runtime_path: Some(&runtime_path),
        version: version.as_deref(),
        build_id: build_id.as_deref(),
    };
    let local = match locate::choose(None, captured, core, &dumped, &src.trust) {
        Ok(c) => {
            return Ok(FoundDac {
                path: c.path,
                provenance: c.provenance,
                warnings: c.warnings,
                runtime_version: version,
            });
        }
        Err(e @ (clrdump::Error::DacNotFound { .. } | clrdump::Error::DacMismatch { .. })) => e,
        Err(e) => return Err(e.into()),
    };
    let warnings = locate::ignored_warnings(core, captured, &src.trust);
    private_cache(&src.cache)?;
    let id = dump.runtime_build_id()?;
    drop(dump);
    let hex = clrdump::buildid::hex(&id);
    let key = clrdump::buildid::dac_symbol_key(&id)
        .ok_or_else(|| RemoteError::Usage(format!("libcoreclr.so's build-id {hex} has no symbol-server key")))?;
    // Heap dumps of .NET 8 leave libcoreclr's version string out. The runtime binary itself is
    // indexed by its own build-id: fetched (and its id checked), it tells the version the DAC
    // must have.
    let runtime_key = clrdump::buildid::runtime_symbol_key(&id).expect("the same id has a DAC key");
    let http = crate::remote::client()?;
    if version.is_none() {
        let check = |b: &[u8]| check_runtime(b, &id);
        match cached_or_fetched(&http, src, &runtime_key, &check).await {
            Ok(Some(path)) => version = find_version(&std::fs::read(&path).map_err(io(&path))?),
            Ok(None) | Err(Outcome::Failed(_)) => eprintln!(
                "warning: the dump does not hold libcoreclr.so's version and no symbol server has libcoreclr.so \
                 {hex}: the DAC is taken by build-id without a version check"
            ),
            Err(Outcome::Refused { url, why }) => {
                return Err(RemoteError::DacRefused { url, why, runtime: "?".into() });
            }
        }
    }
    let check = |b: &[u8]| check_dac(b, version.as_deref());
    match cached_or_fetched(&http, src, &key, &check).await {
        Ok(Some(path)) => {
            Ok(FoundDac { path, provenance: Provenance::SymbolServer, warnings, runtime_version: version })
        }
        Ok(None) => Err(RemoteError::DacLocalOnly { local: local.to_string(), key }),
        Err(Outcome::Refused { url, why }) => {
            Err(RemoteError::DacRefused { url, why, runtime: version.unwrap_or_else(|| "?".into()) })
        }
        Err(Outcome::Failed(tried)) => Err(RemoteError::DacUnavailable { local: local.to_string(), tried }),
    }
}

/// Local copies of the assemblies a .NET Core 3.x dump needs but this machine lacks, from the
/// symbol servers by each assembly's PE key (read from its headers in the dump).
///
/// 3.x heap dumps leave assembly metadata out, and the DAC reads type names from the assembly
/// files at their dumped paths; in an analysis Job none of them exist. Microsoft's server has
/// the framework's assemblies (System.Private.CoreLib and the rest), not the app's own: those
/// stay unnamed, and the findings warn about it. Later runtimes keep the metadata in the dump,
/// so nothing is fetched for them.
pub async fn fetch_assemblies(core: &Path, src: &DacSources) -> Result<Vec<(String, PathBuf)>, RemoteError> {
    let dump = CoreDump::open(core)?;
    if !dump.runtime_version()?.is_some_and(|v| v.starts_with("4.700.")) {
        return Ok(Vec::new());
    }
    let mut wanted: Vec<(String, String)> = Vec::new();
    for f in &dump.elf().files {
        let is_dll = f.path.to_ascii_lowercase().ends_with(".dll");
        if is_dll
            && !wanted.iter().any(|(p, _)| *p == f.path)
            && !Path::new(&f.path).is_file()
            && let Some(key) = dump.pe_symbol_key(&f.path)
        {
            wanted.push((f.path.clone(), key));
        }
    }
    drop(dump);
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    private_cache(&src.cache)?;
    let http = crate::remote::client()?;
    let started = Instant::now();
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for (path, key) in &wanted {
        let check = |b: &[u8]| check_pe(b, key);
        match cached_or_fetched_quietly(&http, src, key, &check).await {
            Some(local) => found.push((path.clone(), local)),
            None => missing.push(clrdump::elf::file_name(path).to_string()),
        }
    }
    eprintln!(
        "{} of {} assemblies absent here taken from the symbol server or cache in {:.2} s{}",
        found.len(),
        wanted.len(),
        started.elapsed().as_secs_f64(),
        if missing.is_empty() { String::new() } else { format!("; not there: {}", missing.join(", ")) }
    );
    Ok(found)
}

/// The cache's files are loaded (the DAC) or read by it (assemblies): only from a directory no
/// one else can write.
fn private_cache(dir: &Path) -> Result<(), RemoteError> {
    clrdump::locate::private_dir(dir).map_err(|why| {
        RemoteError::Usage(format!(
            "the DAC cache {} {why}: what is cached there is run by the analyzer. Pass --dac-cache (or \
             DUMPWATCH_DAC_CACHE) with a directory only you can write",
            dir.display()
        ))
    })
}

/// Like [`cached_or_fetched`], for files that are often simply not published (an app's own
/// assemblies): any failure is `None`.
async fn cached_or_fetched_quietly(
    http: &reqwest::Client,
    src: &DacSources,
    key: &str,
    check: &dyn Fn(&[u8]) -> Result<(), String>,
) -> Option<PathBuf> {
    let cached = src.cache.join(key);
    if cached.is_file() && std::fs::read(&cached).ok().is_some_and(|b| check(&b).is_ok()) {
        return Some(cached);
    }
    for server in &src.servers {
        let url = format!("{}/{key}", server.trim_end_matches('/'));
        if download(http, &url, &cached, check).await.is_ok() {
            return Some(cached);
        }
    }
    None
}

/// A PE image whose key (`<name>/<timestamp><size>/<name>`) is `key`.
fn check_pe(bytes: &[u8], key: &str) -> Result<(), String> {
    let (timestamp, size) = clrdump::core::pe_identity(bytes).ok_or("not a PE image")?;
    let id = key.split('/').nth(1).unwrap_or_default();
    if id == format!("{timestamp:08X}{size:x}") { Ok(()) } else { Err(format!("its PE id is {timestamp:08X}{size:x}")) }
}

/// The file stored under `key`: from the cache if it passes `check`, else from the first
/// server that has it (then cached). `None`: not cached and no server may be asked.
async fn cached_or_fetched(
    http: &reqwest::Client,
    src: &DacSources,
    key: &str,
    check: &dyn Fn(&[u8]) -> Result<(), String>,
) -> Result<Option<PathBuf>, Outcome> {
    let cached = src.cache.join(key);
    if cached.is_file() {
        match std::fs::read(&cached).map_err(|e| e.to_string()).and_then(|b| check(&b)) {
            Ok(()) => return Ok(Some(cached)),
            // A stale or damaged entry is replaced by a fresh download.
            Err(why) => eprintln!("ignoring cached {}: {why}", cached.display()),
        }
    }
    if src.servers.is_empty() {
        return Ok(None);
    }
    let mut tried = Vec::new();
    for server in &src.servers {
        let url = format!("{}/{key}", server.trim_end_matches('/'));
        let started = Instant::now();
        match download(http, &url, &cached, check).await {
            Ok(bytes) => {
                eprintln!("downloaded {url} ({bytes} bytes) in {:.2} s", started.elapsed().as_secs_f64());
                return Ok(Some(cached));
            }
            Err(Outcome::Failed(why)) => tried.push(format!("{url}: {why}")),
            Err(refused) => return Err(refused),
        }
    }
    Err(Outcome::Failed(tried.join("; ")))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RemoteError + '_ {
    move |source| RemoteError::Io { what: format!("DAC cache {}", path.display()), source }
}

enum Outcome {
    /// Not there, or not reachable: try the next server.
    Failed(String),
    /// The server answered with a file that must not be used.
    Refused { url: String, why: String },
}

/// GETs `url` into `dest` (through a temporary file in the same directory, renamed when the
/// whole file is there and checked); returns its size.
async fn download(
    http: &reqwest::Client,
    url: &str,
    dest: &Path,
    check: &dyn Fn(&[u8]) -> Result<(), String>,
) -> Result<u64, Outcome> {
    let failed = |e: &dyn std::fmt::Display| Outcome::Failed(e.to_string());
    let refused = |why: String| Outcome::Refused { url: url.to_string(), why };
    let mut resp = http.get(url).timeout(REQUEST_TIMEOUT).send().await.map_err(|e| Outcome::Failed(chain(&e)))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(Outcome::Failed(match status.as_u16() {
            404 => "HTTP 404: the server does not have this runtime build's DAC".into(),
            s => format!("HTTP {s}"),
        }));
    }
    // Read before the body: afterwards reqwest reports what is left of it.
    let expected = resp.content_length();
    if let Some(n) = expected.filter(|&n| n > MAX_DAC_BYTES) {
        return Err(refused(format!("{n} bytes is too large for a runtime binary")));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| Outcome::Failed(chain(&e)))? {
        body.extend_from_slice(&chunk);
        if body.len() as u64 > MAX_DAC_BYTES {
            return Err(refused(format!("more than {MAX_DAC_BYTES} bytes is too large for a runtime binary")));
        }
    }
    if let Some(n) = expected
        && n != body.len() as u64
    {
        return Err(Outcome::Failed(format!("truncated: {} of {n} bytes", body.len())));
    }
    check(&body).map_err(refused)?;
    let dir = dest.parent().expect("a key has folders");
    std::fs::create_dir_all(dir).map_err(|e| failed(&format!("creating the DAC cache {}: {e}", dir.display())))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".download-")
        .tempfile_in(dir)
        .map_err(|e| failed(&format!("writing to the DAC cache {}: {e}", dir.display())))?;
    tmp.write_all(&body).and_then(|_| tmp.as_file().sync_all()).map_err(|e| failed(&e))?;
    tmp.persist(dest).map_err(|e| failed(&e.error))?;
    Ok(body.len() as u64)
}

/// The runtime binary whose build-id is `id`.
fn check_runtime(bytes: &[u8], id: &[u8]) -> Result<(), String> {
    // A shared object's notes lie in its first segment, where file offsets are addresses.
    let mut read = |addr: u64, buf: &mut [u8]| {
        let src = usize::try_from(addr).ok().and_then(|a| bytes.get(a..)).unwrap_or(&[]);
        let n = src.len().min(buf.len());
        buf[..n].copy_from_slice(&src[..n]);
        n
    };
    match clrdump::buildid::image_build_id(&mut read, 0) {
        Ok(got) if got == id => Ok(()),
        Ok(got) => Err(format!("its build-id is {}", clrdump::buildid::hex(&got))),
        Err(e) => Err(e.to_string()),
    }
}

/// An x86-64 ELF shared object carrying the runtime's `@(#)Version` (when the dump told it).
fn check_dac(bytes: &[u8], version: Option<&str>) -> Result<(), String> {
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
        return Err("not a 64-bit ELF file".into());
    }
    if u16::from_le_bytes([bytes[16], bytes[17]]) != 3 || u16::from_le_bytes([bytes[18], bytes[19]]) != 62 {
        return Err("not an x86-64 shared object".into());
    }
    let found = find_version(bytes).ok_or("no @(#)Version string: not a runtime binary")?;
    match version {
        Some(want) if want != found => Err(format!("its version is {found}, the dumped runtime is {want}")),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_come_from_flags_then_env_then_the_default() {
        let s = |f: &[&str], env: Option<&str>, none| {
            DacSources::servers_from(f.iter().map(|s| s.to_string()).collect(), env.map(str::to_string), none)
        };
        assert_eq!(s(&[], None, false), vec![MICROSOFT_SYMBOL_SERVER]);
        assert_eq!(s(&["http://a"], Some("http://b"), false), vec!["http://a"]);
        assert_eq!(s(&[], Some("http://b, http://c"), false), vec!["http://b", "http://c"]);
        assert!(s(&[], Some(""), false).is_empty(), "set but empty: no network");
        assert!(s(&["http://a"], None, true).is_empty());
    }

    #[test]
    fn symbol_servers_are_https_or_loopback() {
        let ok = |s: &str| DacSources::check_servers(&[s.to_string()]).is_ok();
        assert!(ok("https://msdl.microsoft.com/download/symbols"));
        assert!(ok("http://127.0.0.1:8080/symbols") && ok("http://localhost/x") && ok("http://[::1]:1/"));
        assert!(!ok("http://symbols.mirror.svc:8080/symbols"));
        assert!(!ok("ftp://127.0.0.1/"));
        assert!(!ok("msdl.microsoft.com"));
    }

    #[test]
    fn only_a_shared_object_of_the_dumped_version_is_a_dac() {
        let mut so = vec![0u8; 64];
        so[..6].copy_from_slice(b"\x7fELF\x02\x01");
        so[16] = 3;
        so[18] = 62;
        so.extend_from_slice(b"@(#)Version 8.0.424.16909 @Commit: abc\0");
        assert_eq!(check_dac(&so, Some("8.0.424.16909")), Ok(()));
        assert_eq!(check_dac(&so, None), Ok(()));
        assert!(check_dac(&so, Some("4.700.22.11601")).unwrap_err().contains("its version is 8.0.424.16909"));
        assert!(check_dac(b"<html>not found</html>", None).is_err());
        let mut exe = so.clone();
        exe[16] = 2;
        assert!(check_dac(&exe, None).is_err());
    }
}
