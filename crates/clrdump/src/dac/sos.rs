//! Loading `libmscordaccore.so` and calling it: IXCLRDataProcess, ISOSDacInterface(8, 12),
//! the stack walk and the handle / stack-reference enumerators. Vtable slots follow
//! sospriv.idl / xclrdata.idl (see `docs/` research notes); every call is checked by HRESULT,
//! never by its output fields (mini dumps fill fields and still fail).
#![allow(unsafe_code)]

use std::ffi::{CString, c_void};
use std::path::Path;

use super::target::{self, S_OK};
use super::types::*;
use crate::core::CoreDump;
use crate::error::{Error, Result};

type Obj = *mut c_void;

/// The function in vtable slot `slot` of COM object `obj`.
///
/// # Safety
/// `obj` must be a live COM object whose vtable has more than `slot` entries.
unsafe fn vfn(obj: Obj, slot: usize) -> *const c_void {
    // SAFETY: per the contract, the first word of obj is the vtable pointer.
    unsafe { *(*(obj as *const *const *const c_void)).add(slot) }
}

/// Calls slot `$slot` of `$obj` with the given argument types and values.
macro_rules! com {
    ($obj:expr, $slot:expr, ($($t:ty),*), $($arg:expr),*) => {{
        let obj: Obj = $obj;
        // SAFETY: `obj` is a live DAC object of the interface whose slot `$slot` has exactly
        // this signature (sospriv.idl / xclrdata.idl order); arguments point at live buffers.
        unsafe {
            let f: unsafe extern "system" fn(Obj $(, $t)*) -> i32 = std::mem::transmute(vfn(obj, $slot));
            f(obj $(, $arg)*)
        }
    }};
}

fn check(call: &'static str, hr: i32) -> Result<()> {
    if hr < 0 { Err(Error::DacCall { call, hr: hr as u32 }) } else { Ok(()) }
}

/// A raw managed or runtime frame from the DAC stack walk.
#[derive(Clone, Copy, Debug)]
pub struct RawFrame {
    pub ip: u64,
    pub sp: u64,
    /// A clr!Frame address for runtime frames (HelperMethodFrame…), else 0.
    pub frame: u64,
}

/// An initialized DAC over one dump. Not thread-safe (neither is the DAC): keep it on one
/// thread. Never unloaded.
pub struct Dac {
    process: Obj,
    sos: Obj,
    sos8: Option<Obj>,
    sos12: Option<Obj>,
}

impl Dac {
    /// dlopen + DllMain(PROCESS_ATTACH) + CLRDataCreateInstance over `core`.
    pub fn load(path: &Path, core: &'static CoreDump) -> Result<Dac> {
        let runtime_base = core.runtime_base()?;
        let cpath = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| Error::Dac(format!("bad path {}", path.display())))?;
        // SAFETY: plain dlopen of a shared library; the handle is never closed (the DAC's PAL
        // registers TLS destructors that would crash after dlclose).
        let handle = unsafe { libc::dlopen(cpath.as_ptr(), libc::RTLD_LAZY | libc::RTLD_LOCAL) };
        if handle.is_null() {
            // SAFETY: dlerror returns a thread-local C string or null.
            let msg = unsafe {
                let e = libc::dlerror();
                if e.is_null() { "unknown".into() } else { std::ffi::CStr::from_ptr(e).to_string_lossy().into_owned() }
            };
            return Err(Error::Dac(format!("dlopen {}: {msg}", path.display())));
        }
        let sym = |name: &str| {
            let c = CString::new(name).expect("no NUL");
            // SAFETY: valid handle and NUL-terminated name.
            unsafe { libc::dlsym(handle, c.as_ptr()) }
        };
        let dll_main = sym("DllMain");
        if !dll_main.is_null() {
            // SAFETY: DllMain(HINSTANCE, DWORD reason, LPVOID) -> BOOL, exported by the DAC to
            // initialize its PAL; reason 1 = DLL_PROCESS_ATTACH.
            let ok = unsafe {
                let f: unsafe extern "system" fn(*mut c_void, u32, *mut c_void) -> i32 = std::mem::transmute(dll_main);
                f(handle, 1, std::ptr::null_mut())
            };
            if ok == 0 {
                return Err(Error::Dac("DllMain(PROCESS_ATTACH) failed".into()));
            }
        }
        let create = sym("CLRDataCreateInstance");
        if create.is_null() {
            return Err(Error::Dac(format!("{} exports no CLRDataCreateInstance", path.display())));
        }
        let dt = target::create(core, runtime_base);
        let mut process: Obj = std::ptr::null_mut();
        // SAFETY: CLRDataCreateInstance(REFIID, ICLRDataTarget*, void**) per clrdata.idl.
        let hr = unsafe {
            let f: unsafe extern "system" fn(*const Guid, Obj, *mut Obj) -> i32 = std::mem::transmute(create);
            f(&IID_IXCLRDATAPROCESS, dt, &mut process)
        };
        if hr as u32 == 0x8013_1C4F {
            return Err(Error::Dac(
                "CLRDataCreateInstance: CORDBG_E_MISSING_DEBUGGER_EXPORTS (DAC and runtime do not match, or the dump lacks the runtime's data)".into(),
            ));
        }
        check("CLRDataCreateInstance", hr)?;
        if process.is_null() {
            return Err(Error::Dac("CLRDataCreateInstance returned no process".into()));
        }
        let qi = |iid: &Guid| -> Option<Obj> {
            let mut out: Obj = std::ptr::null_mut();
            let hr = com!(process, 0, (*const Guid, *mut Obj), iid, &mut out);
            (hr == S_OK && !out.is_null()).then_some(out)
        };
        let sos = qi(&IID_ISOSDACINTERFACE).ok_or_else(|| Error::Dac("no ISOSDacInterface".into()))?;
        Ok(Dac { process, sos, sos8: qi(&IID_ISOSDACINTERFACE8), sos12: qi(&IID_ISOSDACINTERFACE12) })
    }

    /// `IXCLRDataProcess::Request(CLRDATA_REQUEST_REVISION)`: 9 on 3.1 and 8.
    pub fn revision(&self) -> Result<u32> {
        let mut rev = 0u32;
        let hr =
            com!(self.process, 33, (u32, u32, *const u8, u32, *mut u32), 0xE000_0000, 0, std::ptr::null(), 4, &mut rev);
        check("Request(REVISION)", hr)?;
        Ok(rev)
    }

    pub fn thread_store(&self) -> Result<ThreadStoreData> {
        let mut d = ThreadStoreData::default();
        check("GetThreadStoreData", com!(self.sos, 3, (*mut ThreadStoreData), &mut d))?;
        Ok(d)
    }

    pub fn thread(&self, addr: u64) -> Result<ThreadData> {
        let mut d = ThreadData::default();
        check("GetThreadData", com!(self.sos, 17, (u64, *mut ThreadData), addr, &mut d))?;
        Ok(d)
    }

    pub fn sync_block(&self, index: u32) -> Result<SyncBlockData> {
        let mut d = SyncBlockData::default();
        check("GetSyncBlockData", com!(self.sos, 59, (u32, *mut SyncBlockData), index, &mut d))?;
        Ok(d)
    }

    pub fn method_table(&self, mt: u64) -> Result<MethodTableData> {
        let mut d = MethodTableData::default();
        check("GetMethodTableData", com!(self.sos, 37, (u64, *mut MethodTableData), mt, &mut d))?;
        Ok(d)
    }

    pub fn method_table_name(&self, mt: u64) -> Result<String> {
        self.string("GetMethodTableName", |n, b, need| {
            com!(self.sos, 36, (u64, u32, *mut u16, *mut u32), mt, n, b, need)
        })
    }

    pub fn method_desc_name(&self, md: u64) -> Result<String> {
        self.string("GetMethodDescName", |n, b, need| {
            com!(self.sos, 22, (u64, u32, *mut u16, *mut u32), md, n, b, need)
        })
    }

    pub fn frame_name(&self, vtable: u64) -> Result<String> {
        self.string("GetFrameName", |n, b, need| com!(self.sos, 43, (u64, u32, *mut u16, *mut u32), vtable, n, b, need))
    }

    pub fn method_desc_from_ip(&self, ip: u64) -> Option<u64> {
        let mut md = 0u64;
        let hr = com!(self.sos, 21, (u64, *mut u64), ip, &mut md);
        if hr == S_OK && md != 0 {
            return Some(md);
        }
        let mut ch = CodeHeaderData::default();
        let hr = com!(self.sos, 26, (u64, *mut CodeHeaderData), ip, &mut ch);
        (hr == S_OK && ch.method_desc != 0).then_some(ch.method_desc)
    }

    pub fn method_desc_from_frame(&self, frame: u64) -> Option<u64> {
        let mut md = 0u64;
        let hr = com!(self.sos, 23, (u64, *mut u64), frame, &mut md);
        (hr == S_OK && md != 0).then_some(md)
    }

    pub fn gc_heap_data(&self) -> Result<GcHeapData> {
        let mut d = GcHeapData::default();
        check("GetGCHeapData", com!(self.sos, 46, (*mut GcHeapData), &mut d))?;
        Ok(d)
    }

    /// Per-heap details: workstation GC has one static heap, server GC a list.
    pub fn heap_details(&self, server: bool, heap_count: u32) -> Result<Vec<GcHeapDetails>> {
        if !server {
            let mut d = GcHeapDetails::default();
            check("GetGCHeapStaticData", com!(self.sos, 49, (*mut GcHeapDetails), &mut d))?;
            return Ok(vec![d]);
        }
        let mut heaps = vec![0u64; heap_count as usize];
        let mut needed = 0u32;
        check(
            "GetGCHeapList",
            com!(self.sos, 47, (u32, *mut u64, *mut u32), heap_count, heaps.as_mut_ptr(), &mut needed),
        )?;
        heaps.truncate(needed as usize);
        heaps
            .into_iter()
            .map(|h| {
                let mut d = GcHeapDetails::default();
                check("GetGCHeapDetails", com!(self.sos, 48, (u64, *mut GcHeapDetails), h, &mut d))?;
                Ok(d)
            })
            .collect()
    }

    /// ISOSDacInterface8's generation table (gen0, gen1, gen2, LOH, POH) where available
    /// (.NET 5+); workstation heaps only.
    pub fn generation_table(&self, heap: Option<u64>) -> Option<Vec<GenerationData>> {
        let sos8 = self.sos8?;
        let mut needed = 0u32;
        let mut table = vec![GenerationData::default(); 8];
        let hr = match heap {
            None => com!(sos8, 4, (u32, *mut GenerationData, *mut u32), 8, table.as_mut_ptr(), &mut needed),
            Some(h) => com!(sos8, 6, (u64, u32, *mut GenerationData, *mut u32), h, 8, table.as_mut_ptr(), &mut needed),
        };
        if hr < 0 || needed as usize > table.len() {
            return None;
        }
        table.truncate(needed as usize);
        Some(table)
    }

    /// ISOSDacInterface8's finalization fill pointers (one per generation plus the two
    /// ready-for-finalization segments) where available (.NET 5+).
    pub fn finalization_fill_pointers(&self, heap: Option<u64>) -> Option<Vec<u64>> {
        let sos8 = self.sos8?;
        let mut needed = 0u32;
        let mut table = vec![0u64; 16];
        let hr = match heap {
            None => com!(sos8, 5, (u32, *mut u64, *mut u32), 16, table.as_mut_ptr(), &mut needed),
            Some(h) => com!(sos8, 7, (u64, u32, *mut u64, *mut u32), h, 16, table.as_mut_ptr(), &mut needed),
        };
        if hr < 0 || needed as usize > table.len() {
            return None;
        }
        table.truncate(needed as usize);
        Some(table)
    }

    /// ISOSDacInterface12's global allocation context, where available.
    pub fn global_alloc_context(&self) -> Option<(u64, u64)> {
        let sos12 = self.sos12?;
        let (mut p, mut l) = (0u64, 0u64);
        let hr = com!(sos12, 3, (*mut u64, *mut u64), &mut p, &mut l);
        (hr == S_OK && p != 0).then_some((p, l))
    }

    pub fn segment(&self, addr: u64) -> Result<HeapSegmentData> {
        let mut d = HeapSegmentData::default();
        check("GetHeapSegmentData", com!(self.sos, 50, (u64, *mut HeapSegmentData), addr, &mut d))?;
        Ok(d)
    }

    pub fn useful_globals(&self) -> Result<UsefulGlobals> {
        let mut d = UsefulGlobals::default();
        check("GetUsefulGlobals", com!(self.sos, 70, (*mut UsefulGlobals), &mut d))?;
        Ok(d)
    }

    /// Every handle `GetHandleEnum` lists.
    pub fn handles(&self) -> Result<Vec<HandleData>> {
        let mut e: Obj = std::ptr::null_mut();
        check("GetHandleEnum", com!(self.sos, 61, (*mut Obj), &mut e))?;
        let out = drain(e, "ISOSHandleEnum::Next");
        com!(e, 2, (),);
        out
    }

    /// GC references on `tid`'s stack (objects 0 skipped: 3.1 reports them).
    pub fn stack_refs(&self, tid: u32) -> Result<Vec<StackRefData>> {
        let mut e: Obj = std::ptr::null_mut();
        check("GetStackReferences", com!(self.sos, 79, (u32, *mut Obj), tid, &mut e))?;
        let mut out: Vec<StackRefData> = drain(e, "ISOSStackRefEnum::Next")?;
        com!(e, 2, (),);
        out.retain(|r| r.object != 0);
        Ok(out)
    }

    /// The managed stack walk of `tid` (frames with `Request(FRAME_DATA)` are runtime frames).
    pub fn stack_walk(&self, tid: u32, max_frames: usize) -> Result<Vec<RawFrame>> {
        let mut task: Obj = std::ptr::null_mut();
        check("GetTaskByOSThreadID", com!(self.process, 7, (u32, *mut Obj), tid, &mut task))?;
        let mut walk: Obj = std::ptr::null_mut();
        let hr = com!(task, 11, (u32, *mut Obj), 0xF, &mut walk);
        com!(task, 2, (),);
        check("CreateStackWalk", hr)?;
        let mut frames = Vec::new();
        let mut ctx = vec![0u8; 0x4D0];
        loop {
            let mut size = 0u32;
            if com!(walk, 3, (u32, u32, *mut u32, *mut u8), 0x10003F, ctx.len() as u32, &mut size, ctx.as_mut_ptr())
                != S_OK
            {
                break;
            }
            let ip = u64::from_le_bytes(ctx[0xF8..0x100].try_into().expect("8 bytes"));
            let sp = u64::from_le_bytes(ctx[0x98..0xA0].try_into().expect("8 bytes"));
            let mut frame = 0u64;
            let hr =
                com!(walk, 9, (u32, u32, *const u8, u32, *mut u64), 0xF000_0000, 0, std::ptr::null(), 8, &mut frame);
            if hr != S_OK {
                frame = 0;
            }
            frames.push(RawFrame { ip, sp, frame });
            if frames.len() >= max_frames || com!(walk, 5, (),) != S_OK {
                break;
            }
        }
        com!(walk, 2, (),);
        Ok(frames)
    }

    /// Every app domain, the system and shared domains included (3.1 loads CoreLib there).
    pub fn app_domains(&self) -> Result<Vec<u64>> {
        let mut store = AppDomainStoreData::default();
        check("GetAppDomainStoreData", com!(self.sos, 4, (*mut AppDomainStoreData), &mut store))?;
        let n = store.domain_count.clamp(0, 4096) as u32;
        let mut list = vec![0u64; n as usize];
        let mut needed = 0u32;
        check("GetAppDomainList", com!(self.sos, 5, (u32, *mut u64, *mut u32), n, list.as_mut_ptr(), &mut needed))?;
        list.truncate((needed as usize).min(n as usize));
        list.extend([store.system_domain, store.shared_domain]);
        list.retain(|&d| d != 0);
        list.sort_unstable();
        list.dedup();
        Ok(list)
    }

    /// The assemblies loaded in `domain`.
    pub fn assemblies(&self, domain: u64) -> Result<Vec<u64>> {
        let mut needed = 0i32;
        check(
            "GetAssemblyList",
            com!(self.sos, 9, (u64, i32, *mut u64, *mut i32), domain, 0, std::ptr::null_mut(), &mut needed),
        )?;
        let mut list = vec![0u64; needed.clamp(0, 100_000) as usize];
        check(
            "GetAssemblyList",
            com!(
                self.sos,
                9,
                (u64, i32, *mut u64, *mut i32),
                domain,
                list.len() as i32,
                list.as_mut_ptr(),
                &mut needed
            ),
        )?;
        list.truncate(needed.clamp(0, list.len() as i32) as usize);
        Ok(list)
    }

    /// The modules of `assembly`.
    pub fn modules(&self, assembly: u64) -> Result<Vec<u64>> {
        let mut list = vec![0u64; 64];
        let mut needed = 0u32;
        check(
            "GetAssemblyModuleList",
            com!(self.sos, 15, (u64, u32, *mut u64, *mut u32), assembly, 64, list.as_mut_ptr(), &mut needed),
        )?;
        list.truncate((needed as usize).min(64));
        Ok(list)
    }

    /// MethodTables of the module's loaded type definitions.
    pub fn module_types(&self, module: u64) -> Result<Vec<u64>> {
        unsafe extern "system" fn visit(_index: u32, mt: u64, token: *mut c_void) {
            // SAFETY: `token` is the `&mut Vec<u64>` passed below, alive during the call.
            unsafe { (*(token as *mut Vec<u64>)).push(mt) };
        }
        let mut out: Vec<u64> = Vec::new();
        let cb: unsafe extern "system" fn(u32, u64, *mut c_void) = visit;
        let token = &mut out as *mut Vec<u64> as *mut c_void;
        // ModuleMapType 0 = TYPEDEFTOMETHODTABLE.
        check(
            "TraverseModuleMap",
            com!(self.sos, 14, (u32, u64, *const c_void, *mut c_void), 0, module, cb as *const c_void, token),
        )?;
        out.retain(|&mt| mt != 0);
        Ok(out)
    }

    pub fn method_table_fields(&self, mt: u64) -> Result<MethodTableFieldData> {
        let mut d = MethodTableFieldData::default();
        check("GetMethodTableFieldData", com!(self.sos, 39, (u64, *mut MethodTableFieldData), mt, &mut d))?;
        Ok(d)
    }

    pub fn field_desc(&self, fd: u64) -> Result<FieldDescData> {
        let mut d = FieldDescData::default();
        check("GetFieldDescData", com!(self.sos, 42, (u64, *mut FieldDescData), fd, &mut d))?;
        Ok(d)
    }

    pub fn domain_local_module(&self, module: u64) -> Result<DomainLocalModuleData> {
        let mut d = DomainLocalModuleData::default();
        check(
            "GetDomainLocalModuleDataFromModule",
            com!(self.sos, 57, (u64, *mut DomainLocalModuleData), module, &mut d),
        )?;
        Ok(d)
    }

    /// The module's IMetaDataImport (through IXCLRDataModule), or None.
    pub fn metadata_import(&self, module: u64) -> Option<MetadataImport> {
        let mut xmodule: Obj = std::ptr::null_mut();
        if com!(self.sos, 12, (u64, *mut Obj), module, &mut xmodule) != S_OK || xmodule.is_null() {
            return None;
        }
        let mut import: Obj = std::ptr::null_mut();
        let hr = com!(xmodule, 0, (*const Guid, *mut Obj), &IID_IMETADATAIMPORT, &mut import);
        (hr == S_OK && !import.is_null()).then_some(MetadataImport(import))
    }

    /// The two-call UTF-16 string pattern; the buffer is cut at the first NUL because the
    /// "needed" count includes it for some calls and not for others (GetFrameName).
    fn string(&self, call: &'static str, f: impl Fn(u32, *mut u16, *mut u32) -> i32) -> Result<String> {
        let mut needed = 0u32;
        check(call, f(0, std::ptr::null_mut(), &mut needed))?;
        // GetMethodDescName can report a too-small count on the first call (generics).
        for _ in 0..3 {
            let mut buf = vec![0u16; needed as usize + 1];
            let mut again = 0u32;
            check(call, f(buf.len() as u32, buf.as_mut_ptr(), &mut again))?;
            if again as usize <= buf.len() {
                let end = buf.iter().position(|&c| c == 0).unwrap_or(buf.len());
                return Ok(String::from_utf16_lossy(&buf[..end]));
            }
            needed = again;
        }
        Err(Error::DacCall { call, hr: target::E_FAIL as u32 })
    }
}

/// A module's metadata reader (IMetaDataImport).
pub struct MetadataImport(Obj);

impl MetadataImport {
    /// `IMetaDataImport::GetFieldProps` (slot 57): the field's name.
    pub fn field_name(&self, token: u32) -> Option<String> {
        let mut buf = vec![0u16; 512];
        let (mut class, mut len, mut attr, mut sig, mut sig_len, mut cplus, mut value, mut value_len) =
            (0u32, 0u32, 0u32, std::ptr::null::<u8>(), 0u32, 0u32, std::ptr::null::<u8>(), 0u32);
        let hr = com!(
            self.0,
            57,
            (
                u32,
                *mut u32,
                *mut u16,
                u32,
                *mut u32,
                *mut u32,
                *mut *const u8,
                *mut u32,
                *mut u32,
                *mut *const u8,
                *mut u32
            ),
            token,
            &mut class,
            buf.as_mut_ptr(),
            buf.len() as u32,
            &mut len,
            &mut attr,
            &mut sig,
            &mut sig_len,
            &mut cplus,
            &mut value,
            &mut value_len
        );
        if hr < 0 {
            return None;
        }
        let end = buf.iter().position(|&c| c == 0).unwrap_or(buf.len());
        Some(String::from_utf16_lossy(&buf[..end])).filter(|s| !s.is_empty())
    }
}

/// Reads an ISOS*Enum to the end. `Next`'s S_OK / S_FALSE meaning is reversed between 3.1
/// and 8, so stop on "nothing fetched" or a failure, never on the code alone.
fn drain<T: Default + Clone>(e: Obj, call: &'static str) -> Result<Vec<T>> {
    let mut out = Vec::new();
    let mut batch = vec![T::default(); 256];
    loop {
        let mut fetched = 0u32;
        let hr = com!(e, 6, (u32, *mut T, *mut u32), batch.len() as u32, batch.as_mut_ptr(), &mut fetched);
        check(call, hr)?;
        let n = (fetched as usize).min(batch.len());
        if n == 0 {
            break;
        }
        out.extend_from_slice(&batch[..n]);
        if out.len() > 50_000_000 {
            return Err(Error::Dac(format!("{call} does not end")));
        }
    }
    Ok(out)
}
