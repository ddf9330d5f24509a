//! Keeps the worker's protocol channel clean: the DAC (and its PAL) may print to stdout, so
//! the worker moves the real stdout to a private descriptor and points fd 1 at stderr.
#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::FromRawFd;

use crate::error::{Error, Result};

/// Returns the original stdout as a `File`; afterwards fd 1 writes to stderr.
pub(crate) fn take_stdout() -> Result<File> {
    // SAFETY: dup/dup2 on the process' own standard descriptors; the new descriptor is owned
    // by the returned File and nothing else closes it.
    unsafe {
        let fd = libc::dup(1);
        if fd < 0 {
            return Err(Error::io("duplicating stdout", std::io::Error::last_os_error()));
        }
        if libc::dup2(2, 1) < 0 {
            return Err(Error::io("redirecting stdout", std::io::Error::last_os_error()));
        }
        Ok(File::from_raw_fd(fd))
    }
}
