//! The bridge to `libmscordaccore.so`. Only `sos` and `target` contain `unsafe` code; this
//! module re-exports their safe surface.

mod sos;
mod target;
mod types;

pub use sos::{Dac, RawFrame};
pub use types::{GenerationData, HandleData, StackRefData, SyncBlockData, ThreadData};
