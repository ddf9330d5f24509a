//! The one place that maps the core file into memory.
#![allow(unsafe_code)]

use std::fs::File;
use std::path::Path;

use memmap2::Mmap;

use crate::error::{Error, Result};

/// Maps `path` read-only. Cores are written once and never modified while analyzed, so the
/// usual mmap caveat (another process truncating the file under us) is accepted: the
/// analysis runs on a copy that the capture renamed into place only when complete.
pub(crate) fn map(path: &Path) -> Result<Mmap> {
    let file = File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    // SAFETY: read-only private mapping of a regular file; see the function comment for the
    // truncation caveat. The Mmap owns the mapping and unmaps it on drop.
    unsafe { Mmap::map(&file) }.map_err(|e| Error::io(format!("mapping {}", path.display()), e))
}
