//! The core reader's parsing of untrusted core files: ELF header (incl. PN_XNUM), program
//! headers, PT_LOAD bounds and the notes (NT_PRSTATUS, NT_FPREGSET, NT_AUXV, NT_FILE); and the
//! build-id reader (`clrdump::buildid`) on the same bytes seen as a module image in memory. It
//! must never panic, and what it accepts must be self-consistent.
#![no_main]

use clrdump::elf::ElfCore;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The bytes as process memory at a page-aligned base: an ELF image header, its program
    // headers and notes, as the dump reader finds libcoreclr.so's.
    let base = 0x7f00_0000_0000u64;
    let mut read = |addr: u64, buf: &mut [u8]| {
        let Some(src) = addr.checked_sub(base).and_then(|r| usize::try_from(r).ok()).and_then(|r| data.get(r..))
        else {
            return 0;
        };
        let n = src.len().min(buf.len());
        buf[..n].copy_from_slice(&src[..n]);
        n
    };
    if let Ok(id) = clrdump::buildid::image_build_id(&mut read, base) {
        assert!(!id.is_empty() && id.len() <= data.len());
        if let Some(key) = clrdump::buildid::dac_symbol_key(&id) {
            assert_eq!(key.len(), "libmscordaccore.so/elf-buildid-coreclr-/libmscordaccore.so".len() + 40);
        }
    }
    // The same bytes as a managed assembly's first page (its PE key for the symbol server).
    let _ = clrdump::core::pe_identity(data);
    let Ok(core) = ElfCore::parse(data) else { return };
    assert!(core.required_len <= data.len() as u64);
    for w in core.loads.windows(2) {
        assert!(w[0].vaddr + w[0].filesz <= w[1].vaddr, "sorted, non-overlapping");
    }
    for l in &core.loads {
        assert!(l.offset + l.filesz <= data.len() as u64);
        let found = core.load_for(l.vaddr).expect("a load's first byte is found");
        assert_eq!(found.vaddr, l.vaddr);
        assert!(core.load_for(l.vaddr + l.filesz - 1).is_some());
    }
    for f in &core.files {
        let _ = core.module_base(clrdump::elf::file_name(&f.path));
    }
});
