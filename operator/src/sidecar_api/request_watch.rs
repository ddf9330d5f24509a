//! One watch of all `DumpSnapshot`s for every long poll of `/v1/sidecar/requests`: waiting
//! sidecars read a shared cache and wake on change, instead of each listing its namespace every
//! second (a hundred waiting sidecars would otherwise be a hundred LISTs per second).

use std::sync::Arc;

use api::DumpSnapshot;
use futures::StreamExt;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use tokio::sync::Notify;

pub struct RequestWatch {
    pub cache: reflector::Store<DumpSnapshot>,
    /// Notified on every change seen by the watch.
    pub changed: Arc<Notify>,
}

impl RequestWatch {
    /// Starts the watch (needs list/watch on `dumpsnapshots` in every namespace, which the
    /// controller needs too). It runs as long as the runtime does and re-lists after errors.
    pub fn start(client: kube::Client) -> Self {
        let (cache, writer) = reflector::store();
        let changed = Arc::new(Notify::new());
        let notify = changed.clone();
        let events =
            reflector(writer, watcher(kube::Api::<DumpSnapshot>::all(client), Default::default())).default_backoff();
        tokio::spawn(async move {
            let mut events = std::pin::pin!(events);
            while let Some(event) = events.next().await {
                if let Err(e) = event {
                    tracing::warn!(error = %e, "watching DumpSnapshots for on-demand requests");
                }
                notify.notify_waiters();
            }
        });
        Self { cache, changed }
    }
}
