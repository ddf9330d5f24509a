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

/// The page size of the dumped process (x86-64 Linux).
const PAGE: u64 = 4096;

/// The bytes of a core file: mapped from disk, or held in memory (tests and fuzzing, which
/// build thousands of small cores and must not go through files).
enum Bytes {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// A mapped, parsed core dump.
pub struct CoreDump {
    path: PathBuf,
    map: Bytes,
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
            map: Bytes::Mapped(map),
            elf,
            files: RefCell::new(HashMap::new()),
            replacements: HashMap::new(),
        })
    }

    /// Parses a core file held in memory (its [`path`](Self::path) is empty).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<CoreDump> {
        let elf = ElfCore::parse(&bytes)?;
        Ok(CoreDump {
            path: PathBuf::new(),
            map: Bytes::Owned(bytes),
            elf,
            files: RefCell::new(HashMap::new()),
            replacements: HashMap::new(),
        })
    }

    /// Bytes of memory the dump holds (its PT_LOADs' file data): no walk of it can meet
    /// more objects or references than this allows, whatever a layout claims.
    pub fn present_bytes(&self) -> u64 {
        self.elf.loads.iter().map(|l| l.filesz).fold(0, u64::saturating_add)
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
        self.memory().slice(addr, len)
    }

    /// See [`DumpMemory::release`].
    pub fn release(&self, addr: u64, len: u64) {
        self.memory().release(addr, len)
    }

    /// The dump's own memory, without the files it maps: what a heap walk reads, shareable
    /// between threads (the files are opened lazily, by one thread).
    pub fn memory(&self) -> DumpMemory<'_> {
        DumpMemory { map: &self.map, elf: &self.elf }
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

    /// Like [`read`](Self::read), but every byte the dump left out is read from the file the
    /// dumped process mapped there (NT_FILE), when it is readable here: heap dumps omit module
    /// images, and on 3.1 that includes the assembly metadata the DAC needs for type names.
    /// A read may mix both, page by page: 3.1 keeps an assembly's first page and writes the
    /// next ones as PT_LOADs without data, so metadata spanning them must come from both.
    pub fn read_with_files(&self, addr: u64, buf: &mut [u8]) -> usize {
        let mut done = 0;
        while done < buf.len() {
            let Some(at) = addr.checked_add(done as u64) else { break };
            let rest = &mut buf[done..];
            let n = match self.slice_to_end(at) {
                Some(src) => {
                    let n = src.len().min(rest.len());
                    rest[..n].copy_from_slice(&src[..n]);
                    n
                }
                None => self.read_mapped_file(at, rest),
            };
            if n == 0 {
                break;
            }
            done += n;
        }
        done
    }

    /// Bytes absent from the dump at `addr`, up to the next byte it has, from the file mapped
    /// there. Past the file's end the rest of its last page reads as zeros, as in the process.
    fn read_mapped_file(&self, addr: u64, buf: &mut [u8]) -> usize {
        let Some(m) = self.elf.files.iter().find(|f| f.start <= addr && addr < f.end) else { return 0 };
        let next_present = self.elf.next_load_after(addr).map_or(u64::MAX, |l| l.vaddr);
        let want = (buf.len() as u64).min(m.end - addr).min(next_present - addr) as usize;
        let Some(offset) = m.file_offset.checked_add(addr - m.start) else { return 0 };
        let mut files = self.files.borrow_mut();
        let file = files.entry(m.path.clone()).or_insert_with(|| match self.replacements.get(&m.path) {
            Some(local) => File::open(local).ok(),
            // The dump names the path: only runtime modules and assemblies are opened, never,
            // say, the analyzer's own token that a hostile dump lists as mapped.
            None if crate::sandbox::is_module_file(&m.path) => File::open(&m.path).ok(),
            None => None,
        });
        let Some(file) = file else { return 0 };
        let mut got = 0;
        while got < want {
            match file.read_at(&mut buf[got..want], offset + got as u64) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        if got < want {
            // The file ends inside the mapping: its last page is zero-filled in memory.
            let zeros_end = file.metadata().map_or(0, |m| m.len().next_multiple_of(PAGE));
            let end = zeros_end.saturating_sub(offset).min(want as u64) as usize;
            if end > got {
                buf[got..end].fill(0);
                got = end;
            }
        }
        got
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

/// The memory a core dump holds (its PT_LOADs' file data), readable from any thread.
#[derive(Clone, Copy)]
pub struct DumpMemory<'a> {
    map: &'a Bytes,
    elf: &'a ElfCore,
}

impl<'a> DumpMemory<'a> {
    /// Bytes `[addr, addr + len)` if they all lie in one PT_LOAD present in the file.
    pub fn slice(&self, addr: u64, len: u64) -> Option<&'a [u8]> {
        let l = self.elf.load_for(addr)?;
        let rel = addr - l.vaddr;
        if len > l.filesz - rel {
            return None;
        }
        let start = (l.offset + rel) as usize;
        self.map.get(start..start + len as usize)
    }

    /// Lets go of the pages mapped for `[addr, addr + len)` of one PT_LOAD (whole pages
    /// inside it only): a walk over the heap is done with them. They stay in the page cache,
    /// where the kernel can reclaim them, instead of counting as this process' mapped memory
    /// until the dump is closed, which a memory-limited analysis Job cannot afford on top of
    /// the object graph. Reading them again is still correct (they fault back in).
    #[allow(unsafe_code)]
    pub fn release(&self, addr: u64, len: u64) {
        let Bytes::Mapped(map) = self.map else { return };
        let Some(l) = self.elf.load_for(addr) else { return };
        let rel = addr - l.vaddr;
        let len = len.min(l.filesz.saturating_sub(rel));
        let start = (l.offset + rel).next_multiple_of(PAGE);
        let end = (l.offset + rel + len) & !(PAGE - 1);
        if end <= start || end as usize > map.len() {
            return;
        }
        // SAFETY: the mapping is a read-only private mapping of a file nobody writes through
        // it; MADV_DONTNEED only drops its page-table entries, and any later read of these
        // bytes (through a slice still held, say) faults the same file contents back in.
        let _ = unsafe {
            map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start as usize, (end - start) as usize)
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf::testing::core_file;

    const BASE: u64 = 0x7f00_0000_0000;
    const ELSEWHERE: u64 = 0x7f00_1000_0000;

    /// An 8.5 KiB "assembly" whose bytes say where they are.
    fn assembly() -> Vec<u8> {
        (0..8704u32).map(|i| (i % 251) as u8 + 1).collect()
    }

    /// The failing 3.1 layout: the assembly mapped over three pages, the first in the dump
    /// and the next two PT_LOADs without data; plus its second page mapped again elsewhere
    /// (file offset 4096, nothing in the dump) and a mapping of a file missing here.
    fn open(dir: &Path) -> CoreDump {
        let dll = dir.join("App.dll");
        std::fs::write(&dll, assembly()).unwrap();
        let loads = vec![(BASE, assembly()[..4096].to_vec(), 4096), (BASE + 4096, Vec::new(), 8192)];
        let dll = dll.to_str().unwrap();
        let files =
            [(BASE, BASE + 3 * 4096, 0, dll), (ELSEWHERE, ELSEWHERE + 4096, 1, dll), (0x1000, 0x2000, 0, "/gone")];
        let core = dir.join("core");
        std::fs::write(&core, core_file(&loads, &files, false)).unwrap();
        CoreDump::open(&core).unwrap()
    }

    #[test]
    fn a_read_spanning_present_and_absent_pages_is_completed_from_the_mapped_file() {
        let dir = tempfile::tempdir().unwrap();
        let core = open(dir.path());
        let mut buf = vec![0xAAu8; 3 * 4096 - 100];
        assert_eq!(core.read(BASE + 100, &mut buf), 4096 - 100, "the dump alone has the first page");
        let mut buf = vec![0xAAu8; 3 * 4096 - 100];
        assert_eq!(core.read_with_files(BASE + 100, &mut buf), buf.len());
        assert_eq!(&buf[..8604], &assembly()[100..], "the dump's page, then the file's");
        assert!(buf[8604..].iter().all(|&b| b == 0), "past the file's end its last page is zeros");

        // Starting in the absent part, and in the zeros after the file's end.
        let mut buf = [0u8; 16];
        assert_eq!(core.read_with_files(BASE + 5000, &mut buf), 16);
        assert_eq!(buf, assembly()[5000..5016]);
        assert_eq!(core.read_with_files(BASE + 9000, &mut buf), 16);
        assert_eq!(buf, [0; 16]);
        // Nothing is mapped past the three pages.
        let mut buf = [0u8; 64];
        assert_eq!(core.read_with_files(BASE + 3 * 4096 - 32, &mut buf), 32);
    }

    #[test]
    fn a_mapping_at_a_file_offset_reads_from_that_offset_and_missing_files_read_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let core = open(dir.path());
        let mut buf = [0u8; 32];
        assert_eq!(core.read_with_files(ELSEWHERE + 8, &mut buf), 32);
        assert_eq!(buf, assembly()[4096 + 8..4096 + 40]);
        assert_eq!(core.read_with_files(0x1800, &mut buf), 0, "/gone is not here");
    }

    #[test]
    fn a_replacement_file_stands_in_for_the_dumped_path() {
        let dir = tempfile::tempdir().unwrap();
        let mut core = open(dir.path());
        let local = dir.path().join("fetched.dll");
        std::fs::write(&local, vec![7u8; 4096]).unwrap();
        core.replace_file("/gone".into(), local);
        let mut buf = [0u8; 8];
        assert_eq!(core.read_with_files(0x1ff8, &mut buf), 8);
        assert_eq!(buf, [7; 8]);
    }
}
