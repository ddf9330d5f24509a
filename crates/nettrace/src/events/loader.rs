//! Method and module load/rundown events, used to map stack IPs to method names.

use super::{RuntimeEvent, Utf16Str};
use crate::Error;
use crate::cursor::Cursor;

/// Which event a [`MethodInfo`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MethodEventKind {
    /// MethodLoadVerbose: jitted during the session.
    Load,
    /// MethodUnloadVerbose.
    Unload,
    /// MethodDCStartVerbose: rundown at session start.
    DcStart,
    /// MethodDCEndVerbose: rundown at session end (what dotnet-stack relies on).
    DcEnd,
}

/// The MethodLoadUnloadVerbose layout shared by load, unload and rundown events.
/// IDs and addresses are u64 regardless of pointer size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MethodInfo<'a> {
    pub kind: MethodEventKind,
    pub method_id: u64,
    pub module_id: u64,
    pub start_address: u64,
    pub size: u32,
    pub token: u32,
    pub flags: u32,
    /// Full name of the declaring type, e.g. `DiagScenarios.Program`.
    pub namespace: Utf16Str<'a>,
    pub name: Utf16Str<'a>,
    /// e.g. `void  (class System.Object,class System.Object)`.
    pub signature: Utf16Str<'a>,
}

impl MethodInfo<'_> {
    /// Whether `ip` lies in `[start_address, start_address + size)`.
    pub fn contains(&self, ip: u64) -> bool {
        ip.checked_sub(self.start_address).is_some_and(|off| off < u64::from(self.size))
    }

    /// `Namespace.Name(args)`, the way TraceEvent names methods: the signature from its
    /// opening parenthesis on (the return type is dropped).
    pub fn full_name(&self) -> String {
        let sig = self.signature.to_string_lossy();
        let args = sig.find('(').map_or("", |i| &sig[i..]);
        let mut out = String::new();
        if !self.namespace.is_empty() {
            out.push_str(&self.namespace.to_string_lossy());
            out.push('.');
        }
        out.push_str(&self.name.to_string_lossy());
        out.push_str(args);
        out
    }
}

pub(super) fn method(p: &[u8], kind: MethodEventKind) -> Result<RuntimeEvent<'_>, Error> {
    let mut c = Cursor::new(p, 0);
    // Trailing ClrInstanceID / ReJITID (versions 1 and 2) are not needed.
    Ok(RuntimeEvent::MethodLoad(MethodInfo {
        kind,
        method_id: c.u64("method MethodID")?,
        module_id: c.u64("method ModuleID")?,
        start_address: c.u64("method MethodStartAddress")?,
        size: c.u32("method MethodSize")?,
        token: c.u32("method MethodToken")?,
        flags: c.u32("method MethodFlags")?,
        namespace: Utf16Str::from_bytes(c.utf16z("method MethodNamespace")?),
        name: Utf16Str::from_bytes(c.utf16z("method MethodName")?),
        signature: Utf16Str::from_bytes(c.utf16z("method MethodSignature")?),
    }))
}

/// `u64 ModuleID, u64 AssemblyID, u32 ModuleFlags, u32 Reserved1, UTF-16z ILPath,
/// UTF-16z NativePath`, then version-dependent PDB information that is not needed.
pub(super) fn module(p: &[u8]) -> Result<RuntimeEvent<'_>, Error> {
    let mut c = Cursor::new(p, 0);
    let module_id = c.u64("module ModuleID")?;
    let assembly_id = c.u64("module AssemblyID")?;
    c.u32("module ModuleFlags")?;
    c.u32("module Reserved1")?;
    Ok(RuntimeEvent::ModuleLoad {
        module_id,
        assembly_id,
        il_path: Utf16Str::from_bytes(c.utf16z("module ModuleILPath")?),
        native_path: Utf16Str::from_bytes(c.utf16z("module ModuleNativePath")?),
    })
}
