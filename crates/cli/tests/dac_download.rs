//! `dumpwatch analyze` of a dump stored without its DAC, on a machine without the dumped
//! runtime (as the analysis Job in a cluster): the DAC comes from a symbol server by the dumped
//! libcoreclr.so's build-id. The server is a real HTTP peer on loopback serving the real DAC
//! under the SSQP key (computed here from the runtime file's section headers, independently of
//! the code under test), libcoreclr.so and the framework assemblies under theirs, and 404
//! otherwise. The runtime's `shared` folder and the app's folder are hidden from the analyzer by
//! tmpfs mounts in its own mount namespace, so everything can only have come from the dump and
//! the server; the findings must still equal the workload's ground truth (on 3.1, whose heap
//! dumps lack assembly metadata, minus the names of the app's own types).

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use testbed::{Runtime, Value, Workload};

/// The keys of a runtime's DAC and of its libcoreclr.so, by the symbol store's conventions.
fn keys(runtime: Runtime) -> (String, String) {
    let id: String = testbed::build_id_of_file(&runtime.shared_dir().join("libcoreclr.so"))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    (
        format!("libmscordaccore.so/elf-buildid-coreclr-{id}/libmscordaccore.so"),
        format!("libcoreclr.so/elf-buildid-{id}/libcoreclr.so"),
    )
}

/// The SSQP key of a PE file: `<name>/<TimeDateStamp:08X><SizeOfImage:x>/<name>`.
fn pe_key(path: &Path) -> Option<String> {
    let f = std::fs::read(path).ok()?;
    let u32_at = |at: usize| u32::from_le_bytes(f[at..at + 4].try_into().unwrap());
    if &f[..2] != b"MZ" {
        return None;
    }
    let pe = u32_at(0x3c) as usize;
    let name = path.file_name()?.to_str()?.to_lowercase();
    Some(format!("{name}/{:08X}{:x}/{name}", u32_at(pe + 8), u32_at(pe + 24 + 56)))
}

/// What a symbol server holds for `runtime`: its libcoreclr.so, its framework assemblies and,
/// under the DAC's key, `dac` (not the app's assemblies: nobody publishes those).
fn server_files(runtime: Runtime, dac: Vec<u8>) -> HashMap<String, Vec<u8>> {
    let (dac_key, runtime_key) = keys(runtime);
    let coreclr = std::fs::read(runtime.shared_dir().join("libcoreclr.so")).unwrap();
    let mut files = HashMap::from([(dac_key, dac), (runtime_key, coreclr)]);
    for e in std::fs::read_dir(runtime.shared_dir()).unwrap().flatten() {
        if e.file_name().to_string_lossy().ends_with(".dll")
            && let Some(key) = pe_key(&e.path())
        {
            files.insert(key, std::fs::read(e.path()).unwrap());
        }
    }
    files
}

/// A symbol server: `GET /symbols/<key>` answers the file stored under that key, else 404.
/// Records every requested path.
struct SymbolServer {
    url: String,
    requests: Arc<Mutex<Vec<String>>>,
}

impl SymbolServer {
    fn start(files: HashMap<String, Vec<u8>>) -> SymbolServer {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/symbols", l.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut first = String::new();
                if r.read_line(&mut first).is_err() {
                    continue;
                }
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                }
                let path = first.split(' ').nth(1).unwrap_or("").to_string();
                seen.lock().unwrap().push(path.clone());
                let body = path.strip_prefix("/symbols/").and_then(|k| files.get(k));
                let head = match body {
                    Some(b) => format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", b.len()),
                    None => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string(),
                };
                let _ = s.write_all(head.as_bytes());
                if let Some(b) = body {
                    let _ = s.write_all(b);
                }
            }
        });
        SymbolServer { url, requests }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// `dumpwatch analyze` in its own mount namespace where the runtime's `shared` folder (with
/// libcoreclr.so, the DAC and the framework assemblies) and the workloads' folder (the app's
/// assemblies) are empty tmpfs: as in an analysis Job's container, only the dump is there.
fn analyze_without_runtime(runtime: Runtime, args: &[&str]) -> Run {
    let shared = std::fs::canonicalize(runtime.shared_dir().join("../..")).unwrap();
    let apps = std::fs::canonicalize(testbed::cache_dir().join("workloads")).unwrap();
    let mut cmd = Command::new("unshare");
    let script = r#"mount -t tmpfs tmpfs "$0" && mount -t tmpfs tmpfs "$1" && shift && exec "$@""#;
    cmd.args(["--mount", "--propagation", "private", "sh", "-c", script])
        .arg(&shared)
        .arg(&apps)
        .arg(env!("CARGO_BIN_EXE_dumpwatch"))
        .arg("analyze")
        .args(args)
        .env_remove("DUMPWATCH_SYMBOL_SERVER")
        .env_remove("DUMPWATCH_DAC_CACHE")
        .env_remove("DOTNET_ROOT");
    let out = cmd.output().expect("run unshare");
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A heap dump of `w` in `dir`, with the DAC `dump` copies beside it removed (as listen mode
/// stores it).
fn dump_without_dac(w: &Workload, dir: &Path) -> PathBuf {
    let core = dir.join("core");
    for attempt in 1.. {
        let out = Command::new(env!("CARGO_BIN_EXE_dumpwatch"))
            .args(["dump", &w.pid.to_string(), "-o", core.to_str().unwrap(), "--type", "heap"])
            .output()
            .unwrap();
        if out.status.success() {
            break;
        }
        let err = String::from_utf8_lossy(&out.stderr);
        // createdump can lose a race with an exiting thread: retry that one.
        assert!(attempt < 3 && err.contains("ptrace"), "dump failed: {err}");
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with("libmscordaccore") {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
    core
}

fn tids(list: &Value, key: &str) -> BTreeSet<u64> {
    list.as_array().unwrap().iter().map(|t| t[key]["os_tid"].as_u64().unwrap()).collect()
}

fn truth_tids(list: &Value) -> BTreeSet<u64> {
    list.as_array().unwrap().iter().map(|t| t["os_tid"].as_u64().unwrap()).collect()
}

#[test]
fn the_dac_comes_from_the_symbol_server_when_the_runtime_is_not_here() {
    for runtime in [Runtime::Net8, Runtime::Net31] {
        let w = Workload::start(runtime, "DiagScenarios", &[]);
        let total = w.get("/leak?count=100000")["total_customers"].as_u64().unwrap();
        let dl = w.get("/deadlock?waiters=2");
        let dir = tempfile::tempdir().unwrap();
        let core = dump_without_dac(&w, dir.path());
        let (key, runtime_key) = keys(runtime);
        let dac = std::fs::read(runtime.shared_dir().join("libmscordaccore.so")).unwrap();
        let server = SymbolServer::start(server_files(runtime, dac.clone()));
        let cache = dir.path().join("dac-cache");
        let args = ["--json", "--symbol-server", &server.url, "--dac-cache", cache.to_str().unwrap()];
        let core_s = core.to_str().unwrap();

        let started = Instant::now();
        let run = analyze_without_runtime(runtime, &[&[core_s][..], &args].concat());
        let secs = started.elapsed().as_secs_f64();
        assert!(run.ok, "{runtime:?}: {}", run.stderr);
        eprintln!("{runtime:?}: download + analysis without the runtime: {secs:.2} s; {}", run.stderr.trim());
        // 3.1 dumps hold the runtime's version; 8.0 heap dumps do not, so libcoreclr.so is
        // fetched by its own build-id first, to learn the version the DAC must have.
        // 3.1 heap dumps also lack assembly metadata: the assemblies are fetched by their PE
        // keys (the framework's are on the server, the app's own is not).
        let expected = match runtime {
            Runtime::Net31 => {
                let app = pe_key(&testbed::workload_dll("DiagScenarios")).unwrap();
                let corelib = pe_key(&runtime.shared_dir().join("System.Private.CoreLib.dll")).unwrap();
                let requests = server.requests();
                assert!(requests.contains(&format!("/symbols/{app}")), "{requests:?}");
                assert!(requests.contains(&format!("/symbols/{corelib}")), "{requests:?}");
                assert!(cache.join(&corelib).is_file() && !cache.join(&app).exists());
                assert!(requests[1..].iter().all(|r| r.ends_with(".dll")), "{requests:?}");
                requests
            }
            Runtime::Net8 => vec![format!("/symbols/{runtime_key}"), format!("/symbols/{key}")],
        };
        assert_eq!(server.requests()[..expected.len()], expected, "{runtime:?}: GETs by the SSQP keys");
        assert_eq!(std::fs::read(cache.join(&key)).unwrap(), dac, "{runtime:?}: the served DAC, cached by key");
        let leftovers: Vec<_> = std::fs::read_dir(cache.join(&key).parent().unwrap()).unwrap().flatten().collect();
        assert_eq!(leftovers.len(), 1, "{runtime:?}: no temporary file left beside the DAC");

        let f: Value = serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("bad JSON ({e}): {}", run.stdout));
        assert_eq!(f["source"]["dac"], cache.join(&key).to_str().unwrap(), "{runtime:?}: analyzed with the download");
        let version = f["source"]["runtime_version"].as_str().unwrap_or_default().to_string();
        assert!(
            version.starts_with(if runtime == Runtime::Net8 { "8.0.4" } else { "4.700." }),
            "{runtime:?}: {version}"
        );
        assert_eq!(f["summary"]["deadlocks"], 1, "{runtime:?}: {}", f["deadlocks"]);
        let d = &f["deadlocks"][0];
        assert_eq!(tids(&d["cycle"], "thread"), truth_tids(&dl["owners"]), "{runtime:?}");
        assert_eq!(tids(&d["victims"], "thread"), truth_tids(&dl["waiters"]), "{runtime:?}");
        let types = f["heap"]["top_types"].as_array().unwrap();
        if runtime == Runtime::Net31 {
            // The app's assembly is on no symbol server and 3.1 dumps lack its metadata: its
            // types are counted but unnamed, and the findings say why.
            let unnamed = types.iter().find(|t| t["count"].as_u64() == Some(total)).expect("the customers, counted");
            assert!(unnamed["type_name"].as_str().unwrap().starts_with("<unknown type"), "{unnamed}");
            let warnings = f["warnings"].to_string();
            assert!(warnings.contains("have no name") && warnings.contains("metadata"), "{warnings}");
        } else {
            let customer = types.iter().find(|t| t["type_name"] == "DiagScenarios.Customer");
            assert_eq!(customer.and_then(|c| c["count"].as_u64()), Some(total), "{runtime:?}: {types:?}");
            assert_eq!(f["leak_suspects"][0]["type_name"], "DiagScenarios.Customer", "{runtime:?}");
            assert_eq!(f["warnings"].as_array().unwrap().len(), 0, "{}", f["warnings"]);
        }

        // Analyzed again: the cached DAC, no request.
        let run = analyze_without_runtime(runtime, &[&[core_s][..], &args, &["--histogram-only"]].concat());
        assert!(run.ok, "{runtime:?}: {}", run.stderr);
        assert_eq!(
            server.requests().len(),
            expected.len() + usize::from(runtime == Runtime::Net31),
            "{runtime:?}: served from the cache (3.1: but the app's assembly, asked again)"
        );
    }
}

#[test]
fn a_missing_or_wrong_dac_on_the_server_and_no_server_are_clear_errors() {
    let w = Workload::start(Runtime::Net8, "Idle", &[]);
    let dir = tempfile::tempdir().unwrap();
    let core = dump_without_dac(&w, dir.path());
    let core = core.to_str().unwrap();
    let (key, _) = keys(Runtime::Net8);

    // Nothing under the key: 404, and the error says which URL and what to do.
    let empty = SymbolServer::start(HashMap::new());
    let cache = dir.path().join("cache-404");
    let run = analyze_without_runtime(
        Runtime::Net8,
        &[core, "--symbol-server", &empty.url, "--dac-cache", cache.to_str().unwrap()],
    );
    assert!(!run.ok);
    assert!(run.stderr.contains(&format!("{}/{key}: HTTP 404", empty.url)), "{}", run.stderr);
    assert!(run.stderr.contains("allow its egress") && run.stderr.contains("connect mode"), "{}", run.stderr);
    assert!(!cache.join(&key).exists());

    // No server listening (as when egress is blocked): the same advice, after the first server
    // the second one is tried.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}/symbols", closed.local_addr().unwrap());
    drop(closed);
    let run = analyze_without_runtime(
        Runtime::Net8,
        &[core, "--symbol-server", &dead, "--symbol-server", &empty.url, "--dac-cache", cache.to_str().unwrap()],
    );
    assert!(!run.ok);
    assert!(
        run.stderr.contains(&format!("{dead}/{key}: ")) && run.stderr.contains("allow its egress"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains(&format!("{}/{key}: HTTP 404", empty.url)), "{}", run.stderr);

    // The 3.1 DAC under 8.0's key: refused (against the version of 8.0's libcoreclr.so, which
    // the server has too), not cached.
    let wrong = std::fs::read(Runtime::Net31.shared_dir().join("libmscordaccore.so")).unwrap();
    let liar = SymbolServer::start(server_files(Runtime::Net8, wrong));
    let cache = dir.path().join("cache-wrong");
    let run = analyze_without_runtime(
        Runtime::Net8,
        &[core, "--symbol-server", &liar.url, "--dac-cache", cache.to_str().unwrap()],
    );
    assert!(!run.ok);
    assert!(run.stderr.contains("refused the DAC") && run.stderr.contains("its version is 4.700."), "{}", run.stderr);
    assert!(!cache.join(&key).exists(), "a refused DAC is not kept");

    // --no-local-runtime, without hiding anything: the runtime folder is ignored, so the DAC is
    // the server's (the version is read from the runtime file, still readable here: no
    // libcoreclr.so request).
    let good = SymbolServer::start(server_files(
        Runtime::Net8,
        std::fs::read(Runtime::Net8.shared_dir().join("libmscordaccore.so")).unwrap(),
    ));
    let cache = dir.path().join("cache-no-local");
    let out = Command::new(env!("CARGO_BIN_EXE_dumpwatch"))
        .args(["analyze", core, "--json", "--histogram-only", "--no-local-runtime", "--symbol-server", &good.url])
        .args(["--dac-cache", cache.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let f: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(f["source"]["dac"], cache.join(&key).to_str().unwrap());
    assert_eq!(good.requests(), vec![format!("/symbols/{key}")]);

    // No network allowed: the local-only error, which names the key to fetch by other means.
    let run = analyze_without_runtime(Runtime::Net8, &[core, "--no-symbol-server"]);
    assert!(!run.ok);
    assert!(run.stderr.contains("no DAC (libmscordaccore.so) found"), "{}", run.stderr);
    assert!(run.stderr.contains("no symbol server may be asked") && run.stderr.contains(&key), "{}", run.stderr);
}
