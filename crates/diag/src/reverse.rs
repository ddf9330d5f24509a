//! Listen mode: runtimes connect to us.
//!
//! With `DOTNET_DiagnosticPorts=/shared/dumpwatch.sock` a .NET 5+ runtime connects to our
//! socket, sends a 34-byte `ADVR_V1` advertise (instance cookie and pid) and waits for one
//! command on that connection; after each command it connects again. This needs no shared PID
//! namespace and no privilege, so it works for non-root and distroless apps.
//!
//! [`ReverseServer`] accepts connections, reads the advertise, and routes each connection to the
//! [`ReverseRuntime`] it came from (by cookie). A runtime seen for the first time is announced
//! on [`ReverseServer::next_runtime`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

use crate::Error;
use crate::protocol::{self, ADVERTISE_LEN};

/// One runtime that advertised itself on our socket.
#[derive(Debug)]
pub struct ReverseRuntime {
    cookie: [u8; 16],
    pid: u64,
    conns_tx: mpsc::Sender<UnixStream>,
    conns_rx: tokio::sync::Mutex<mpsc::Receiver<UnixStream>>,
    last_seen: Mutex<Instant>,
}

impl ReverseRuntime {
    /// The pid the runtime reported (inside its own PID namespace).
    pub fn pid(&self) -> u64 {
        self.pid
    }

    pub fn cookie(&self) -> [u8; 16] {
        self.cookie
    }

    /// When the runtime last connected: a runtime that stopped reconnecting is gone.
    pub fn last_seen(&self) -> Instant {
        *self.last_seen.lock().expect("poisoned")
    }

    /// The next connection the runtime made, waiting for it if none is queued. A queued
    /// connection whose peer has gone is skipped.
    pub async fn next_connection(&self) -> Result<UnixStream, Error> {
        let mut rx = self.conns_rx.lock().await;
        loop {
            let conn = rx.recv().await.ok_or_else(|| Error::Disconnected("a reverse connection arrived".into()))?;
            // A closed peer shows up as readable with 0 bytes; the runtime never sends
            // anything after the advertise until we speak.
            let mut probe = [0u8; 1];
            match conn.try_read(&mut probe) {
                Ok(0) => continue,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(conn),
                Err(_) => continue,
            }
        }
    }
}

pub struct ReverseServer {
    path: PathBuf,
    new_rx: mpsc::Receiver<Arc<ReverseRuntime>>,
    task: tokio::task::JoinHandle<()>,
}

impl ReverseServer {
    /// Bind the listen socket (replacing a stale one) and start accepting.
    pub fn bind(path: &Path) -> Result<Self, Error> {
        if path.exists() {
            std::fs::remove_file(path).map_err(Error::io(format!("removing stale socket {}", path.display())))?;
        }
        let listener = UnixListener::bind(path).map_err(Error::io(format!("listening on {}", path.display())))?;
        let (new_tx, new_rx) = mpsc::channel(64);
        let task = tokio::spawn(accept_loop(listener, new_tx));
        Ok(Self { path: path.to_path_buf(), new_rx, task })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next runtime seen for the first time; `None` once the server stopped.
    pub async fn next_runtime(&mut self) -> Option<Arc<ReverseRuntime>> {
        self.new_rx.recv().await
    }
}

impl Drop for ReverseServer {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn accept_loop(listener: UnixListener, new_tx: mpsc::Sender<Arc<ReverseRuntime>>) {
    let known: Arc<Mutex<HashMap<[u8; 16], Arc<ReverseRuntime>>>> = Arc::default();
    loop {
        let Ok((conn, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let known = known.clone();
        let new_tx = new_tx.clone();
        tokio::spawn(async move {
            match read_advertise(conn).await {
                Ok((adv, conn)) => route(&known, &new_tx, adv, conn).await,
                Err(e) => tracing::warn!(error = %e, "dropping a connection on the listen socket"),
            }
        });
    }
}

async fn read_advertise(mut conn: UnixStream) -> Result<(protocol::Advertise, UnixStream), Error> {
    let mut buf = [0u8; ADVERTISE_LEN];
    let read = tokio::time::timeout(Duration::from_secs(5), conn.read_exact(&mut buf)).await;
    match read {
        Ok(Ok(_)) => Ok((protocol::parse_advertise(&buf)?, conn)),
        Ok(Err(e)) => Err(Error::io("reading the ADVR_V1 advertise")(e)),
        Err(_) => Err(Error::Timeout { what: "the ADVR_V1 advertise".into(), seconds: 5.0 }),
    }
}

async fn route(
    known: &Mutex<HashMap<[u8; 16], Arc<ReverseRuntime>>>,
    new_tx: &mpsc::Sender<Arc<ReverseRuntime>>,
    adv: protocol::Advertise,
    conn: UnixStream,
) {
    let (rt, is_new) = {
        let mut map = known.lock().expect("poisoned");
        match map.get(&adv.runtime_cookie) {
            Some(rt) => (rt.clone(), false),
            None => {
                forget_abandoned(&mut map);
                let (tx, rx) = mpsc::channel(8);
                let rt = Arc::new(ReverseRuntime {
                    cookie: adv.runtime_cookie,
                    pid: adv.pid,
                    conns_tx: tx,
                    conns_rx: tokio::sync::Mutex::new(rx),
                    last_seen: Mutex::new(Instant::now()),
                });
                map.insert(adv.runtime_cookie, rt.clone());
                (rt, true)
            }
        }
    };
    *rt.last_seen.lock().expect("poisoned") = Instant::now();
    // The runtime keeps one connection waiting; if we have not used the queued ones, drop the
    // newest rather than grow without bound.
    let _ = rt.conns_tx.try_send(conn);
    if is_new {
        tracing::info!(pid = adv.pid, cookie = %protocol::format_guid(&adv.runtime_cookie), "runtime connected to the listen socket");
        let _ = new_tx.send(rt).await;
    }
}

/// A runtime nobody holds any more (the map's is the only reference) that has not connected
/// for this long has exited: forget it, so a listen socket that sees many short-lived
/// processes does not grow without bound. A live idle runtime keeps its one connection waiting
/// and does not reconnect, so the age alone would be wrong for runtimes still in use.
const FORGET_AFTER: Duration = Duration::from_secs(600);

fn forget_abandoned(map: &mut HashMap<[u8; 16], Arc<ReverseRuntime>>) {
    map.retain(|_, rt| Arc::strong_count(rt) > 1 || rt.last_seen().elapsed() < FORGET_AFTER);
}
