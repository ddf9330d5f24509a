//! Contention events (keyword 0x4000): Monitor lock waits.

use super::RuntimeEvent;
use crate::Error;
use crate::cursor::Cursor;

/// ContentionStart: v1 `u8 flags, u16 clr`; v2 adds `ptr lock, ptr object, u64 owner tid`.
pub(super) fn start(p: &[u8], version: u32, ptr: u32) -> Result<RuntimeEvent<'_>, Error> {
    let mut c = Cursor::new(p, 0);
    if version < 2 {
        // Version 0 has no payload at all; version 1 has flags + ClrInstanceID.
        let flags = p.first().copied().unwrap_or(0);
        return Ok(RuntimeEvent::ContentionStart { flags, lock_id: None, object_id: None, owner_thread_id: None });
    }
    let flags = c.u8("ContentionStart flags")?;
    c.u16("ContentionStart ClrInstanceID")?;
    let lock_id = c.ptr(ptr, "ContentionStart LockID")?;
    let object_id = c.ptr(ptr, "ContentionStart AssociatedObjectID")?;
    let owner = c.u64("ContentionStart LockOwnerThreadID")?;
    Ok(RuntimeEvent::ContentionStart {
        flags,
        lock_id: Some(lock_id),
        object_id: Some(object_id),
        owner_thread_id: Some(owner),
    })
}

/// ContentionStop: v0 `u8 flags, u16 clr`; v1 adds `f64 DurationNs`.
pub(super) fn stop(p: &[u8], version: u32) -> Result<RuntimeEvent<'_>, Error> {
    let mut c = Cursor::new(p, 0);
    let flags = c.u8("ContentionStop flags")?;
    let duration_ns = if version >= 1 {
        c.u16("ContentionStop ClrInstanceID")?;
        Some(f64::from_le_bytes(c.array("ContentionStop DurationNs")?))
    } else {
        None
    };
    Ok(RuntimeEvent::ContentionStop { flags, duration_ns })
}

/// ContentionLockCreated: `ptr LockID, ptr AssociatedObjectID, u16 clr`.
pub(super) fn lock_created(p: &[u8], ptr: u32) -> Result<RuntimeEvent<'_>, Error> {
    let mut c = Cursor::new(p, 0);
    let lock_id = c.ptr(ptr, "ContentionLockCreated LockID")?;
    let object_id = c.ptr(ptr, "ContentionLockCreated AssociatedObjectID")?;
    Ok(RuntimeEvent::ContentionLockCreated { lock_id, object_id })
}
