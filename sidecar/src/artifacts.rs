//! A capture's files as stored artifacts: zstd-compressed (`<file>.zst`), described by the size
//! and SHA-256 of the *stored* bytes (docs/operator.md).
//!
//! Everything here streams with bounded memory (a 256 KiB buffer plus zstd's window) and is
//! blocking: callers run it on `spawn_blocking`, never on the sidecar's one event-loop thread.
//! S3 uploads compress each file twice (once to learn size and checksum for the upload URLs, once
//! into the PUT) instead of writing a compressed copy: the app's disk never holds both.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use api::CaptureKind;
use sha2::{Digest, Sha256};

use crate::Error;

/// zstd level: 1 is ~3x faster than the default 3 and still shrinks a core dump 5-10x; the
/// sidecar runs beside the app and must not take its CPU.
pub const LEVEL: i32 = 1;
/// Size of the chunks handed to an upload body.
pub const CHUNK: usize = 256 * 1024;

/// One file of a capture to store.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub source: PathBuf,
    /// Stored name: `<file>.zst`.
    pub name: String,
    pub kind: CaptureKind,
}

/// The files of a capture directory worth storing, in name order. `manifest.json` travels in
/// the report body and `finding.json` as its `findings`; hidden files are half-written.
pub fn plan(dir: &Path) -> Result<Vec<Planned>, Error> {
    let mut out = Vec::new();
    let mut entries: Vec<_> =
        std::fs::read_dir(dir).map_err(Error::io(format!("listing {}", dir.display())))?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let file = e.file_name().to_string_lossy().into_owned();
        if file.starts_with('.') || file == "manifest.json" || file == "finding.json" || !e.path().is_file() {
            continue;
        }
        let name = if file.ends_with(".zst") { file.clone() } else { format!("{file}.zst") };
        out.push(Planned { source: e.path(), name, kind: kind_of(&file) });
    }
    Ok(out)
}

/// Which capture kind a file belongs to, from its name as `capture` writes it.
pub fn kind_of(file: &str) -> CaptureKind {
    if file.starts_with("heap.") || file.starts_with("histogram.") {
        CaptureKind::Gcdump
    } else if file.starts_with("stacks.") {
        CaptureKind::Stacks
    } else {
        // core.<pid>, the DAC beside it, a crash report.
        CaptureKind::Dump
    }
}

/// Size and lowercase-hex SHA-256 of the bytes written through it.
pub struct Digesting<W> {
    inner: W,
    hash: Sha256,
    len: u64,
}

impl<W: Write> Digesting<W> {
    pub fn new(inner: W) -> Self {
        Self { inner, hash: Sha256::new(), len: 0 }
    }

    pub fn finish(self) -> (W, u64, String) {
        (self.inner, self.len, hex(&self.hash.finalize()))
    }
}

impl<W: Write> Write for Digesting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compress `src` into `out`; returns size and SHA-256 of the compressed bytes.
pub fn compress<W: Write>(src: &Path, out: W) -> Result<(W, u64, String), Error> {
    let what = || format!("compressing {}", src.display());
    let f = File::open(src).map_err(Error::io(what()))?;
    let mut reader = BufReader::with_capacity(CHUNK, f);
    let mut enc = zstd::stream::write::Encoder::new(Digesting::new(out), LEVEL).map_err(Error::io(what()))?;
    io::copy(&mut reader, &mut enc).map_err(Error::io(what()))?;
    let mut digesting = enc.finish().map_err(Error::io(what()))?;
    // `finish` writes the frame's end but does not flush: the last chunk would stay behind.
    digesting.flush().map_err(Error::io(what()))?;
    Ok(digesting.finish())
}

/// Size and SHA-256 of `src` once compressed, without keeping the compressed bytes.
pub fn measure(src: &Path) -> Result<(u64, String), Error> {
    compress(src, io::sink()).map(|(_, n, h)| (n, h))
}

/// Compress `src` to `dst` on the same volume, never letting the compressed bytes pass
/// `headroom` (the policy's `maxBytes` minus what the store holds): the file appears whole under
/// `dst` or not at all.
pub fn compress_to_file(src: &Path, dst: &Path, headroom: u64) -> Result<(u64, String), Error> {
    let file_name = dst.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dst.with_file_name(format!(".{file_name}.partial"));
    let result = (|| {
        let f = File::create(&tmp).map_err(Error::io(format!("creating {}", tmp.display())))?;
        let (w, n, sha) = compress(src, Limited { inner: io::BufWriter::with_capacity(CHUNK, f), left: headroom })?;
        let f = w.inner.into_inner().map_err(|e| Error::io(format!("writing {}", tmp.display()))(e.into_error()))?;
        f.sync_all().map_err(Error::io(format!("writing {}", tmp.display())))?;
        std::fs::rename(&tmp, dst).map_err(Error::io(format!("publishing {}", dst.display())))?;
        Ok((n, sha))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A writer that refuses to pass a byte budget.
struct Limited<W> {
    inner: W,
    left: u64,
}

impl<W: Write> Write for Limited<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.len() as u64 > self.left {
            return Err(io::Error::new(io::ErrorKind::StorageFull, "the compressed file would exceed limits.maxBytes"));
        }
        let n = self.inner.write(buf)?;
        self.left -= n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A `Write` that hands fixed-size chunks to an async consumer, never letting one chunk straddle
/// a part boundary (so each multipart part is exactly `part_size` bytes). Blocks when the
/// consumer is slower: memory stays at a few chunks.
pub struct ChunkSender {
    tx: tokio::sync::mpsc::Sender<bytes::Bytes>,
    buf: Vec<u8>,
    part_size: u64,
    in_part: u64,
}

impl ChunkSender {
    pub fn new(tx: tokio::sync::mpsc::Sender<bytes::Bytes>, part_size: u64) -> Self {
        Self { tx, buf: Vec::with_capacity(CHUNK), part_size: part_size.max(1), in_part: 0 }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = bytes::Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.in_part = (self.in_part + chunk.len() as u64) % self.part_size;
        self.tx.blocking_send(chunk).map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "upload stopped"))
    }
}

impl Write for ChunkSender {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let to_boundary = (self.part_size - self.in_part - self.buf.len() as u64) as usize;
        let room = (CHUNK - self.buf.len()).min(to_boundary).min(data.len());
        self.buf.extend_from_slice(&data[..room]);
        if self.buf.len() == CHUNK || room == to_boundary {
            self.send()?;
        }
        Ok(room)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// Read a whole file (small test helper and for `file://` checks).
pub fn sha256_of(path: &Path) -> Result<(u64, String), Error> {
    let mut f = File::open(path).map_err(Error::io(format!("reading {}", path.display())))?;
    let mut d = Digesting::new(io::sink());
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = f.read(&mut buf).map_err(Error::io(format!("reading {}", path.display())))?;
        if n == 0 {
            break;
        }
        d.write_all(&buf[..n]).expect("sink");
    }
    let (_, n, h) = d.finish();
    Ok((n, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_planned_with_their_kind_and_stored_name() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["core.42", "libmscordaccore.so", "heap.nettrace", "histogram.json", "stacks.json", "manifest.json"] {
            std::fs::write(dir.path().join(f), b"x").unwrap();
        }
        std::fs::write(dir.path().join("finding.json"), b"{}").unwrap();
        std::fs::write(dir.path().join(".core.1.partial"), b"half").unwrap();
        let p = plan(dir.path()).unwrap();
        let got: Vec<(&str, CaptureKind)> = p.iter().map(|p| (p.name.as_str(), p.kind)).collect();
        assert_eq!(
            got,
            vec![
                ("core.42.zst", CaptureKind::Dump),
                ("heap.nettrace.zst", CaptureKind::Gcdump),
                ("histogram.json.zst", CaptureKind::Gcdump),
                ("libmscordaccore.so.zst", CaptureKind::Dump),
                ("stacks.json.zst", CaptureKind::Stacks),
            ]
        );
    }

    #[test]
    fn measuring_and_compressing_agree_and_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("core.1");
        let data: Vec<u8> = (0..3_000_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        std::fs::write(&src, &data).unwrap();
        let (n, sha) = measure(&src).unwrap();
        let dst = dir.path().join("core.1.zst");
        assert_eq!(compress_to_file(&src, &dst, u64::MAX).unwrap(), (n, sha.clone()));
        assert_eq!(sha256_of(&dst).unwrap(), (n, sha));
        assert!(n < data.len() as u64 / 5, "compresses: {n}");
        assert_eq!(zstd::decode_all(File::open(&dst).unwrap()).unwrap(), data);
    }

    #[test]
    fn a_compressed_file_over_the_budget_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("core.1");
        let mut x = 0x2545F4914F6CDD1Du64;
        let data: Vec<u8> = (0..1_000_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        std::fs::write(&src, &data).unwrap();
        let err = compress_to_file(&src, &dir.path().join("core.1.zst"), 100_000).unwrap_err();
        assert!(err.to_string().contains("maxBytes"), "{err}");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("core.1")]);
    }

    #[test]
    fn chunks_never_straddle_a_part_boundary() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        let mut w = ChunkSender::new(tx, 300_000);
        let data = vec![7u8; 1_000_000];
        w.write_all(&data[..12_345]).unwrap();
        w.write_all(&data[12_345..]).unwrap();
        w.flush().unwrap();
        drop(w);
        let mut offset = 0u64;
        let mut total = 0;
        while let Ok(c) = rx.try_recv() {
            assert!(c.len() <= CHUNK);
            assert_eq!(offset / 300_000, (offset + c.len() as u64 - 1) / 300_000, "chunk at {offset} straddles");
            offset += c.len() as u64;
            total += c.len();
        }
        assert_eq!(total, data.len());
    }
}
