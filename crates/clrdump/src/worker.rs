//! The DAC runs in a child process so that a crash or hang inside it (a damaged dump, a DAC
//! bug) becomes an [`Error::Worker`] / [`Error::WorkerTimeout`] instead of killing the caller.
//!
//! Protocol on the child's stdout, little-endian: `CLRDUMP3`, a u64 length and the JSON
//! [`Snapshot`]. At [`Depth::Graph`] the snapshot carries the roots and the heap's layout,
//! and the parent walks the mapped dump itself for the object graph ([`crate::heapwalk`]):
//! streaming every object and reference through the pipe cost more CPU than the walk.
//! Errors go to stderr as one line; exit code 2.

use std::ffi::OsString;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::core::CoreDump;
use crate::dac::Dac;
use crate::error::{Error, Result};
use crate::model::{Depth, Snapshot};
use crate::timings::PhaseClock;

const MAGIC: &[u8; 8] = b"CLRDUMP3";

/// How to start the worker: a program and the arguments that put it in worker mode; the
/// core path, DAC path and depth are appended.
#[derive(Clone, Debug)]
pub struct WorkerCommand {
    /// The executable.
    pub program: PathBuf,
    /// Leading arguments (e.g. a hidden subcommand name).
    pub args: Vec<OsString>,
}

impl WorkerCommand {
    /// The current executable re-run with `subcommand` (how the `dumpwatch` CLI does it).
    pub fn current_exe(subcommand: &str) -> Result<Self> {
        let program = std::env::current_exe().map_err(|e| Error::io("locating the current executable", e))?;
        Ok(WorkerCommand { program, args: vec![subcommand.into()] })
    }
}

/// Runs the worker and parses its output.
pub(crate) fn run(
    cmd: &WorkerCommand,
    core: &Path,
    dac: &Path,
    opts: &crate::ReadOptions,
    timeout: Duration,
) -> Result<Snapshot> {
    let depth = opts.depth;
    let depth_arg = match depth {
        Depth::Histogram => "histogram",
        Depth::Graph => "graph",
    };
    let mut child = Command::new(&cmd.program)
        .args(&cmd.args)
        .arg(core)
        .arg(dac)
        .arg(depth_arg)
        // Then pairs: a path in the dumped process, the local file to read instead.
        .args(opts.replacements.iter().flat_map(|(dumped, local)| [OsString::from(dumped), local.clone().into()]))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::io(format!("starting DAC worker {}", cmd.program.display()), e))?;
    let stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let reader = std::thread::spawn(move || read_output(&mut BufReader::with_capacity(1 << 20, stdout)));
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() > timeout => {
                // Our own child, by its handle.
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::WorkerTimeout(timeout.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(Error::io("waiting for the DAC worker", e)),
        }
    };
    let output = reader.join().map_err(|_| Error::Worker("output reader panicked".into()))?;
    let stderr = err_reader.join().unwrap_or_default();
    let stderr = stderr.trim();
    if !status.success() {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return Err(Error::Worker(format!("the DAC crashed (signal {sig}) {stderr}")));
        }
        // The worker reports typed failures as one line on stderr.
        return Err(Error::Worker(if stderr.is_empty() {
            format!("exited with {status}")
        } else {
            stderr.to_string()
        }));
    }
    output
}

fn read_output(r: &mut impl Read) -> Result<Snapshot> {
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).map_err(|_| bad("no header"))?;
    if &magic != MAGIC {
        return Err(bad("wrong magic"));
    }
    let len = read_u64(r).ok_or_else(|| bad("no length"))?;
    let mut json = vec![0u8; usize::try_from(len).map_err(|_| bad("length"))?.min(1 << 30)];
    r.read_exact(&mut json).map_err(|_| bad("short snapshot"))?;
    serde_json::from_slice(&json).map_err(|e| bad(&e.to_string()))
}

fn bad(what: &str) -> Error {
    Error::Worker(format!("bad worker output: {what}"))
}

fn read_u64(r: &mut impl Read) -> Option<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b).ok()?;
    Some(u64::from_le_bytes(b))
}

/// The worker's `main`: `<core> <dac> <histogram|graph>`. Returns the process exit code.
pub fn worker_main(args: &[OsString]) -> i32 {
    match worker(args) {
        Ok(()) => 0,
        Err(e) => {
            // One line, with the causes: the parent shows it as the worker's error.
            let mut line = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                line.push_str(&format!(": {s}"));
                source = s.source();
            }
            eprintln!("{line}");
            2
        }
    }
}

fn worker(args: &[OsString]) -> Result<()> {
    let [core, dac, depth, replacements @ ..] = args else {
        return Err(Error::Worker("usage: <core> <dac> <histogram|graph> [<dumped path> <local file>]...".into()));
    };
    let depth = match depth.to_str() {
        Some("graph") => Depth::Graph,
        _ => Depth::Histogram,
    };
    let mut clock = PhaseClock::new();
    clock.start("worker: open the dump, load the DAC");
    let out = crate::stdio::take_stdout()?;
    // Leaked: the DAC keeps pointers into the data target for the process' lifetime.
    let mut opened = CoreDump::open(Path::new(core))?;
    for pair in replacements.chunks_exact(2) {
        opened.replace_file(pair[0].to_string_lossy().into_owned(), PathBuf::from(&pair[1]));
    }
    let core: &'static CoreDump = Box::leak(Box::new(opened));
    let dac = Dac::load(Path::new(dac), core)?;
    let io = |e| Error::io("writing worker output", e);
    let mut w = BufWriter::with_capacity(1 << 20, out);
    w.write_all(MAGIC).map_err(io)?;
    let mut snapshot = crate::collect::collect(&dac, core, depth, &mut clock)?;
    snapshot.phases = clock.finish();
    let json = serde_json::to_vec(&snapshot).map_err(|e| Error::Worker(e.to_string()))?;
    w.write_all(&(json.len() as u64).to_le_bytes()).map_err(io)?;
    w.write_all(&json).map_err(io)?;
    w.flush().map_err(io)?;
    Ok(())
}
