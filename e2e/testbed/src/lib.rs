//! Test bed: start the real C# workloads on real .NET runtimes (installed by `scripts/setup`),
//! optionally in their own PID + mount namespace with a private `/tmp`, and ask them for
//! ground truth over their tiny HTTP API.
//!
//! Every workload is killed when its [`Workload`] is dropped, so a failing test leaves no
//! process behind.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use serde_json::Value;

/// The two runtimes the project supports at the ends of its range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    Net31,
    Net8,
}

impl Runtime {
    pub const ALL: [Runtime; 2] = [Runtime::Net31, Runtime::Net8];

    fn dir_name(self) -> &'static str {
        match self {
            Runtime::Net31 => "dotnet31",
            Runtime::Net8 => "dotnet8",
        }
    }

    pub fn version(self) -> &'static str {
        match self {
            Runtime::Net31 => "3.1.23",
            Runtime::Net8 => "8.0.4",
        }
    }

    /// The `dotnet` host of this runtime.
    pub fn host(self) -> PathBuf {
        cache_dir().join(self.dir_name()).join("dotnet")
    }

    /// The shared framework folder (libcoreclr.so, createdump, libmscordaccore.so).
    pub fn shared_dir(self) -> PathBuf {
        cache_dir().join(self.dir_name()).join("shared/Microsoft.NETCore.App").join(self.version())
    }
}

/// `$DUMPWATCH_CACHE`, else `<repo>/.cache` (where `scripts/setup` installs everything).
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("DUMPWATCH_CACHE") {
        return PathBuf::from(d);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache")
}

/// Panics with the command to run when the test bed is missing: a test must not silently pass.
pub fn require_setup() {
    for rt in Runtime::ALL {
        assert!(rt.host().exists(), "{} missing: run scripts/setup first", rt.host().display());
    }
    assert!(workload_dll("DiagScenarios").exists(), "workloads missing: run scripts/setup first");
}

/// Checks a speedscope profile against speedscope's published file-format schema (the one its
/// npm package ships, installed by `scripts/setup` with a JSON Schema validator): `Err` says
/// what the schema refuses. Panics when the schema is not installed: a test must not silently pass.
pub fn validate_speedscope(profile: &Path) -> Result<(), String> {
    let dir = cache_dir().join("speedscope-1.25.0");
    let schema = dir.join("file-format-schema.json");
    assert!(dir.join(".complete").exists(), "{} missing: run scripts/setup first", schema.display());
    // The schema's root refers to its definition of a whole file (FileFormat.File).
    let check = "import json, sys, jsonschema\n\
        schema = json.load(open(sys.argv[1]))\n\
        doc = json.load(open(sys.argv[2]))\n\
        errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=lambda e: str(list(e.path)))\n\
        print('\\n'.join(f\"{list(e.path)}: {e.message}\" for e in errors[:10]))\n\
        sys.exit(1 if errors else 0)\n";
    let out = std::process::Command::new(dir.join("venv/bin/python"))
        .args(["-c", check])
        .arg(&schema)
        .arg(profile)
        .output()
        .map_err(|e| format!("running the validator: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}

pub fn workload_dll(name: &str) -> PathBuf {
    cache_dir().join("workloads").join(name).join(format!("{name}.dll"))
}

/// How to isolate a workload.
#[derive(Debug, Clone, Default)]
pub struct Isolation {
    /// Own PID and mount namespace with a private tmpfs `/tmp`, like a container whose PID
    /// namespace a sidecar shares. The workload is pid 1 inside.
    pub own_namespaces: bool,
    /// Extra environment (e.g. `DOTNET_DiagnosticPorts`).
    pub env: Vec<(String, String)>,
}

/// A running workload.
pub struct Workload {
    child: Child,
    /// The pid in our PID namespace.
    pub pid: u32,
    /// The HTTP port (0 if the workload has no listener).
    pub port: u16,
    /// The ready line the workload printed.
    pub ready: Value,
    pub runtime: Runtime,
}

impl Workload {
    /// Start `name` on `runtime` and wait for its ready line.
    pub fn start(runtime: Runtime, name: &str, args: &[&str]) -> Workload {
        Self::start_with(runtime, name, args, &Isolation::default())
    }

    pub fn start_with(runtime: Runtime, name: &str, args: &[&str], iso: &Isolation) -> Workload {
        require_setup();
        Self::start_dll(runtime, &workload_dll(name), args, iso)
    }

    /// Start the app `dll` (e.g. one from [`compile_app`]); it must print a ready line with a
    /// `port` like the workloads do.
    pub fn start_dll(runtime: Runtime, dll: &Path, args: &[&str], iso: &Isolation) -> Workload {
        let host = runtime.host();
        let name = dll.file_stem().map_or_else(|| dll.display().to_string(), |s| s.to_string_lossy().into_owned());
        let dll = dll.to_path_buf();
        let mut cmd = if iso.own_namespaces {
            // tmpfs on /tmp makes the runtime's socket invisible from our mount namespace:
            // only /proc/<pid>/root reaches it, as from a sidecar container. The cache (which
            // may itself live under /tmp, as in a CI checkout) is bound to /mnt first, inside
            // the new mount namespace only, so the tmpfs does not hide the runtime.
            let cache = std::fs::canonicalize(cache_dir()).expect("cache dir");
            let inside = |p: &Path| {
                let real = std::fs::canonicalize(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                let rel = real.strip_prefix(&cache).expect("runtime and workloads live in the cache");
                shell_quote(&Path::new("/mnt").join(rel).to_string_lossy())
            };
            let script = format!(
                "mount --bind {} /mnt && mount -t tmpfs tmpfs /tmp && exec {} {} {}",
                shell_quote(&cache.to_string_lossy()),
                inside(&host),
                inside(&dll),
                args.iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" ")
            );
            let mut c = Command::new("unshare");
            // --kill-child: if unshare dies, the namespace's pid 1 (our workload) dies with it.
            c.args([
                "--pid",
                "--mount",
                "--fork",
                "--kill-child",
                "--mount-proc",
                "--propagation",
                "private",
                "sh",
                "-c",
                &script,
            ]);
            c
        } else {
            let mut c = Command::new(&host);
            c.arg(&dll).args(args);
            c
        };
        cmd.env("DOTNET_SYSTEM_GLOBALIZATION_INVARIANT", "1")
            .env_remove("DOTNET_DiagnosticPorts")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            // Not inherited: a workload that outlives a test must not hold the test's output pipe.
            .stderr(Stdio::null());
        for (k, v) in &iso.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("starting {name} on {runtime:?}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so the workload never blocks on a full pipe.
            for _ in lines {}
        });
        let line = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                panic!("{name} on {runtime:?} printed no ready line within 60 s");
            }
        };
        let ready: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad ready line {line:?}: {e}"));
        let port = ready["port"].as_u64().unwrap_or(0) as u16;
        let pid = if iso.own_namespaces { innermost_child(child.id()) } else { child.id() };
        Workload { child, pid, port, ready, runtime }
    }

    /// GET `path_and_query` and parse the JSON body; panics on a non-200 answer.
    pub fn get(&self, path_and_query: &str) -> Value {
        let (status, body) =
            self.try_get(path_and_query, Duration::from_secs(120)).expect("HTTP request to the workload");
        assert_eq!(status, 200, "GET {path_and_query}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path_and_query}: bad JSON {body:?}: {e}"))
    }

    pub fn try_get(&self, path_and_query: &str, timeout: Duration) -> std::io::Result<(u16, String)> {
        http_get(self.port, path_and_query, timeout)
    }

    /// Is the process still alive?
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        // In its own PID namespace the workload is not our child: kill it directly too.
        if self.pid != self.child.id() {
            let _ = Command::new("kill").args(["-9", &self.pid.to_string()]).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The process at the bottom of a chain of single children (unshare → sh → dotnet, where sh
/// execs, so: unshare's child).
fn innermost_child(pid: u32) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut current = pid;
    loop {
        let children = std::fs::read_to_string(format!("/proc/{current}/task/{current}/children")).unwrap_or_default();
        match children.split_whitespace().next().and_then(|c| c.parse().ok()) {
            Some(c) => current = c,
            None if current != pid => return current,
            None => {
                assert!(Instant::now() < deadline, "no child of {pid} appeared");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Compiles the C# `source` into `<dir>/<name>.dll` with a runtimeconfig, the way
/// `e2e/workloads/build` compiles the workloads (mcs against the .NET Core 3.1 assemblies,
/// `rollForward: Major`), for tests that generate their patient. Panics if mcs fails.
pub fn compile_app(dir: &Path, name: &str, source: &str) -> PathBuf {
    let refdir = Runtime::Net31.shared_dir();
    let mut refs = vec![format!("-r:{}", refdir.join("System.Private.CoreLib.dll").display())];
    let mut dlls: Vec<PathBuf> = std::fs::read_dir(&refdir)
        .unwrap_or_else(|e| panic!("{}: {e}; run scripts/setup", refdir.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    dlls.sort();
    for dll in dlls {
        let file = dll.file_name().unwrap().to_string_lossy().into_owned();
        // The same exclusions as the build script: facades whose types clash, Windows-only
        // and internal assemblies.
        let excluded = ["mscorlib.dll", "Microsoft.VisualBasic.dll", "WindowsBase.dll"].contains(&file.as_str())
            || file.starts_with("System.Runtime.WindowsRuntime")
            || file.starts_with("System.Private.");
        if file.ends_with(".dll") && !excluded {
            refs.push(format!("-r:{}", dll.display()));
        }
    }
    let src = dir.join(format!("{name}.cs"));
    std::fs::write(&src, source).unwrap();
    let dll = dir.join(format!("{name}.dll"));
    let out = Command::new("mcs")
        .args(["-nologo", "-target:exe", "-nostdlib", "-noconfig", "-optimize+", "-nowarn:1702"])
        .args(&refs)
        .arg(format!("-out:{}", dll.display()))
        .arg(&src)
        .output()
        .expect("mcs (Debian package mono-mcs; scripts/setup installs it)");
    assert!(out.status.success(), "mcs failed for {name}: {}", String::from_utf8_lossy(&out.stdout));
    let config = r#"{"runtimeOptions":{"tfm":"netcoreapp3.1","rollForward":"Major","framework":{"name":"Microsoft.NETCore.App","version":"3.1.0"},"configProperties":{"System.Globalization.Invariant":true}}}"#;
    std::fs::write(dir.join(format!("{name}.runtimeconfig.json")), config).unwrap();
    dll
}

/// Ground truth for build-id readers: the GNU build-id of a shared object on disk (e.g. a
/// runtime's `libcoreclr.so`), from its `.note.gnu.build-id` section found through the section
/// headers — independent of the program-header walk a dump reader does. Panics on a file
/// without one (test support, not a parser of untrusted input).
pub fn build_id_of_file(path: &Path) -> Vec<u8> {
    let f = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let u16_at = |at: usize| u16::from_le_bytes(f[at..at + 2].try_into().unwrap()) as usize;
    let u32_at = |at: usize| u32::from_le_bytes(f[at..at + 4].try_into().unwrap()) as usize;
    let u64_at = |at: usize| u64::from_le_bytes(f[at..at + 8].try_into().unwrap()) as usize;
    let (shoff, shnum, shstrndx) = (u64_at(40), u16_at(60), u16_at(62));
    let sh = |i: usize| shoff + i * 64;
    let strtab = u64_at(sh(shstrndx) + 24);
    for i in 0..shnum {
        let name = f[strtab + u32_at(sh(i))..].split(|&b| b == 0).next().unwrap();
        if name == b".note.gnu.build-id" {
            let off = u64_at(sh(i) + 24);
            let desc = off + 12 + u32_at(off).next_multiple_of(4);
            return f[desc..desc + u32_at(off + 4)].to_vec();
        }
    }
    panic!("{} has no .note.gnu.build-id", path.display());
}

/// Minimal HTTP/1.1 GET against the workload on loopback.
pub fn http_get(port: u16, path_and_query: &str, timeout: Duration) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(timeout))?;
    write!(s, "GET {path_and_query} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let status = raw.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}
