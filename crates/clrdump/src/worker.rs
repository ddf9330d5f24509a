//! The DAC runs in a child process so that a crash or hang inside it (a damaged dump, a DAC
//! bug) becomes an [`Error::Worker`] / [`Error::WorkerTimeout`] instead of killing the caller,
//! and so that it can be sandboxed ([`crate::sandbox`]) before the DAC's code runs at all.
//!
//! The child starts with an empty environment; its answer ([`crate::answer`]) is its
//! confinement report, then the JSON [`Snapshot`]. At [`Depth::Graph`] the snapshot carries the
//! roots and the heap's layout, and the parent walks the mapped dump itself for the object
//! graph ([`crate::heapwalk`]): streaming every object and reference through the pipe cost more
//! CPU than the walk. Errors go to stderr as one line; exit code 2. The parent keeps only the
//! last [`MAX_STDERR`] bytes of stderr.

use std::ffi::OsString;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::answer::MAGIC;
use crate::core::CoreDump;
use crate::dac::Dac;
use crate::error::{Error, Result};
use crate::model::{Depth, Snapshot};
use crate::sandbox::{Confinement, Limits};
use crate::timings::PhaseClock;

/// Of the worker's stderr (where the DAC's own prints land too), the parent keeps this much.
const MAX_STDERR: usize = 16 << 10;
/// The worker's argument that switches the sandbox off.
const NO_SANDBOX: &str = "no-sandbox";

/// How to start the worker: a program and the arguments that put it in worker mode; the
/// core path, DAC path, depth and sandbox limits are appended.
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

/// What the worker sent: how it was confined, and the snapshot.
pub(crate) struct Answer {
    pub confinement: Confinement,
    pub snapshot: Snapshot,
}

/// Runs the worker and parses its output. A worker that confined itself and then failed still
/// reports its confinement in the error's text.
pub(crate) fn run(
    cmd: &WorkerCommand,
    core: &Path,
    dac: &Path,
    opts: &crate::ReadOptions,
    timeout: Duration,
) -> Result<Answer> {
    let depth_arg = match opts.depth {
        Depth::Histogram => "histogram",
        Depth::Graph => "graph",
    };
    let sandbox_arg = if opts.sandbox {
        let size = std::fs::metadata(core).map_err(|e| Error::io(format!("reading {}", core.display()), e))?.len();
        Limits::for_dump(size, timeout.as_secs()).to_arg()
    } else {
        NO_SANDBOX.to_string()
    };
    let mut child = Command::new(&cmd.program)
        .args(&cmd.args)
        .arg(core)
        .arg(dac)
        .arg(depth_arg)
        .arg(sandbox_arg)
        // Then pairs: a path in the dumped process, the local file to read instead.
        .args(opts.replacements.iter().flat_map(|(dumped, local)| [OsString::from(dumped), local.clone().into()]))
        // Nothing of ours (tokens, proxies, credentials in variables) reaches the DAC.
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::io(format!("starting DAC worker {}", cmd.program.display()), e))?;
    let stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::with_capacity(1 << 20, stdout);
        let confinement = crate::answer::read_confinement(&mut r);
        let snapshot = confinement.is_ok().then(|| crate::answer::read_snapshot(&mut r));
        // Drain what else comes, so that the worker never blocks on a full pipe.
        let _ = std::io::copy(&mut r, &mut std::io::sink());
        (confinement, snapshot)
    });
    let err_reader = std::thread::spawn(move || bounded_tail(&mut stderr, MAX_STDERR));
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
    let (confinement, snapshot) = reader.join().map_err(|_| Error::Worker("output reader panicked".into()))?;
    let stderr = err_reader.join().unwrap_or_default();
    let stderr = stderr.trim();
    let confined = match &confinement {
        Ok(c) => format!(" [sandbox: {}]", c.summary()),
        Err(_) => String::new(),
    };
    if !status.success() {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return Err(Error::Worker(format!("the DAC crashed (signal {sig}) {stderr}{confined}")));
        }
        // The worker reports typed failures as one line on stderr.
        return Err(Error::Worker(if stderr.is_empty() {
            format!("exited with {status}{confined}")
        } else {
            format!("{stderr}{confined}")
        }));
    }
    let confinement = confinement?;
    let snapshot = snapshot.ok_or_else(|| Error::Worker("no snapshot".into()))??;
    Ok(Answer { confinement, snapshot })
}

/// The last `max` bytes `r` yields (as text), however much it writes.
fn bounded_tail(r: &mut impl Read, max: usize) -> String {
    let mut kept: Vec<u8> = Vec::new();
    let mut cut = false;
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > 2 * max {
                    kept.drain(..kept.len() - max);
                    cut = true;
                }
            }
        }
    }
    if kept.len() > max {
        kept.drain(..kept.len() - max);
        cut = true;
    }
    let text = String::from_utf8_lossy(&kept).into_owned();
    if cut { format!("[…] {text}") } else { text }
}

/// The worker's `main`: `<core> <dac> <histogram|graph> <limits|no-sandbox> [pairs]`. Returns
/// the process exit code.
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
    let [core_arg, dac, depth, sandbox, replacements @ ..] = args else {
        return Err(Error::Worker(
            "usage: <core> <dac> <histogram|graph> <no-sandbox|<address space>:<cpu s>> [<dumped path> <local file>]..."
                .into(),
        ));
    };
    let depth = match depth.to_str() {
        Some("graph") => Depth::Graph,
        _ => Depth::Histogram,
    };
    let limits = match sandbox.to_str() {
        Some(NO_SANDBOX) => None,
        Some(s) => Some(Limits::from_arg(s).ok_or_else(|| Error::Worker(format!("bad limits {s:?}")))?),
        None => return Err(Error::Worker("bad limits".into())),
    };
    let mut clock = PhaseClock::new();
    clock.start("worker: open the dump, confine, load the DAC");
    let out = crate::stdio::take_stdout()?;
    // Leaked: the DAC keeps pointers into the data target for the process' lifetime.
    let mut opened = CoreDump::open(Path::new(core_arg))?;
    let mut local_files: Vec<PathBuf> = Vec::new();
    for pair in replacements.chunks_exact(2) {
        opened.replace_file(pair[0].to_string_lossy().into_owned(), PathBuf::from(&pair[1]));
        local_files.push(PathBuf::from(&pair[1]));
    }
    let core: &'static CoreDump = Box::leak(Box::new(opened));
    let io = |e| Error::io("writing worker output", e);
    let mut w = BufWriter::with_capacity(1 << 20, out);
    w.write_all(MAGIC).map_err(io)?;
    let confinement = match limits {
        Some(limits) => {
            // The files the DAC reads through the data target: the modules the dump maps, by
            // name ([`crate::sandbox::is_module_file`]), and their local replacements.
            let mut read_only = vec![PathBuf::from(core_arg), PathBuf::from(dac)];
            read_only.extend(local_files);
            let mut modules: Vec<&str> = core
                .elf()
                .files
                .iter()
                .map(|f| f.path.as_str())
                .filter(|p| crate::sandbox::is_module_file(p))
                .collect();
            modules.sort_unstable();
            modules.dedup();
            let open_files = 128 + modules.len() as u64;
            read_only.extend(modules.into_iter().map(PathBuf::from));
            crate::sandbox::confine(&read_only, limits, open_files)
        }
        None => Confinement::off(),
    };
    // Before the DAC's code runs: the parent learns what held even if the DAC kills us.
    let report = serde_json::to_vec(&confinement).map_err(|e| Error::Worker(e.to_string()))?;
    w.write_all(&(report.len() as u64).to_le_bytes()).map_err(io)?;
    w.write_all(&report).map_err(io)?;
    w.flush().map_err(io)?;
    let dac = Dac::load(Path::new(dac), core)?;
    let mut snapshot = crate::collect::collect(&dac, core, depth, &mut clock)?;
    snapshot.phases = clock.finish();
    let json = serde_json::to_vec(&snapshot).map_err(|e| Error::Worker(e.to_string()))?;
    w.write_all(&(json.len() as u64).to_le_bytes()).map_err(io)?;
    w.write_all(&json).map_err(io)?;
    w.flush().map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_keeps_only_its_tail() {
        let long = "a".repeat(100_000) + "the end";
        let got = bounded_tail(&mut long.as_bytes(), 1000);
        assert!(got.starts_with("[…] ") && got.ends_with("the end") && got.len() <= 1010, "{}", got.len());
        assert_eq!(bounded_tail(&mut &b"short"[..], 1000), "short");
    }
}
