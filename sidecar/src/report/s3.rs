//! S3 storage through the operator: ask for upload URLs (sizes of the compressed files), then
//! compress each file again straight into its presigned PUT, or into the parts of a multipart
//! upload that the operator completes. The app's disk never holds a compressed copy: each file
//! is compressed twice (once to learn size and checksum, once into the upload) instead.

use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;

use api::Artifact;
use api::wire::{CompleteRequest, FileSize, MultipartUpload, UploadRequest, UploadTarget};
use bytes::Bytes;
use tokio::sync::mpsc;

use super::{Planned, artifact, blocking};
use crate::Error;
use crate::operator_client::OperatorClient;

/// Size of the chunks handed to an upload body.
const CHUNK: usize = 256 * 1024;

/// Store `planned` through the operator's upload URLs; the artifacts to report.
pub async fn upload_files(
    client: &OperatorClient,
    http: &store::HttpClient,
    capture: &str,
    planned: &[Planned],
) -> Result<Vec<Artifact>, Error> {
    // A finding alone (a growth verdict) has nothing to store; the operator refuses a request
    // for no URLs.
    if planned.is_empty() {
        return Ok(Vec::new());
    }
    let mut measured = Vec::new();
    for p in planned {
        let src = p.source.clone();
        let what = format!("compressing {}", p.source.display());
        measured.push(blocking(move || store::codec::measure(&src)).await?.map_err(Error::store(what))?);
    }
    let files = planned.iter().zip(&measured).map(|(p, c)| FileSize { name: p.name.clone(), size: c.size }).collect();
    let answer = client.uploads(&UploadRequest { capture: capture.to_string(), files }).await?;
    let mut out = Vec::new();
    for (p, stored) in planned.iter().zip(measured) {
        let target = answer.files.iter().find(|t| t.name == p.name).ok_or_else(|| Error::OperatorAnswer {
            what: "asking for upload URLs".into(),
            detail: format!("no upload URL for {}", p.name),
        })?;
        put_file(client, http, capture, &p.source, target, &stored).await?;
        out.push(artifact(p, target.uri.clone(), &stored));
    }
    Ok(out)
}

/// Compress `src` again straight into the upload (single PUT or parts); the bytes must come
/// out as measured, or the upload is refused.
async fn put_file(
    client: &OperatorClient,
    http: &store::HttpClient,
    capture: &str,
    src: &Path,
    target: &UploadTarget,
    measured: &store::Compressed,
) -> Result<(), Error> {
    let part_size = target.multipart.as_ref().map_or(u64::MAX, |m| m.part_size);
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let src_owned = src.to_path_buf();
    let producer = tokio::task::spawn_blocking(move || {
        let input = std::fs::File::open(&src_owned)
            .map_err(|e| store::Error::Io { what: format!("opening {}", src_owned.display()), source: e })?;
        // compress_and_hash flushes the sender: the last chunk goes too.
        let input = io::BufReader::with_capacity(CHUNK, input);
        store::compress_and_hash(input, ChunkSender::new(tx, part_size)).map(|(_, c)| c)
    });
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let sent = match (&target.url, &target.multipart) {
        (Some(url), None) => put(http, url, rx.clone(), measured.size, &target.name).await.map(drop),
        (None, Some(m)) => {
            let r = upload_parts(client, http, capture, target, m, rx.clone(), measured.size).await;
            if r.is_err() {
                // Empty ETags abort: S3 would otherwise keep the parts (and bill them).
                let abort = CompleteRequest {
                    capture: capture.to_string(),
                    name: target.name.clone(),
                    upload_id: m.upload_id.clone(),
                    etags: Vec::new(),
                };
                let _ = client.complete(&abort).await;
            }
            r
        }
        _ => Err(Error::OperatorAnswer {
            what: "asking for upload URLs".into(),
            detail: format!("the upload target of {} needs exactly one of url and multipart", target.name),
        }),
    };
    // Stop the compressor if the upload gave up early.
    drop(rx);
    let produced = producer.await.map_err(|e| Error::Io { what: "compressing".into(), source: io::Error::other(e) })?;
    sent?;
    let c = produced.map_err(Error::store(format!("compressing {}", src.display())))?;
    if c.size != measured.size || c.sha256 != measured.sha256 {
        return Err(Error::Changed { file: src.to_path_buf(), size: c.size, sha256: c.sha256 });
    }
    Ok(())
}

/// The parts of a multipart upload, in order, then `/uploads/complete` with their ETags.
async fn upload_parts(
    client: &OperatorClient,
    http: &store::HttpClient,
    capture: &str,
    target: &UploadTarget,
    m: &MultipartUpload,
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Bytes>>>,
    size: u64,
) -> Result<(), Error> {
    let broken = |detail: String| Error::OperatorAnswer { what: "asking for upload URLs".into(), detail };
    let mut etags = Vec::new();
    let mut left = size;
    for (i, url) in m.parts.iter().enumerate() {
        if left == 0 {
            break;
        }
        let n = left.min(m.part_size);
        etags.push(put(http, url, rx.clone(), n, &format!("{} part {}", target.name, i + 1)).await?);
        left -= n;
    }
    if left > 0 {
        return Err(broken(format!("{} needs more parts than the {} offered", target.name, m.parts.len())));
    }
    let req = CompleteRequest {
        capture: capture.to_string(),
        name: target.name.clone(),
        upload_id: m.upload_id.clone(),
        etags,
    };
    client.complete(&req).await
}

/// PUT exactly `len` bytes from the chunk stream (the URL signs that length); returns the ETag.
async fn put(
    http: &store::HttpClient,
    url: &str,
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Bytes>>>,
    len: u64,
    what: &str,
) -> Result<String, Error> {
    let body = futures_util::stream::unfold((rx, len), |(rx, left)| async move {
        if left == 0 {
            return None;
        }
        let chunk = rx.lock().await.recv().await;
        match chunk {
            Some(c) => {
                let left = left.saturating_sub(c.len() as u64);
                Some((Ok::<Bytes, io::Error>(c), (rx, left)))
            }
            None => Some((Err(io::Error::other("the compressor stopped early")), (rx, 0))),
        }
    });
    http.put_stream(url, len, reqwest::Body::wrap_stream(body)).await.map_err(Error::store(format!("uploading {what}")))
}

/// A `Write` that hands fixed-size chunks to an async consumer, never letting one chunk straddle
/// a part boundary (so each multipart part is exactly `part_size` bytes). Blocks when the
/// consumer is slower: memory stays at a few chunks.
pub struct ChunkSender {
    tx: mpsc::Sender<Bytes>,
    buf: Vec<u8>,
    part_size: u64,
    in_part: u64,
}

impl ChunkSender {
    pub fn new(tx: mpsc::Sender<Bytes>, part_size: u64) -> Self {
        Self { tx, buf: Vec::with_capacity(CHUNK), part_size: part_size.max(1), in_part: 0 }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_never_straddle_a_part_boundary() {
        let (tx, mut rx) = mpsc::channel(1024);
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
