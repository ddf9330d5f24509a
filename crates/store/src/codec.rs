//! The stored-artifact format, the one implementation every writer and reader uses: a file is
//! stored zstd-compressed (`<file>.zst`) and described by the size and SHA-256 of the *stored*
//! bytes (docs/operator.md). Writers: the sidecar (volume, claim, S3 upload). Readers: the
//! operator's tests, `dumpwatch analyze` (downloads, `file://`).
//!
//! Blocking `std::io` with bounded memory (a 1 MiB buffer plus zstd's window): async callers run
//! these in `spawn_blocking`, never on an event loop (a multi-GB dump takes seconds).

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use ring::digest::{Context, SHA256};

use crate::Error;
use crate::sigv4::hex;

/// zstd level 1: about 3x faster than zstd's default 3 and still shrinks a core dump 5-10x. The
/// writer is the sidecar, beside the app: it must not take the app's CPU.
pub const LEVEL: i32 = 1;
/// Buffer of the file readers and writers here.
const BUFFER: usize = 1 << 20;

/// The stored (compressed) bytes: their count and SHA-256, plus how many bytes went in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compressed {
    pub size: u64,
    pub sha256: String,
    pub raw_size: u64,
}

/// Compresses `reader` into `out`, hashing what is written; `out` is flushed.
pub fn compress_and_hash<W: Write>(mut reader: impl Read, out: W) -> Result<(W, Compressed), Error> {
    let mut enc = zstd::stream::write::Encoder::new(Hashing::new(out), LEVEL).map_err(io("starting zstd"))?;
    let raw_size = io::copy(&mut reader, &mut enc).map_err(io("compressing"))?;
    let mut hashing = enc.finish().map_err(io("finishing the zstd frame"))?;
    // `finish` writes the frame's end but does not flush: the last chunk would stay behind.
    hashing.inner.flush().map_err(io("flushing the compressed output"))?;
    let (out, size, sha256) = hashing.into_parts();
    Ok((out, Compressed { size, sha256, raw_size }))
}

/// Size and SHA-256 of `src` once compressed, without keeping the compressed bytes (to ask for
/// upload URLs before compressing again into the upload).
pub fn measure(src: &Path) -> Result<Compressed, Error> {
    let input = fs::File::open(src).map_err(io_path("opening", src))?;
    compress_and_hash(io::BufReader::with_capacity(BUFFER, input), io::sink()).map(|(_, c)| c)
}

/// Compresses the file `src` into `dst` (usually `<src>.zst`), never letting the stored bytes
/// pass `max_bytes` (a budget: `u64::MAX` for none). `dst` appears only once complete and synced:
/// it is written as a hidden `.<name>.partial` beside it and renamed; on failure nothing is left.
pub fn compress_file(src: &Path, dst: &Path, max_bytes: u64) -> Result<Compressed, Error> {
    let input = fs::File::open(src).map_err(io_path("opening", src))?;
    let partial = partial_path(dst);
    let result = (|| {
        let file = fs::File::create(&partial).map_err(io_path("creating", &partial))?;
        let out = Budget { inner: io::BufWriter::with_capacity(BUFFER, file), left: max_bytes };
        let (out, c) = compress_and_hash(io::BufReader::with_capacity(BUFFER, input), out)?;
        let file = out
            .inner
            .into_inner()
            .map_err(|e| Error::Io { what: format!("writing {}", partial.display()), source: e.into_error() })?;
        file.sync_all().map_err(io_path("syncing", &partial))?;
        fs::rename(&partial, dst).map_err(io_path("renaming into", dst))?;
        Ok(c)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&partial);
    }
    result
}

/// Checks and undoes the format while the stored bytes are pushed through it (a download arrives
/// in chunks): hashes every byte written, decompresses into the output when the artifact is
/// `.zst`, and at [`Verifier::finish`] compares the hash. A stream that does not decode is
/// reported as a checksum mismatch when the hash does not match either: that is the cause.
pub struct Verifier<W: Write> {
    hash: Context,
    len: u64,
    out: Option<Output<W>>,
    /// The first decoding or writing error; the bytes after it are only hashed.
    failed: Option<io::Error>,
}

enum Output<W: Write> {
    Plain(W),
    Zstd(Unzstd<W>),
}

/// zstd's streaming decoder driven by hand, because it says when a frame ends: a stream cut
/// after a whole block decodes without error, and only the missing end of frame shows it.
struct Unzstd<W> {
    raw: zstd::stream::raw::Decoder<'static>,
    out: W,
    buf: Vec<u8>,
    /// The input so far ends on a frame's end (false before any input: empty is not zstd).
    at_frame_end: bool,
}

impl<W: Write> Unzstd<W> {
    fn new(out: W) -> io::Result<Self> {
        Ok(Self { raw: zstd::stream::raw::Decoder::new()?, out, buf: vec![0; 128 * 1024], at_frame_end: false })
    }

    /// Decodes `input` (empty: only what the decoder still holds) into the output.
    fn feed(&mut self, input: &[u8]) -> io::Result<()> {
        use zstd::stream::raw::{InBuffer, Operation, OutBuffer};
        let mut inb = InBuffer::around(input);
        loop {
            let consumed = inb.pos();
            let mut outb = OutBuffer::around(&mut self.buf[..]);
            let hint = self.raw.run(&mut inb, &mut outb)?;
            let (written, full) = (outb.pos(), outb.pos() == outb.capacity());
            self.out.write_all(&self.buf[..written])?;
            // A call that neither read nor wrote answers for the next frame: keep what we know.
            if inb.pos() > consumed || written > 0 {
                self.at_frame_end = hint == 0;
            }
            // Done when the input is used up and the decoder had no more output than room.
            if inb.pos() == input.len() && !full {
                return Ok(());
            }
        }
    }

    fn finish(mut self) -> io::Result<W> {
        self.feed(&[])?;
        if !self.at_frame_end {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the zstd stream ends inside a frame"));
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> Verifier<W> {
    /// `compressed`: the stored bytes are zstd (decompress into `out`); else copy them as they are.
    pub fn new(out: W, compressed: bool) -> Result<Self, Error> {
        let out =
            if compressed { Output::Zstd(Unzstd::new(out).map_err(io("starting zstd"))?) } else { Output::Plain(out) };
        Ok(Self { hash: Context::new(&SHA256), len: 0, out: Some(out), failed: None })
    }

    /// How many stored bytes went through so far.
    pub fn stored_len(&self) -> u64 {
        self.len
    }

    /// Checks the stored bytes against `expected_sha256` (any case; `None`: only decode) and
    /// flushes the output. `out` received untrusted bytes before this said yes: on an error,
    /// discard it. Returns the output and the stored bytes' size and SHA-256.
    pub fn finish(mut self, expected_sha256: Option<&str>) -> Result<(W, u64, String), Error> {
        let actual = hex(self.hash.clone().finish());
        if let Some(expected) = expected_sha256
            && !expected.eq_ignore_ascii_case(&actual)
        {
            return Err(Error::ChecksumMismatch { expected: expected.to_string(), actual });
        }
        if let Some(e) = self.failed.take() {
            return Err(Error::Io { what: "decompressing".into(), source: e });
        }
        let out = match self.out.take().expect("only finish takes the output") {
            Output::Plain(mut w) => {
                w.flush().map_err(io("flushing the output"))?;
                w
            }
            Output::Zstd(d) => d.finish().map_err(io("decompressing"))?,
        };
        Ok((out, self.len, actual))
    }
}

impl<W: Write> Write for Verifier<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.hash.update(buf);
        self.len += buf.len() as u64;
        if self.failed.is_none() {
            let written = match self.out.as_mut().expect("only finish takes the output") {
                Output::Plain(w) => w.write_all(buf),
                Output::Zstd(d) => d.feed(buf),
            };
            if let Err(e) = written {
                self.failed = Some(e);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// [`Verifier`] over a reader: decompresses `reader` into `out` and fails with
/// [`Error::ChecksumMismatch`] when the stored bytes are not `expected_sha256`. `out` has then
/// received untrusted bytes: discard it ([`verify_and_decompress_file`] does). Returns the bytes
/// of `reader`.
pub fn verify_and_decompress(mut reader: impl Read, expected_sha256: &str, out: impl Write) -> Result<u64, Error> {
    let mut verifier = Verifier::new(out, true)?;
    io::copy(&mut reader, &mut verifier).map_err(io("reading the stored bytes"))?;
    verifier.finish(Some(expected_sha256)).map(|(_, n, _)| n)
}

/// [`verify_and_decompress`] from file to file; `dst` exists only if the checksum matched.
pub fn verify_and_decompress_file(src: &Path, expected_sha256: &str, dst: &Path) -> Result<u64, Error> {
    let input = io::BufReader::with_capacity(BUFFER, fs::File::open(src).map_err(io_path("opening", src))?);
    let partial = partial_path(dst);
    let result = (|| {
        let out =
            io::BufWriter::with_capacity(BUFFER, fs::File::create(&partial).map_err(io_path("creating", &partial))?);
        let n = verify_and_decompress(input, expected_sha256, out)?;
        fs::rename(&partial, dst).map_err(io_path("renaming into", dst))?;
        Ok(n)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&partial);
    }
    result
}

/// Size and SHA-256 (lowercase hex) of a file as it is (a stored artifact, or a capture's file
/// for its manifest).
pub fn sha256_file(path: &Path) -> Result<(u64, String), Error> {
    let file = fs::File::open(path).map_err(io_path("opening", path))?;
    let mut h = Hashing::new(io::BufReader::with_capacity(BUFFER, file));
    io::copy(&mut h, &mut io::sink()).map_err(io_path("reading", path))?;
    let (_, n, sha) = h.into_parts();
    Ok((n, sha))
}

/// `.<name>.partial` beside `dst`: hidden, so nobody takes a half file for an artifact.
pub fn partial_path(dst: &Path) -> PathBuf {
    let name = dst.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    dst.with_file_name(format!(".{name}.partial"))
}

/// Counts and hashes (SHA-256) the bytes passing through, in either direction.
pub struct Hashing<T> {
    inner: T,
    ctx: Context,
    count: u64,
}

impl<T> Hashing<T> {
    pub fn new(inner: T) -> Self {
        Self { inner, ctx: Context::new(&SHA256), count: 0 }
    }

    /// The inner reader or writer, the byte count and the lowercase-hex SHA-256.
    pub fn into_parts(self) -> (T, u64, String) {
        (self.inner, self.count, hex(self.ctx.finish()))
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.ctx.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.ctx.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// A writer that refuses to pass a byte budget (`StorageFull`, so the caller's error says why).
struct Budget<W> {
    inner: W,
    left: u64,
}

impl<W: Write> Write for Budget<W> {
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

fn io(what: &'static str) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Io { what: what.to_string(), source }
}

fn io_path(what: &'static str, p: &Path) -> impl FnOnce(io::Error) -> Error {
    let what = format!("{what} {}", p.display());
    move |source| Error::Io { what, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        (0..200_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect()
    }

    fn noise(len: usize) -> Vec<u8> {
        let mut x = 0x2545F4914F6CDD1Du64;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn round_trip_checks_the_stored_bytes() {
        let (stored, c) = compress_and_hash(&sample()[..], Vec::new()).unwrap();
        assert_eq!((c.size, c.raw_size), (stored.len() as u64, 800_000));
        assert!(c.size < c.raw_size / 4, "compressible data shrinks: {c:?}");
        assert_eq!(c.sha256, hex(ring::digest::digest(&SHA256, &stored)));
        let mut back = Vec::new();
        assert_eq!(verify_and_decompress(&stored[..], &c.sha256, &mut back).unwrap(), c.size);
        assert_eq!(back, sample());
    }

    #[test]
    fn incompressible_data_round_trips_in_any_chunking() {
        // 12 MiB: raw blocks that exactly fill the output buffer, so a last call reads nothing.
        let data = noise(12 << 20);
        let (stored, c) = compress_and_hash(&data[..], Vec::new()).unwrap();
        assert!(c.size > data.len() as u64, "noise does not shrink");
        let mut back = Vec::new();
        verify_and_decompress(&stored[..], &c.sha256, &mut back).unwrap();
        assert!(back == data);
        for chunk in [4096, 131_072, 1 << 20] {
            let mut v = Verifier::new(Vec::new(), true).unwrap();
            stored.chunks(chunk).for_each(|c| v.write_all(c).unwrap());
            assert!(v.finish(Some(&c.sha256)).unwrap().0 == data, "chunks of {chunk}");
        }
    }

    /// Mixed data (runs and noise, as in a core dump) in odd chunkings decodes to exactly what
    /// zstd's own one-shot decoder gives.
    #[test]
    fn the_verifier_decodes_what_zstd_itself_decodes() {
        let mut data = Vec::new();
        for i in 0..64u32 {
            if i % 4 == 0 {
                data.extend(noise(50_000 + i as usize * 997));
            } else {
                data.extend(std::iter::repeat_n(i.to_le_bytes(), 30_000 + i as usize * 131).flatten());
            }
        }
        let (stored, c) = compress_and_hash(&data[..], Vec::new()).unwrap();
        assert!(zstd::decode_all(&stored[..]).unwrap() == data);
        for chunk in [1000, 65_537, 131_072, 400_000] {
            let mut v = Verifier::new(Vec::new(), true).unwrap();
            stored.chunks(chunk).for_each(|c| v.write_all(c).unwrap());
            assert!(v.finish(Some(&c.sha256)).unwrap().0 == data, "chunks of {chunk}");
        }
    }

    #[test]
    fn a_flipped_byte_is_a_checksum_mismatch() {
        let (mut stored, c) = compress_and_hash(&sample()[..], Vec::new()).unwrap();
        let mid = stored.len() / 2;
        stored[mid] ^= 1;
        let err = verify_and_decompress(&stored[..], &c.sha256, io::sink()).unwrap_err();
        assert!(matches!(err, Error::ChecksumMismatch { .. }), "{err:?}");
        // Garbage that is not zstd at all: still reported as the checksum, not a panic.
        let err = verify_and_decompress(&b"not zstd"[..], &c.sha256, io::sink()).unwrap_err();
        assert!(matches!(err, Error::ChecksumMismatch { .. }), "{err:?}");
    }

    #[test]
    fn a_truncated_stream_with_the_right_hash_is_a_decoding_error() {
        let (stored, _) = compress_and_hash(&sample()[..], Vec::new()).unwrap();
        let cut = &stored[..stored.len() - 3];
        let sha = hex(ring::digest::digest(&SHA256, cut));
        let mut v = Verifier::new(Vec::new(), true).unwrap();
        v.write_all(cut).unwrap();
        let err = v.finish(Some(&sha)).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
    }

    #[test]
    fn the_verifier_takes_chunks_and_plain_files_too() {
        let (stored, c) = compress_and_hash(&sample()[..], Vec::new()).unwrap();
        let mut v = Verifier::new(Vec::new(), true).unwrap();
        for chunk in stored.chunks(7777) {
            v.write_all(chunk).unwrap();
        }
        let (out, n, sha) = v.finish(Some(&c.sha256.to_uppercase())).unwrap();
        assert_eq!((out, n, sha), (sample(), c.size, c.sha256.clone()));
        let mut plain = Verifier::new(Vec::new(), false).unwrap();
        plain.write_all(b"[]").unwrap();
        let (out, _, sha) = plain.finish(None).unwrap();
        assert_eq!(
            (out.as_slice(), sha.as_str()),
            (&b"[]"[..], "4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945")
        );
    }

    #[test]
    fn files_appear_only_when_complete_and_verified() {
        let dir = tempfile::tempdir().unwrap();
        let (src, zst, out) = (dir.path().join("core.1"), dir.path().join("core.1.zst"), dir.path().join("back"));
        fs::write(&src, sample()).unwrap();
        let c = compress_file(&src, &zst, u64::MAX).unwrap();
        assert_eq!(measure(&src).unwrap(), c, "measuring and compressing agree");
        assert_eq!(sha256_file(&zst).unwrap(), (c.size, c.sha256.clone()));
        assert!(verify_and_decompress_file(&zst, &"0".repeat(64), &out).is_err());
        assert!(!out.exists() && !dir.path().join(".back.partial").exists());
        verify_and_decompress_file(&zst, &c.sha256, &out).unwrap();
        assert_eq!(fs::read(&out).unwrap(), sample());
    }

    #[test]
    fn a_compressed_file_over_the_budget_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("core.1");
        fs::write(&src, noise(1_000_000)).unwrap();
        let err = compress_file(&src, &dir.path().join("core.1.zst"), 100_000).unwrap_err();
        assert!(err.to_string().contains("maxBytes"), "{err}");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("core.1")]);
    }
}
