//! A running EventPipe session: the nettrace stream of one CollectTracing command, decoded
//! as it arrives. Memory stays bounded by one block; nothing buffers the whole trace.

use std::io::Write;
use std::time::Duration;

use nettrace::{Event, Reader, ReaderStats, Step, TraceInfo};
use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;

use crate::Error;
use crate::client::DiagnosticsClient;
use crate::protocol::SessionConfig;

/// Called for every event; the trace header (pointer size, clock) comes along because typed
/// decoding needs it.
pub type EventSink<'s> = dyn FnMut(&TraceInfo, &Event<'_>) + 's;

pub struct TraceSession {
    client: DiagnosticsClient,
    id: u64,
    stream: UnixStream,
    reader: Reader,
    chunk: Vec<u8>,
    /// Raw bytes are copied here as they arrive (the `.nettrace` file a user keeps).
    tee: Option<Box<dyn Write + Send>>,
    stop_sent: bool,
    ended: bool,
    bytes: u64,
}

impl TraceSession {
    pub async fn start(client: &DiagnosticsClient, config: &SessionConfig) -> Result<Self, Error> {
        let (id, stream) = client.collect_tracing(config).await?;
        Ok(Self {
            client: client.clone(),
            id,
            stream,
            reader: Reader::new(),
            chunk: vec![0u8; 256 * 1024],
            tee: None,
            stop_sent: false,
            ended: false,
            bytes: 0,
        })
    }

    /// Keep a copy of the raw nettrace stream.
    pub fn tee_to(&mut self, w: Box<dyn Write + Send>) {
        self.tee = Some(w);
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn trace_info(&self) -> Option<&TraceInfo> {
        self.reader.trace_info()
    }

    pub fn stats(&self) -> ReaderStats {
        self.reader.stats()
    }

    /// Raw bytes received so far.
    pub fn bytes_received(&self) -> u64 {
        self.bytes
    }

    pub fn has_ended(&self) -> bool {
        self.ended
    }

    /// Wait for more of the stream and hand every complete event to `sink`. Returns `false`
    /// once the stream has ended. Cancel-safe at the await point (no bytes are lost: a read
    /// that did not complete consumed nothing).
    pub async fn pump(&mut self, sink: &mut EventSink<'_>) -> Result<bool, Error> {
        if self.ended {
            return Ok(false);
        }
        let n = self.stream.read(&mut self.chunk).await.map_err(Error::io("reading the EventPipe stream"))?;
        if n == 0 {
            self.reader.finish_input();
        } else {
            self.bytes += n as u64;
            if let Some(tee) = self.tee.as_mut() {
                tee.write_all(&self.chunk[..n]).map_err(Error::io("saving the raw trace"))?;
            }
            self.reader.feed(&self.chunk[..n]);
        }
        self.decode_available(sink)?;
        if n == 0 && !self.ended {
            // finish_input makes the reader report truncation; reaching here means it did not.
            self.ended = true;
        }
        Ok(!self.ended)
    }

    fn decode_available(&mut self, sink: &mut EventSink<'_>) -> Result<(), Error> {
        loop {
            let info = self.reader.trace_info().cloned();
            let step = match &info {
                Some(info) => self.reader.next_block(&mut |ev: &Event<'_>| sink(info, ev))?,
                // Events cannot precede the trace header; a block before it is parsed without
                // a sink and the reader reports the malformed order itself.
                None => self.reader.next_block(&mut |_: &Event<'_>| {})?,
            };
            match step {
                Step::NeedData => return Ok(()),
                Step::Block => continue,
                Step::End => {
                    self.ended = true;
                    if let Some(tee) = self.tee.as_mut() {
                        tee.flush().map_err(Error::io("saving the raw trace"))?;
                    }
                    return Ok(());
                }
            }
        }
    }

    /// Reads events for `duration` or until the stream ends, whichever comes first: a sampler
    /// session is read while it runs so the runtime's buffers never fill.
    pub async fn pump_for(&mut self, sink: &mut EventSink<'_>, duration: Duration) -> Result<(), Error> {
        let pumping = async {
            while self.pump(sink).await? {}
            Ok::<_, Error>(())
        };
        tokio::time::timeout(duration, pumping).await.unwrap_or(Ok(()))
    }

    /// Ask the runtime to end the session (once); the stream then ends by itself.
    pub async fn stop(&mut self) -> Result<(), Error> {
        if self.stop_sent || self.ended {
            return Ok(());
        }
        self.stop_sent = true;
        self.client.stop_tracing(self.id).await
    }

    /// Stop and read the rest of the stream (rundown included), giving up after `timeout`.
    ///
    /// The stop request and the draining run together: with rundown on, the runtime writes
    /// the rundown into this stream before it answers StopTracing, so waiting for the answer
    /// without reading would deadlock as soon as the socket buffer fills.
    pub async fn finish(&mut self, sink: &mut EventSink<'_>, timeout: Duration) -> Result<(), Error> {
        let needs_stop = !(self.stop_sent || self.ended);
        self.stop_sent = true;
        let client = self.client.clone();
        let id = self.id;
        let stop = async move { if needs_stop { client.stop_tracing(id).await } else { Ok(()) } };
        let drain = async {
            while self.pump(sink).await? {}
            Ok::<_, Error>(())
        };
        let both = async { tokio::try_join!(stop, drain).map(|_| ()) };
        tokio::time::timeout(timeout, both).await.map_err(|_| Error::Timeout {
            what: "the end of the EventPipe stream after stopping".into(),
            seconds: timeout.as_secs_f64(),
        })?
    }
}

/// Convert an event timestamp to nanoseconds on the trace's clock.
pub fn ticks_to_ns(info: &TraceInfo, ticks: i64) -> i64 {
    if info.qpc_frequency == 1_000_000_000 || info.qpc_frequency <= 0 {
        return ticks;
    }
    ((ticks as i128) * 1_000_000_000 / info.qpc_frequency as i128) as i64
}
