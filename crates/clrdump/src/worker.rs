//! The DAC runs in a child process so that a crash or hang inside it (a damaged dump, a DAC
//! bug) becomes an [`Error::Worker`] / [`Error::WorkerTimeout`] instead of killing the caller.
//!
//! Protocol on the child's stdout, little-endian: `CLRDUMP2`; at [`Depth::Graph`] the objects
//! as the heap walk finds them, in chunks of at most [`CHUNK_OBJECTS`]: a u32 object count
//! (0 ends the objects), then the chunk's columns: addresses (u64 each), sizes (u64), type
//! indexes (u32), reference counts (u32), and the referenced addresses (u64, as many as the
//! counts add up to). Then a u64 length and the JSON [`Snapshot`]. The parent builds the
//! object graph from the chunks as they arrive, so no process ever holds the heap twice, and
//! columns decode in tight loops rather than field by field. Errors go to stderr as one line;
//! exit code 2.

use std::ffi::OsString;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use analysis::heap::ObjectGraphBuilder;

use crate::core::CoreDump;
use crate::dac::Dac;
use crate::error::{Error, Result};
use crate::heapwalk::ObjectSink;
use crate::model::{Depth, Snapshot};

const MAGIC: &[u8; 8] = b"CLRDUMP2";
/// Objects per chunk: enough to make per-chunk costs vanish, small enough to stay in cache.
const CHUNK_OBJECTS: usize = 1 << 14;
/// References per chunk before it is sent early (one huge array can hold many).
const CHUNK_REFERENCES: usize = 1 << 18;
/// More references than a chunk can hold: a single object's references may exceed
/// `CHUNK_REFERENCES`, but never this (arrays hold at most 2^31 elements).
const MAX_CHUNK_REFERENCES: u64 = 1 << 31;

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
) -> Result<(Snapshot, Option<ObjectGraphBuilder>)> {
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

fn read_output(r: &mut impl Read, depth: Depth) -> Result<(Snapshot, Option<ObjectGraphBuilder>)> {
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).map_err(|_| bad("no header"))?;
    if &magic != MAGIC {
        return Err(bad("wrong magic"));
    }
    let graph = match depth {
        Depth::Histogram => None,
        Depth::Graph => Some(read_objects(r)?),
    };
    let len = read_u64(r).ok_or_else(|| bad("no length"))?;
    let mut json = vec![0u8; usize::try_from(len).map_err(|_| bad("length"))?.min(1 << 30)];
    r.read_exact(&mut json).map_err(|_| bad("short snapshot"))?;
    let snapshot: Snapshot = serde_json::from_slice(&json).map_err(|e| bad(&e.to_string()))?;
    Ok((snapshot, graph))
}

fn bad(what: &str) -> Error {
    Error::Worker(format!("bad worker output: {what}"))
}

/// The object chunks, straight into the graph builder.
fn read_objects(r: &mut impl Read) -> Result<ObjectGraphBuilder> {
    let mut builder = ObjectGraphBuilder::new();
    let [mut addresses, mut sizes, mut types, mut counts, mut references] = [(); 5].map(|_| Vec::new());
    loop {
        let mut count = [0u8; 4];
        r.read_exact(&mut count).map_err(|_| bad("objects end early"))?;
        let n = u32::from_le_bytes(count) as usize;
        if n == 0 {
            return Ok(builder);
        }
        if n > CHUNK_OBJECTS {
            return Err(bad("chunk too large"));
        }
        read_column(r, &mut addresses, n * 8, "addresses cut")?;
        read_column(r, &mut sizes, n * 8, "sizes cut")?;
        read_column(r, &mut types, n * 4, "types cut")?;
        read_column(r, &mut counts, n * 4, "reference counts cut")?;
        let mut total = 0u64;
        for (((address, size), type_index), count) in
            words8(&addresses).zip(words8(&sizes)).zip(words4(&types)).zip(words4(&counts))
        {
            builder.add_node(address, size, u64::from(type_index), u64::from(count));
            total += u64::from(count);
        }
        if total > MAX_CHUNK_REFERENCES {
            return Err(bad("reference count"));
        }
        read_column(r, &mut references, total as usize * 8, "references cut")?;
        builder.add_edges(words8(&references));
    }
}

fn read_column(r: &mut impl Read, buf: &mut Vec<u8>, len: usize, what: &str) -> Result<()> {
    buf.resize(len, 0);
    r.read_exact(buf).map_err(|_| bad(what))
}

fn words8(bytes: &[u8]) -> impl Iterator<Item = u64> + '_ {
    bytes.chunks_exact(8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
}

fn words4(bytes: &[u8]) -> impl Iterator<Item = u32> + '_ {
    bytes.chunks_exact(4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
}

fn read_u64(r: &mut impl Read) -> Option<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b).ok()?;
    Some(u64::from_le_bytes(b))
}

/// Collects the walk's objects into chunks and writes them (see the module docs).
struct ChunkWriter<W: Write> {
    out: W,
    addresses: Vec<u8>,
    sizes: Vec<u8>,
    types: Vec<u8>,
    counts: Vec<u8>,
    references: Vec<u8>,
    objects: usize,
}

impl<W: Write> ChunkWriter<W> {
    fn new(out: W) -> Self {
        ChunkWriter {
            out,
            addresses: Vec::new(),
            sizes: Vec::new(),
            types: Vec::new(),
            counts: Vec::new(),
            references: Vec::new(),
            objects: 0,
        }
    }

    fn flush_chunk(&mut self) -> Result<()> {
        if self.objects == 0 {
            return Ok(());
        }
        let io = |e| Error::io("writing worker output", e);
        self.out.write_all(&(self.objects as u32).to_le_bytes()).map_err(io)?;
        for column in [&mut self.addresses, &mut self.sizes, &mut self.types, &mut self.counts, &mut self.references] {
            self.out.write_all(column).map_err(io)?;
            column.clear();
        }
        self.objects = 0;
        Ok(())
    }

    /// The last chunk and the end marker; returns the writer.
    fn finish(mut self) -> Result<W> {
        self.flush_chunk()?;
        self.out.write_all(&0u32.to_le_bytes()).map_err(|e| Error::io("writing worker output", e))?;
        Ok(self.out)
    }
}

impl<W: Write> ObjectSink for ChunkWriter<W> {
    fn object(&mut self, address: u64, size: u64, type_index: u32, references: &[u64]) -> Result<()> {
        self.addresses.extend_from_slice(&address.to_le_bytes());
        self.sizes.extend_from_slice(&size.to_le_bytes());
        self.types.extend_from_slice(&type_index.to_le_bytes());
        self.counts.extend_from_slice(&(references.len() as u32).to_le_bytes());
        for reference in references {
            self.references.extend_from_slice(&reference.to_le_bytes());
        }
        self.objects += 1;
        if self.objects == CHUNK_OBJECTS || self.references.len() >= CHUNK_REFERENCES * 8 {
            self.flush_chunk()?;
        }
        Ok(())
    }
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
    let io = |e| Error::io("writing worker output", e);
    let mut w = BufWriter::with_capacity(1 << 20, out);
    w.write_all(MAGIC).map_err(io)?;
    let mut chunks = ChunkWriter::new(w);
    let snapshot = crate::collect::collect(&dac, core, depth, Some(&mut chunks))?;
    // Only the graph has objects, and their end marker.
    let mut w = if depth == Depth::Graph { chunks.finish()? } else { chunks.out };
    let json = serde_json::to_vec(&snapshot).map_err(|e| Error::Worker(e.to_string()))?;
    w.write_all(&(json.len() as u64).to_le_bytes()).map_err(io)?;
    w.write_all(&json).map_err(io)?;
    w.flush().map_err(io)?;
    Ok(())
}
