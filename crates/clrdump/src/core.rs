//! A core dump opened for reading: the mapped file, its parsed structure, and address-space
//! reads (with a fallback to the mapped files on disk for pages the dump left out).

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::elf::{ElfCore, file_name};
use crate::error::{Error, Result};

/// A mapped, parsed core dump.
pub struct CoreDump {
    path: PathBuf,
    map: Mmap,
    elf: ElfCore,
    /// Files named in NT_FILE, opened on first use (None: not readable here).
    files: RefCell<HashMap<String, Option<File>>>,
    /// Local copies of files the dumped process mapped, by its path (fetched from a symbol
    /// server when the path does not exist here).
    replacements: HashMap<String, PathBuf>,
}

impl std::fmt::Debug for CoreDump {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreDump").field("path", &self.path).field("loads", &self.elf.loads.len()).finish()
    }
}

impl CoreDump {
    /// Maps and parses `path`.
    pub fn open(path: &Path) -> Result<CoreDump> {
        if path.is_dir() {
            return Err(Error::NotACore(format!("{} is a directory", path.display())));
        }
        let map = crate::mapped::map(path)?;
        let elf = ElfCore::parse(&map)?;
        Ok(CoreDump {
            path: path.to_path_buf(),
            map,
            elf,
            files: RefCell::new(HashMap::new()),
            replacements: HashMap::new(),
        })
    }

    /// Reads `local` wherever [`read_with_files`](Self::read_with_files) would read the file
    /// the dumped process mapped from `dumped`.
    pub fn replace_file(&mut self, dumped: String, local: PathBuf) {
        self.replacements.insert(dumped, local);
    }

    /// The dump file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The parsed ELF structure.
    pub fn elf(&self) -> &ElfCore {
        &self.elf
    }

    /// Bytes `[addr, addr + len)` if they all lie in one PT_LOAD present in the file.
    pub fn slice(&self, addr: u64, len: u64) -> Option<&[u8]> {
        let l = self.elf.load_for(addr)?;
        let rel = addr - l.vaddr;
        if len > l.filesz - rel {
            return None;
        }
        let start = (l.offset + rel) as usize;
        self.map.get(start..start + len as usize)
    }

    /// The bytes from `addr` to the end of its PT_LOAD.
    pub fn slice_to_end(&self, addr: u64) -> Option<&[u8]> {
        let l = self.elf.load_for(addr)?;
        let rel = addr - l.vaddr;
        self.slice(addr, l.filesz - rel)
    }

    /// Reads a little-endian u64.
    pub fn u64_at(&self, addr: u64) -> Option<u64> {
        Some(u64::from_le_bytes(self.slice(addr, 8)?.try_into().ok()?))
    }

    /// Reads a little-endian u32.
    pub fn u32_at(&self, addr: u64) -> Option<u32> {
        Some(u32::from_le_bytes(self.slice(addr, 4)?.try_into().ok()?))
    }

    /// Copies as many bytes as are present from `addr` on, crossing adjacent PT_LOADs;
    /// returns how many.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> usize {
        let mut done = 0;
        while done < buf.len() {
            let Some(src) = addr.checked_add(done as u64).and_then(|a| self.slice_to_end(a)) else { break };
            let n = src.len().min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&src[..n]);
            done += n;
        }
        done
    }

    /// Like [`read`](Self::read), but pages the dump left out are read from the mapped
    /// file on disk when the address lies in an NT_FILE mapping (heap dumps omit module
    /// images; on 3.1 that includes assembly metadata the DAC needs for type names).
    pub fn read_with_files(&self, addr: u64, buf: &mut [u8]) -> usize {
        let n = self.read(addr, buf);
        if n > 0 {
            return n;
        }
        let Some(m) = self.elf.files.iter().find(|f| f.start <= addr && addr < f.end) else { return 0 };
        let len = buf.len().min((m.end - addr) as usize);
        let mut files = self.files.borrow_mut();
        let file = files.entry(m.path.clone()).or_insert_with(|| match self.replacements.get(&m.path) {
            Some(local) => File::open(local).ok(),
            None => File::open(&m.path).ok(),
        });
        let Some(file) = file else { return 0 };
        file.read_at(&mut buf[..len], m.file_offset + (addr - m.start)).unwrap_or(0)
    }

    /// Base address of `libcoreclr.so`.
    pub fn runtime_base(&self) -> Result<u64> {
        self.elf.module_base("libcoreclr.so").ok_or(Error::NoRuntime)
    }

    /// Path of `libcoreclr.so` as the dumped process saw it.
    pub fn runtime_path(&self) -> Result<&str> {
        self.elf.module_mappings("libcoreclr.so").map(|f| f.path.as_str()).next().ok_or(Error::NoRuntime)
    }

    /// The GNU build-id of `libcoreclr.so`, read from the dump's memory only (createdump keeps
    /// every module's ELF header, program headers and notes): what names the runtime build
    /// when its files are not on this machine.
    pub fn runtime_build_id(&self) -> Result<Vec<u8>> {
        let base = self.runtime_base()?;
        crate::buildid::image_build_id(&mut |addr, buf| self.read(addr, buf), base)
    }

    /// The runtime's `@(#)Version …` string: from libcoreclr's pages in the dump (3.1 heap
    /// dumps have them), else from the `libcoreclr.so` file the dumped process mapped, when
    /// it is readable here (8.0 heap dumps leave that page out).
    pub fn runtime_version(&self) -> Result<Option<String>> {
        if let Some(v) = self.runtime_version_in_dump()? {
            return Ok(Some(v));
        }
        let path = self.runtime_path()?;
        Ok(std::fs::read(path).ok().and_then(|bytes| find_version(&bytes)))
    }

    fn runtime_version_in_dump(&self) -> Result<Option<String>> {
        for m in self.elf.module_mappings("libcoreclr.so") {
            let mut addr = m.start;
            while addr < m.end {
                let Some(l) = self.elf.load_for(addr) else {
                    // Jump to the next PT_LOAD inside the mapping, if any.
                    let i = self.elf.loads.partition_point(|l| l.vaddr <= addr);
                    match self.elf.loads.get(i) {
                        Some(next) if next.vaddr < m.end => {
                            addr = next.vaddr;
                            continue;
                        }
                        _ => break,
                    }
                };
                let end = (l.vaddr + l.filesz).min(m.end);
                if let Some(bytes) = self.slice(addr, end - addr)
                    && let Some(v) = find_version(bytes)
                {
                    return Ok(Some(v));
                }
                addr = end;
            }
        }
        Ok(None)
    }

    /// The symbol-server key of the PE image (a managed assembly) the dumped process mapped from
    /// `path` (SSQP "PE-timestamp-filesize": `<name>/<TimeDateStamp, 8 upper-case hex digits>
    /// <SizeOfImage, lower-case hex>/<name>`), from its headers in the dump (createdump keeps
    /// each assembly's first page). `None` when they are absent or not a PE image.
    pub fn pe_symbol_key(&self, path: &str) -> Option<String> {
        let base = self.elf.files.iter().filter(|f| f.path == path && f.file_offset == 0).map(|f| f.start).min()?;
        let mut head = [0u8; 1024];
        if self.read(base, &mut head) < head.len() {
            return None;
        }
        let (timestamp, size) = pe_identity(&head)?;
        let name = file_name(path).to_lowercase();
        Some(format!("{name}/{timestamp:08X}{size:x}/{name}"))
    }

    /// Module names from NT_FILE, for error messages.
    pub fn module_names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.elf.files.iter().map(|f| file_name(&f.path)).collect();
        v.dedup();
        v
    }
}

/// `(TimeDateStamp, SizeOfImage)` from a PE image's first bytes (DOS header → `PE\0\0` → COFF
/// header → optional header, where SizeOfImage has the same offset in PE32 and PE32+).
pub fn pe_identity(head: &[u8]) -> Option<(u32, u32)> {
    let u32_at = |at: usize| Some(u32::from_le_bytes(head.get(at..at.checked_add(4)?)?.try_into().ok()?));
    if head.get(..2)? != b"MZ" {
        return None;
    }
    let pe = u32_at(0x3c)? as usize;
    if head.get(pe..pe.checked_add(4)?)? != b"PE\0\0" {
        return None;
    }
    Some((u32_at(pe + 8)?, u32_at(pe + 24 + 56)?))
}

/// Finds `@(#)Version <version>` in `bytes` and returns `<version>` (up to the next space
/// or NUL), e.g. `8.0.424.16909`.
pub fn find_version(bytes: &[u8]) -> Option<String> {
    const TAG: &[u8] = b"@(#)Version ";
    let at = bytes.windows(TAG.len()).position(|w| w == TAG)?;
    let rest = &bytes[at + TAG.len()..];
    let end = rest.iter().position(|&b| b == 0 || b == b' ').unwrap_or(rest.len().min(64));
    let v = std::str::from_utf8(&rest[..end]).ok()?;
    (!v.is_empty()).then(|| v.to_string())
}

/// The `@(#)Version` of a DAC (or any runtime binary) file on disk.
pub fn file_version(path: &Path) -> Result<Option<String>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    Ok(find_version(&bytes))
}
