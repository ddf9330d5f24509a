//! How the analysis' process asks the C allocator for memory.

/// Has the allocator map every block of 1 MiB or more on its own, so that the block goes back
/// to the system as soon as it is freed.
///
/// glibc otherwise raises its mmap threshold to the size of each large block freed (up to
/// 32 MiB) and serves later blocks below it from its arenas, which keep what is freed; with
/// several threads (the graph's walk in parts, the resolution of references, the holder
/// groups) every thread's arena kept its own. Measured on the heap shapes' dumps: the 20 M
/// heap's peak was 930 MiB without this and 868 MiB with it, a 2 M-object list's 154 and 118,
/// at the same time. Call it first thing in `main`, before any other thread exists.
pub fn unmap_large_blocks_when_freed() {
    #[cfg(target_env = "gnu")]
    #[allow(unsafe_code)]
    // SAFETY: mallopt only changes one of the allocator's settings; no other thread exists yet
    // to allocate meanwhile.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}
