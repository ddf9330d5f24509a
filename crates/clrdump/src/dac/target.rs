//! The data target the DAC calls back into: ICLRDataTarget, ICLRRuntimeLocator and
//! ICLRMetadataLocator over a [`CoreDump`], as hand-written COM objects.
//!
//! One leaked `Shared` holds the dump; three small objects (one per interface) each start
//! with their vtable pointer and point at it. Reference counting is a no-op: the target lives
//! as long as the worker process, and the DAC is never unloaded (unloading crashes at thread
//! exit on Linux).
#![allow(unsafe_code)]

use std::ffi::c_void;

use super::types::*;
use crate::core::CoreDump;
use crate::elf::file_name;

pub(super) const S_OK: i32 = 0;
pub(super) const E_FAIL: i32 = 0x8000_4005_u32 as i32;
pub(super) const E_NOTIMPL: i32 = 0x8000_4001_u32 as i32;
pub(super) const E_NOINTERFACE: i32 = 0x8000_4002_u32 as i32;
pub(super) const E_INVALIDARG: i32 = 0x8007_0057_u32 as i32;
const IMAGE_FILE_MACHINE_AMD64: u32 = 0x8664;
/// Windows AMD64 CONTEXT size, what both DACs pass.
const CONTEXT_SIZE: usize = 0x4D0;

type This = *mut c_void;

#[repr(C)]
struct DataTargetVtbl {
    query_interface: unsafe extern "system" fn(This, *const Guid, *mut *mut c_void) -> i32,
    add_ref: unsafe extern "system" fn(This) -> u32,
    release: unsafe extern "system" fn(This) -> u32,
    get_machine_type: unsafe extern "system" fn(This, *mut u32) -> i32,
    get_pointer_size: unsafe extern "system" fn(This, *mut u32) -> i32,
    get_image_base: unsafe extern "system" fn(This, *const u16, *mut u64) -> i32,
    read_virtual: unsafe extern "system" fn(This, u64, *mut u8, u32, *mut u32) -> i32,
    write_virtual: unsafe extern "system" fn(This, u64, *const u8, u32, *mut u32) -> i32,
    get_tls_value: unsafe extern "system" fn(This, u32, u32, *mut u64) -> i32,
    set_tls_value: unsafe extern "system" fn(This, u32, u32, u64) -> i32,
    get_current_thread_id: unsafe extern "system" fn(This, *mut u32) -> i32,
    get_thread_context: unsafe extern "system" fn(This, u32, u32, u32, *mut u8) -> i32,
    set_thread_context: unsafe extern "system" fn(This, u32, u32, *const u8) -> i32,
    request: unsafe extern "system" fn(This, u32, u32, *const u8, u32, *mut u8) -> i32,
}

#[repr(C)]
struct RuntimeLocatorVtbl {
    query_interface: unsafe extern "system" fn(This, *const Guid, *mut *mut c_void) -> i32,
    add_ref: unsafe extern "system" fn(This) -> u32,
    release: unsafe extern "system" fn(This) -> u32,
    get_runtime_base: unsafe extern "system" fn(This, *mut u64) -> i32,
}

/// A COM object: vtable pointer first, then our state.
#[repr(C)]
struct Obj<V: 'static> {
    vtbl: &'static V,
    shared: *const Shared,
}

struct Shared {
    core: &'static CoreDump,
    runtime_base: u64,
    data_target: *mut c_void,
    runtime_locator: *mut c_void,
}

static DATA_TARGET_VTBL: DataTargetVtbl = DataTargetVtbl {
    query_interface,
    add_ref,
    release,
    get_machine_type,
    get_pointer_size,
    get_image_base,
    read_virtual,
    write_virtual,
    get_tls_value,
    set_tls_value,
    get_current_thread_id,
    get_thread_context,
    set_thread_context,
    request,
};

static RUNTIME_LOCATOR_VTBL: RuntimeLocatorVtbl =
    RuntimeLocatorVtbl { query_interface, add_ref, release, get_runtime_base };

/// Creates the data target over `core` (leaked for the process' lifetime) and returns its
/// ICLRDataTarget pointer.
pub(super) fn create(core: &'static CoreDump, runtime_base: u64) -> *mut c_void {
    let shared = Box::leak(Box::new(Shared {
        core,
        runtime_base,
        data_target: std::ptr::null_mut(),
        runtime_locator: std::ptr::null_mut(),
    }));
    let dt = Box::leak(Box::new(Obj { vtbl: &DATA_TARGET_VTBL, shared: shared as *const Shared }));
    let rl = Box::leak(Box::new(Obj { vtbl: &RUNTIME_LOCATOR_VTBL, shared: shared as *const Shared }));
    shared.data_target = dt as *mut Obj<DataTargetVtbl> as *mut c_void;
    shared.runtime_locator = rl as *mut Obj<RuntimeLocatorVtbl> as *mut c_void;
    shared.data_target
}

/// The state behind any of our interface pointers.
///
/// # Safety
/// `this` must be one of the objects made by [`create`] (both layouts start with the vtable
/// then the same `shared` pointer, so reading it through `Obj<()>`-like layout is sound).
unsafe fn shared<'a>(this: This) -> &'a Shared {
    // SAFETY: per the contract, `this` points at an `Obj<V>` whose second word is a valid,
    // leaked `*const Shared`.
    unsafe { &*(*(this as *const Obj<DataTargetVtbl>)).shared }
}

unsafe extern "system" fn query_interface(this: This, riid: *const Guid, out: *mut *mut c_void) -> i32 {
    if riid.is_null() || out.is_null() {
        return E_INVALIDARG;
    }
    // SAFETY: the DAC passes our own object and valid pointers (checked non-null above).
    unsafe {
        let s = shared(this);
        let iid = *riid;
        let ptr = if iid == IID_IUNKNOWN || iid == IID_ICLRDATATARGET {
            s.data_target
        } else if iid == IID_ICLRRUNTIMELOCATOR && s.runtime_base != 0 {
            s.runtime_locator
        } else {
            // ICLRDataTarget2/3 and ICLRMetadataLocator are optional: metadata pages
            // missing from the dump are served from the files on disk by ReadVirtual.
            *out = std::ptr::null_mut();
            return E_NOINTERFACE;
        };
        *out = ptr;
    }
    S_OK
}

unsafe extern "system" fn add_ref(_this: This) -> u32 {
    1
}

unsafe extern "system" fn release(_this: This) -> u32 {
    1
}

unsafe extern "system" fn get_machine_type(_this: This, out: *mut u32) -> i32 {
    if out.is_null() {
        return E_INVALIDARG;
    }
    // SAFETY: non-null out pointer from the DAC.
    unsafe { *out = IMAGE_FILE_MACHINE_AMD64 };
    S_OK
}

unsafe extern "system" fn get_pointer_size(_this: This, out: *mut u32) -> i32 {
    if out.is_null() {
        return E_INVALIDARG;
    }
    // SAFETY: non-null out pointer from the DAC.
    unsafe { *out = 8 };
    S_OK
}

/// Reads a NUL-terminated UTF-16 string.
///
/// # Safety
/// `p` must be null or point at a NUL-terminated UTF-16 string.
unsafe fn wide(p: *const u16) -> String {
    if p.is_null() {
        return String::new();
    }
    let mut len = 0;
    // SAFETY: the string is NUL-terminated per the contract; cap at 32K units.
    unsafe {
        while len < 32_768 && *p.add(len) != 0 {
            len += 1;
        }
        String::from_utf16_lossy(std::slice::from_raw_parts(p, len))
    }
}

unsafe extern "system" fn get_image_base(this: This, path: *const u16, out: *mut u64) -> i32 {
    if out.is_null() {
        return E_INVALIDARG;
    }
    // SAFETY: our object; the DAC passes a NUL-terminated UTF-16 path.
    let (s, want) = unsafe { (shared(this), wide(path)) };
    // 3.1 asks for "libcoreclr.so", others may omit the extension: compare both ways.
    let want = file_name(&want).to_string();
    let stem = |n: &str| n.strip_suffix(".so").unwrap_or(n).to_ascii_lowercase();
    let base = s
        .core
        .elf()
        .files
        .iter()
        .filter(|f| f.file_offset == 0 && stem(file_name(&f.path)) == stem(&want))
        .map(|f| f.start)
        .min();
    match base {
        Some(b) => {
            // SAFETY: non-null out pointer.
            unsafe { *out = b };
            S_OK
        }
        None => E_FAIL,
    }
}

unsafe extern "system" fn read_virtual(this: This, addr: u64, buf: *mut u8, len: u32, read: *mut u32) -> i32 {
    if buf.is_null() {
        return E_INVALIDARG;
    }
    // SAFETY: our object; the DAC owns `buf` for `len` bytes.
    let n = unsafe {
        let s = shared(this);
        s.core.read_with_files(addr, std::slice::from_raw_parts_mut(buf, len as usize))
    };
    if !read.is_null() {
        // SAFETY: non-null out pointer.
        unsafe { *read = n as u32 };
    }
    // "If any bytes can be processed the call is considered successful."
    if n > 0 || len == 0 { S_OK } else { E_FAIL }
}

unsafe extern "system" fn write_virtual(_: This, _: u64, _: *const u8, _: u32, _: *mut u32) -> i32 {
    E_NOTIMPL
}
unsafe extern "system" fn get_tls_value(_: This, _: u32, _: u32, _: *mut u64) -> i32 {
    E_NOTIMPL
}
unsafe extern "system" fn set_tls_value(_: This, _: u32, _: u32, _: u64) -> i32 {
    E_NOTIMPL
}
unsafe extern "system" fn get_current_thread_id(_: This, _: *mut u32) -> i32 {
    E_NOTIMPL
}
unsafe extern "system" fn set_thread_context(_: This, _: u32, _: u32, _: *const u8) -> i32 {
    E_NOTIMPL
}
unsafe extern "system" fn request(_: This, _: u32, _: u32, _: *const u8, _: u32, _: *mut u8) -> i32 {
    E_NOTIMPL
}

unsafe extern "system" fn get_thread_context(this: This, tid: u32, flags: u32, size: u32, ctx: *mut u8) -> i32 {
    if ctx.is_null() || (size as usize) < CONTEXT_SIZE {
        return E_INVALIDARG;
    }
    // SAFETY: our object; the DAC owns `ctx` for `size` bytes.
    let (s, out) = unsafe { (shared(this), std::slice::from_raw_parts_mut(ctx, size as usize)) };
    let Some(t) = s.core.elf().threads.iter().find(|t| t.tid == tid) else { return E_FAIL };
    fill_context(out, &t.regs, flags);
    S_OK
}

/// Fills a Windows AMD64 CONTEXT from `user_regs_struct` (mapped by name: Linux puts r9
/// before r8). Only CONTROL | INTEGER | SEGMENTS are claimed; no FP state.
fn fill_context(out: &mut [u8], r: &[u64; 27], flags: u32) {
    out.fill(0);
    let put64 = |out: &mut [u8], at: usize, v: u64| out[at..at + 8].copy_from_slice(&v.to_le_bytes());
    let put16 = |out: &mut [u8], at: usize, v: u64| out[at..at + 2].copy_from_slice(&(v as u16).to_le_bytes());
    let claimed = 0x0010_0000 | (flags & 0x7);
    out[0x30..0x34].copy_from_slice(&claimed.to_le_bytes());
    // user_regs_struct indexes.
    let (r15, r14, r13, r12, rbp, rbx, r11, r10, r9, r8) = (r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9]);
    let (rax, rcx, rdx, rsi, rdi, rip, cs, eflags, rsp, ss) =
        (r[10], r[11], r[12], r[13], r[14], r[16], r[17], r[18], r[19], r[20]);
    let (ds, es, fs, gs) = (r[23], r[24], r[25], r[26]);
    put16(out, 0x38, cs);
    put16(out, 0x3A, ds);
    put16(out, 0x3C, es);
    put16(out, 0x3E, fs);
    put16(out, 0x40, gs);
    put16(out, 0x42, ss);
    out[0x44..0x48].copy_from_slice(&(eflags as u32).to_le_bytes());
    for (at, v) in [
        (0x78, rax),
        (0x80, rcx),
        (0x88, rdx),
        (0x90, rbx),
        (0x98, rsp),
        (0xA0, rbp),
        (0xA8, rsi),
        (0xB0, rdi),
        (0xB8, r8),
        (0xC0, r9),
        (0xC8, r10),
        (0xD0, r11),
        (0xD8, r12),
        (0xE0, r13),
        (0xE8, r14),
        (0xF0, r15),
        (0xF8, rip),
    ] {
        put64(out, at, v);
    }
}

unsafe extern "system" fn get_runtime_base(this: This, out: *mut u64) -> i32 {
    if out.is_null() {
        return E_INVALIDARG;
    }
    // SAFETY: our object; non-null out pointer.
    unsafe { *out = shared(this).runtime_base };
    S_OK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_maps_r8_and_r9_by_name() {
        let mut regs = [0u64; 27];
        regs[8] = 9; // r9
        regs[9] = 8; // r8
        regs[16] = 0x1234; // rip
        regs[19] = 0x5678; // rsp
        let mut ctx = vec![0xAAu8; CONTEXT_SIZE];
        fill_context(&mut ctx, &regs, 0x10000B);
        let at = |o: usize| u64::from_le_bytes(ctx[o..o + 8].try_into().unwrap());
        assert_eq!(at(0xB8), 8);
        assert_eq!(at(0xC0), 9);
        assert_eq!(at(0xF8), 0x1234);
        assert_eq!(at(0x98), 0x5678);
        assert_eq!(u32::from_le_bytes(ctx[0x30..0x34].try_into().unwrap()), 0x100003);
    }
}
