//! ELF core parsing over a byte slice (the caller maps the file): program headers (with the
//! PN_XNUM extension createdump uses for > 65 534 segments), PT_LOAD memory, and the notes we
//! need (NT_PRSTATUS thread registers, NT_AUXV, NT_FILE module map).
//!
//! Pure and panic-free on any input: it is fuzzed (`fuzz/fuzz_targets/elf_core.rs`).

use crate::error::{Error, Result};

const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const NT_PRSTATUS: u32 = 1;
const NT_FPREGSET: u32 = 2;
const NT_AUXV: u32 = 6;
const NT_FILE: u32 = 0x4649_4c45;
const PN_XNUM: u16 = 0xffff;
/// `elf_prstatus` on x86-64: `pr_pid` at 32, `pr_reg` (27 × u64) at 112.
const PRSTATUS_PID: usize = 32;
const PRSTATUS_REG: usize = 112;
const PRSTATUS_SIZE: usize = PRSTATUS_REG + 27 * 8;

/// One PT_LOAD: `[vaddr, vaddr + filesz)` is in the file at `offset`. Bytes between
/// `filesz` and `memsz` are *absent* (3.1 dumps list every mapping with `filesz = 0`), not zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Load {
    /// Start address.
    pub vaddr: u64,
    /// File offset of the first byte.
    pub offset: u64,
    /// Bytes present in the file.
    pub filesz: u64,
    /// Size of the mapping in the process.
    pub memsz: u64,
    /// PF_X = 1, PF_W = 2, PF_R = 4.
    pub flags: u32,
}

/// A thread's registers from NT_PRSTATUS (`user_regs_struct` order, 27 registers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadRegs {
    /// Kernel thread id (`pr_pid`): the runtime's OS thread id.
    pub tid: u32,
    /// `user_regs_struct`: r15, r14, r13, r12, rbp, rbx, r11, r10, r9, r8, rax, rcx, rdx, rsi,
    /// rdi, orig_rax, rip, cs, eflags, rsp, ss, fs_base, gs_base, ds, es, fs, gs.
    pub regs: [u64; 27],
    /// The FXSAVE image from NT_FPREGSET, if present.
    pub fpregs: Option<Vec<u8>>,
}

/// One NT_FILE entry: `[start, end)` maps `path` from byte `file_offset`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileMapping {
    /// Start address.
    pub start: u64,
    /// End address (exclusive).
    pub end: u64,
    /// Offset in the file, in bytes.
    pub file_offset: u64,
    /// The mapped file's path in the dumped process' mount namespace.
    pub path: String,
}

/// The parsed structure of a core file (no memory copied).
#[derive(Clone, Debug, Default)]
pub struct ElfCore {
    /// PT_LOADs with data in the file, sorted by address, non-overlapping.
    pub loads: Vec<Load>,
    /// Threads in note order.
    pub threads: Vec<ThreadRegs>,
    /// NT_FILE entries.
    pub files: Vec<FileMapping>,
    /// NT_AUXV (type, value) pairs.
    pub auxv: Vec<(u64, u64)>,
    /// Bytes the headers say the file must have (max end of PT_LOAD / PT_NOTE data).
    pub required_len: u64,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at.checked_add(2)?)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at.checked_add(4)?)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at.checked_add(8)?)?.try_into().ok()?))
}

fn corrupt(what: &str) -> Error {
    Error::Corrupt(what.to_string())
}

impl ElfCore {
    /// Parses headers and notes. A file shorter than its PT_LOADs promise is
    /// [`Error::Truncated`]; memory is not touched beyond the headers and notes.
    pub fn parse(file: &[u8]) -> Result<ElfCore> {
        if file.len() < 64 || &file[..4] != b"\x7fELF" {
            return Err(Error::NotACore("no ELF magic".into()));
        }
        if file[4] != 2 || file[5] != 1 {
            return Err(Error::NotACore("not 64-bit little-endian".into()));
        }
        let e_type = u16_at(file, 16).unwrap_or(0);
        let machine = u16_at(file, 18).unwrap_or(0);
        if e_type != 4 {
            return Err(Error::NotACore(format!("ELF type {e_type} is not ET_CORE")));
        }
        if machine != 62 {
            return Err(Error::NotACore(format!("machine {machine} is not x86-64")));
        }
        let phoff = u64_at(file, 32).ok_or_else(|| corrupt("header"))?;
        let shoff = u64_at(file, 40).ok_or_else(|| corrupt("header"))?;
        let phentsize = u16_at(file, 54).ok_or_else(|| corrupt("header"))? as usize;
        let mut phnum = u16_at(file, 56).ok_or_else(|| corrupt("header"))? as usize;
        if phentsize != 56 {
            return Err(corrupt("program header entry size is not 56"));
        }
        if phnum == PN_XNUM as usize {
            // The real count is in section header 0's sh_info.
            let sh = usize::try_from(shoff).map_err(|_| corrupt("section header offset"))?;
            phnum =
                u32_at(file, sh.saturating_add(44)).ok_or_else(|| corrupt("PN_XNUM section header missing"))? as usize;
        }
        let phoff = usize::try_from(phoff).map_err(|_| corrupt("program header offset"))?;
        let table_end = phnum.checked_mul(56).and_then(|n| n.checked_add(phoff)).ok_or_else(|| corrupt("phnum"))?;
        if table_end > file.len() {
            return Err(Error::Truncated { expected: table_end as u64, actual: file.len() as u64 });
        }

        let mut core = ElfCore::default();
        let mut notes = Vec::new();
        for i in 0..phnum {
            let ph = &file[phoff + i * 56..phoff + (i + 1) * 56];
            let p_type = u32_at(ph, 0).unwrap_or(0);
            let flags = u32_at(ph, 4).unwrap_or(0);
            let offset = u64_at(ph, 8).unwrap_or(0);
            let vaddr = u64_at(ph, 16).unwrap_or(0);
            let filesz = u64_at(ph, 32).unwrap_or(0);
            let memsz = u64_at(ph, 40).unwrap_or(0);
            let end = offset.checked_add(filesz).ok_or_else(|| corrupt("segment offset overflows"))?;
            match p_type {
                PT_LOAD if filesz > 0 => {
                    if vaddr.checked_add(filesz).is_none() {
                        return Err(corrupt("segment address overflows"));
                    }
                    core.required_len = core.required_len.max(end);
                    core.loads.push(Load { vaddr, offset, filesz, memsz, flags });
                }
                PT_NOTE => {
                    core.required_len = core.required_len.max(end);
                    notes.push((offset, filesz));
                }
                _ => {}
            }
        }
        if core.required_len > file.len() as u64 {
            return Err(Error::Truncated { expected: core.required_len, actual: file.len() as u64 });
        }
        core.loads.sort_by_key(|l| l.vaddr);
        if core.loads.windows(2).any(|w| w[0].vaddr + w[0].filesz > w[1].vaddr) {
            return Err(corrupt("overlapping PT_LOAD segments"));
        }
        for (offset, size) in notes {
            // In bounds: checked against required_len above.
            let data = &file[offset as usize..(offset + size) as usize];
            core.parse_notes(data)?;
        }
        Ok(core)
    }

    fn parse_notes(&mut self, mut data: &[u8]) -> Result<()> {
        let align4 = |n: usize| n.checked_add(3).map(|n| n & !3);
        while data.len() >= 12 {
            let namesz = u32_at(data, 0).unwrap_or(0) as usize;
            let descsz = u32_at(data, 4).unwrap_or(0) as usize;
            let n_type = u32_at(data, 8).unwrap_or(0);
            let desc_at = align4(namesz).and_then(|n| n.checked_add(12)).ok_or_else(|| corrupt("note name size"))?;
            let next = align4(descsz).and_then(|d| d.checked_add(desc_at)).ok_or_else(|| corrupt("note size"))?;
            let desc = data
                .get(desc_at..desc_at.checked_add(descsz).ok_or_else(|| corrupt("note size"))?)
                .ok_or_else(|| corrupt("note runs past its segment"))?;
            match n_type {
                NT_PRSTATUS => self.threads.push(parse_prstatus(desc)?),
                NT_FPREGSET => {
                    if let Some(t) = self.threads.last_mut() {
                        t.fpregs = Some(desc.to_vec());
                    }
                }
                NT_AUXV => {
                    self.auxv =
                        desc.chunks_exact(16).map(|c| (u64_at(c, 0).unwrap_or(0), u64_at(c, 8).unwrap_or(0))).collect()
                }
                NT_FILE => self.files = parse_nt_file(desc)?,
                _ => {}
            }
            data = data.get(next..).unwrap_or(&[]);
        }
        Ok(())
    }

    /// The PT_LOAD holding `addr`, if its bytes are in the file.
    pub fn load_for(&self, addr: u64) -> Option<&Load> {
        let i = self.loads.partition_point(|l| l.vaddr <= addr);
        let l = self.loads.get(i.checked_sub(1)?)?;
        (addr - l.vaddr < l.filesz).then_some(l)
    }

    /// The first PT_LOAD with data that starts after `addr`.
    pub fn next_load_after(&self, addr: u64) -> Option<&Load> {
        self.loads.get(self.loads.partition_point(|l| l.vaddr <= addr))
    }

    /// Lowest start address of a file mapping at offset 0 whose file name is `name`.
    pub fn module_base(&self, name: &str) -> Option<u64> {
        self.files.iter().filter(|f| f.file_offset == 0 && file_name(&f.path) == name).map(|f| f.start).min()
    }

    /// Every file mapping of the module whose file name is `name`.
    pub fn module_mappings<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a FileMapping> + 'a {
        self.files.iter().filter(move |f| file_name(&f.path) == name)
    }
}

/// The last path component.
pub fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn parse_prstatus(desc: &[u8]) -> Result<ThreadRegs> {
    if desc.len() < PRSTATUS_SIZE {
        return Err(corrupt("NT_PRSTATUS too short"));
    }
    let tid = u32_at(desc, PRSTATUS_PID).unwrap_or(0);
    let mut regs = [0u64; 27];
    for (i, r) in regs.iter_mut().enumerate() {
        *r = u64_at(desc, PRSTATUS_REG + i * 8).unwrap_or(0);
    }
    Ok(ThreadRegs { tid, regs, fpregs: None })
}

fn parse_nt_file(desc: &[u8]) -> Result<Vec<FileMapping>> {
    let count = u64_at(desc, 0).ok_or_else(|| corrupt("NT_FILE header"))?;
    let page = u64_at(desc, 8).ok_or_else(|| corrupt("NT_FILE header"))?;
    let count = usize::try_from(count).map_err(|_| corrupt("NT_FILE count"))?;
    let names_at = count.checked_mul(24).and_then(|n| n.checked_add(16)).ok_or_else(|| corrupt("NT_FILE count"))?;
    let mut names =
        desc.get(names_at..).ok_or_else(|| corrupt("NT_FILE entries run past the note"))?.split(|&b| b == 0);
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let at = 16 + i * 24;
        let start = u64_at(desc, at).unwrap_or(0);
        let end = u64_at(desc, at + 8).unwrap_or(0);
        let pgoff = u64_at(desc, at + 16).unwrap_or(0);
        let name = names.next().ok_or_else(|| corrupt("NT_FILE has fewer names than entries"))?;
        out.push(FileMapping {
            start,
            end,
            file_offset: pgoff.saturating_mul(page),
            path: String::from_utf8_lossy(name).into_owned(),
        });
    }
    Ok(out)
}

/// Builds small core files for tests and fuzzing.
#[cfg(any(test, feature = "testing"))]
pub(crate) mod testing {
    use super::*;

    fn note(ntype: u32, desc: &[u8]) -> Vec<u8> {
        let mut n = Vec::new();
        n.extend_from_slice(&5u32.to_le_bytes());
        n.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        n.extend_from_slice(&ntype.to_le_bytes());
        n.extend_from_slice(b"CORE\0\0\0\0");
        n.extend_from_slice(desc);
        n.resize(n.len().next_multiple_of(4), 0);
        n
    }

    /// A core with one thread (tid 4242, rip 0xdeadbeef), the PT_LOADs `(vaddr, present
    /// bytes, memsz)` and the NT_FILE mappings `(start, end, page offset, path)`; with
    /// `xnum` the program header count is in section header 0 (PN_XNUM).
    pub(crate) fn core_file(loads: &[(u64, Vec<u8>, usize)], files: &[(u64, u64, u64, &str)], xnum: bool) -> Vec<u8> {
        let mut prstatus = vec![0u8; PRSTATUS_SIZE];
        prstatus[PRSTATUS_PID..PRSTATUS_PID + 4].copy_from_slice(&4242u32.to_le_bytes());
        prstatus[PRSTATUS_REG + 16 * 8..PRSTATUS_REG + 17 * 8].copy_from_slice(&0xdead_beefu64.to_le_bytes());
        let mut nt_file = Vec::new();
        for v in [files.len() as u64, 4096] {
            nt_file.extend_from_slice(&v.to_le_bytes());
        }
        for &(start, end, pgoff, _) in files {
            for v in [start, end, pgoff] {
                nt_file.extend_from_slice(&v.to_le_bytes());
            }
        }
        for &(_, _, _, path) in files {
            nt_file.extend_from_slice(path.as_bytes());
            nt_file.push(0);
        }
        let notes = [note(NT_PRSTATUS, &prstatus), note(NT_FILE, &nt_file)].concat();
        let phnum = loads.len() + 1;
        let phoff = if xnum { 128 } else { 64 };
        let notes_off = phoff + phnum * 56;
        let mut out = vec![0u8; 64];
        out[..8].copy_from_slice(b"\x7fELF\x02\x01\x01\x03");
        out[16..18].copy_from_slice(&4u16.to_le_bytes());
        out[18..20].copy_from_slice(&62u16.to_le_bytes());
        out[32..40].copy_from_slice(&(phoff as u64).to_le_bytes());
        out[54..56].copy_from_slice(&56u16.to_le_bytes());
        if xnum {
            out[40..48].copy_from_slice(&64u64.to_le_bytes());
            out[56..58].copy_from_slice(&PN_XNUM.to_le_bytes());
            let mut sh = vec![0u8; 64];
            sh[44..48].copy_from_slice(&(phnum as u32).to_le_bytes());
            out.extend_from_slice(&sh);
        } else {
            out[56..58].copy_from_slice(&(phnum as u16).to_le_bytes());
        }
        let ph = |t: u32, off: usize, vaddr: u64, filesz: usize, memsz: usize| {
            let mut p = vec![0u8; 56];
            p[0..4].copy_from_slice(&t.to_le_bytes());
            p[8..16].copy_from_slice(&(off as u64).to_le_bytes());
            p[16..24].copy_from_slice(&vaddr.to_le_bytes());
            p[32..40].copy_from_slice(&(filesz as u64).to_le_bytes());
            p[40..48].copy_from_slice(&(memsz as u64).to_le_bytes());
            p
        };
        out.extend(ph(PT_NOTE, notes_off, 0, notes.len(), 0));
        let mut data_off = notes_off + notes.len();
        for (vaddr, data, memsz) in loads {
            out.extend(ph(PT_LOAD, data_off, *vaddr, data.len(), *memsz));
            data_off += data.len();
        }
        out.extend(notes);
        for (_, data, _) in loads {
            out.extend_from_slice(data);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_non_elf_and_short_input() {
        assert!(matches!(ElfCore::parse(b""), Err(Error::NotACore(_))));
        assert!(matches!(ElfCore::parse(&[0u8; 100]), Err(Error::NotACore(_))));
    }

    /// A minimal core: one thread, NT_FILE with libcoreclr, one 64-byte PT_LOAD and one
    /// PT_LOAD without file data (as 3.1 writes them); optionally with PN_XNUM.
    fn synthetic(xnum: bool) -> Vec<u8> {
        let mut loads = vec![(0x7f00_0000_0000, (0..64u8).collect::<Vec<_>>(), 0x1000)];
        loads.push((0x7f00_0000_1000, Vec::new(), 0x1000));
        testing::core_file(&loads, &[(0x7f00_0000_0000, 0x7f00_0001_0000, 0, "/rt/libcoreclr.so")], xnum)
    }

    #[test]
    fn parses_threads_files_and_loads_with_and_without_pn_xnum() {
        for xnum in [false, true] {
            let bytes = synthetic(xnum);
            let core = ElfCore::parse(&bytes).unwrap();
            assert_eq!(core.threads.len(), 1);
            assert_eq!(core.threads[0].tid, 4242);
            assert_eq!(core.threads[0].regs[16], 0xdead_beef, "rip");
            assert_eq!(core.module_base("libcoreclr.so"), Some(0x7f00_0000_0000));
            assert_eq!(core.loads.len(), 1, "the PT_LOAD without file data is absent memory");
            assert!(core.load_for(0x7f00_0000_003f).is_some());
            assert!(core.load_for(0x7f00_0000_0040).is_none(), "past p_filesz");
            assert!(core.load_for(0x7f00_0000_1000).is_none());
            let cut = &bytes[..bytes.len() - 1];
            assert!(matches!(ElfCore::parse(cut), Err(Error::Truncated { .. })));
        }
    }

    #[test]
    fn nt_file_names_must_match_count() {
        let mut d = Vec::new();
        d.extend_from_slice(&2u64.to_le_bytes());
        d.extend_from_slice(&4096u64.to_le_bytes());
        for _ in 0..2 {
            d.extend_from_slice(&[0u8; 24]);
        }
        d.extend_from_slice(b"/a");
        // Two entries but only one name.
        assert!(matches!(parse_nt_file(&d), Err(Error::Corrupt(_))));
    }
}
