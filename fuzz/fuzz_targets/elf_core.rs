//! The core reader's parsing of untrusted core files: ELF header (incl. PN_XNUM), program
//! headers, PT_LOAD bounds and the notes (NT_PRSTATUS, NT_FPREGSET, NT_AUXV, NT_FILE). It must
//! never panic, and what it accepts must be self-consistent.
#![no_main]

use clrdump::elf::ElfCore;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
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
