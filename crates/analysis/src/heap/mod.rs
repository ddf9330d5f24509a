//! GC heap snapshots (placeholder while the module is built).
