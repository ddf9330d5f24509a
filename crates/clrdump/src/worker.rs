//! The DAC runs in a child process so that a crash or hang inside it (a damaged dump, a DAC
//! bug) becomes an [`Error::Worker`] / [`Error::WorkerTimeout`] instead of killing the caller.
//!
//! Protocol on the child's stdout: `CLRDUMP1`, a u64 length and the JSON [`Snapshot`]; then,
//! at [`Depth::Graph`], the columns of the [`RawGraph`] as little-endian arrays, each
//! preceded by its element count. Errors go to stderr as one line; exit code 2.

use std::ffi::OsString;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::core::CoreDump;
use crate::dac::Dac;
use crate::error::{Error, Result};
use crate::model::{Depth, RawGraph, Snapshot};

const MAGIC: &[u8; 8] = b"CLRDUMP1";

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
) -> Result<(Snapshot, Option<RawGraph>)> {
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
    let reader = std::thread::spawn(move || read_output(&mut BufReader::with_capacity(1 << 20, stdout), depth));
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

fn read_output(r: &mut impl Read, depth: Depth) -> Result<(Snapshot, Option<RawGraph>)> {
    let bad = |what: &str| Error::Worker(format!("bad worker output: {what}"));
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).map_err(|_| bad("no header"))?;
    if &magic != MAGIC {
        return Err(bad("wrong magic"));
    }
    let len = read_u64(r).ok_or_else(|| bad("no length"))?;
    let mut json = vec![0u8; usize::try_from(len).map_err(|_| bad("length"))?.min(1 << 30)];
    r.read_exact(&mut json).map_err(|_| bad("short snapshot"))?;
    let snapshot: Snapshot = serde_json::from_slice(&json).map_err(|e| bad(&e.to_string()))?;
    if depth == Depth::Histogram {
        return Ok((snapshot, None));
    }
    let graph = RawGraph {
        addresses: read_col(r, 8, |b| u64::from_le_bytes(b.try_into().expect("8"))).ok_or_else(|| bad("addresses"))?,
        sizes: read_col(r, 4, |b| u32::from_le_bytes(b.try_into().expect("4"))).ok_or_else(|| bad("sizes"))?,
        type_index: read_col(r, 4, |b| u32::from_le_bytes(b.try_into().expect("4"))).ok_or_else(|| bad("types"))?,
        edge_counts: read_col(r, 4, |b| u32::from_le_bytes(b.try_into().expect("4")))
            .ok_or_else(|| bad("edge counts"))?,
        edges: read_col(r, 8, |b| u64::from_le_bytes(b.try_into().expect("8"))).ok_or_else(|| bad("edges"))?,
    };
    Ok((snapshot, Some(graph)))
}

fn read_u64(r: &mut impl Read) -> Option<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b).ok()?;
    Some(u64::from_le_bytes(b))
}

fn read_col<T>(r: &mut impl Read, width: usize, f: impl Fn(&[u8]) -> T) -> Option<Vec<T>> {
    let n = usize::try_from(read_u64(r)?).ok()?;
    if n > 1 << 32 {
        return None;
    }
    let mut out = Vec::with_capacity(n);
    let mut buf = vec![0u8; 64 * 1024 * width];
    let mut left = n;
    while left > 0 {
        let take = left.min(64 * 1024);
        r.read_exact(&mut buf[..take * width]).ok()?;
        out.extend(buf[..take * width].chunks_exact(width).map(&f));
        left -= take;
    }
    Some(out)
}

fn write_col<T: Copy>(w: &mut impl Write, col: &[T], f: impl Fn(T, &mut Vec<u8>)) -> std::io::Result<()> {
    w.write_all(&(col.len() as u64).to_le_bytes())?;
    let mut buf = Vec::with_capacity(64 * 1024 * 8);
    for chunk in col.chunks(64 * 1024) {
        buf.clear();
        for &v in chunk {
            f(v, &mut buf);
        }
        w.write_all(&buf)?;
    }
    Ok(())
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
    let out = crate::stdio::take_stdout()?;
    // Leaked: the DAC keeps pointers into the data target for the process' lifetime.
    let mut opened = CoreDump::open(Path::new(core))?;
    for pair in replacements.chunks_exact(2) {
        opened.replace_file(pair[0].to_string_lossy().into_owned(), PathBuf::from(&pair[1]));
    }
    let core: &'static CoreDump = Box::leak(Box::new(opened));
    let dac = Dac::load(Path::new(dac), core)?;
    let (snapshot, graph) = crate::collect::collect(&dac, core, depth)?;
    let mut w = BufWriter::with_capacity(1 << 20, out);
    let io = |e| Error::io("writing worker output", e);
    let json = serde_json::to_vec(&snapshot).map_err(|e| Error::Worker(e.to_string()))?;
    w.write_all(MAGIC).map_err(io)?;
    w.write_all(&(json.len() as u64).to_le_bytes()).map_err(io)?;
    w.write_all(&json).map_err(io)?;
    if let Some(g) = graph {
        write_col(&mut w, &g.addresses, |v, b| b.extend_from_slice(&v.to_le_bytes())).map_err(io)?;
        write_col(&mut w, &g.sizes, |v, b| b.extend_from_slice(&v.to_le_bytes())).map_err(io)?;
        write_col(&mut w, &g.type_index, |v, b| b.extend_from_slice(&v.to_le_bytes())).map_err(io)?;
        write_col(&mut w, &g.edge_counts, |v, b| b.extend_from_slice(&v.to_le_bytes())).map_err(io)?;
        write_col(&mut w, &g.edges, |v, b| b.extend_from_slice(&v.to_le_bytes())).map_err(io)?;
    }
    w.flush().map_err(io)?;
    Ok(())
}
