//! The one error type of the `analysis` crate.

/// Which of the two GC heap-dump event streams an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HeapStream {
    /// `GCBulkNode` events.
    Nodes,
    /// `GCBulkEdge` events.
    Edges,
}

impl std::fmt::Display for HeapStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HeapStream::Nodes => "GCBulkNode",
            HeapStream::Edges => "GCBulkEdge",
        })
    }
}

/// Everything that can go wrong in the analyses. Inputs that are merely noisy (stale
/// contention events, edges to unknown objects) are counted, not turned into errors:
/// an error means the input cannot be trusted as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// More edges arrived than the nodes announced: the two streams do not belong together
    /// or events were lost, so no node's edge list can be trusted.
    #[error("heap snapshot has {left_over} edges left over after the last node")]
    EdgesLeftOver {
        /// Edges that no node claimed.
        left_over: u64,
    },
    /// The nodes announced more edges than arrived (e.g. a `GCBulkEdge` event was dropped).
    #[error("heap snapshot nodes announce {announced} edges but only {received} arrived")]
    EdgesMissing {
        /// Sum of the nodes' `EdgeCount`.
        announced: u64,
        /// Edges received.
        received: u64,
    },
    /// A bulk event's `Index` is not the next one of its stream: an event was lost or reordered.
    #[error("{stream} event index {got} out of sequence, expected {expected}")]
    EventOutOfSequence {
        /// The stream the event belongs to.
        stream: HeapStream,
        /// The index that should have come next.
        expected: u32,
        /// The index that came.
        got: u32,
    },
    /// The snapshot exceeds the compact graph's 32-bit node or edge indexes.
    #[error("heap snapshot too large: more than {limit} {what}")]
    TooLarge {
        /// "nodes" or "edges".
        what: &'static str,
        /// The limit exceeded.
        limit: u64,
    },
    /// A configuration value makes no sense (e.g. a zero-sized cap).
    #[error("invalid configuration: {0}")]
    InvalidConfig(&'static str),
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
