//! The GNU build-id of an ELF image as it lies in a (dumped) process' memory: ELF header at the
//! module's base → program headers → PT_NOTE segments → the `NT_GNU_BUILD_ID` note.
//!
//! The build-id of `libcoreclr.so` names the exact runtime build, and symbol servers index the
//! matching DAC under it (the SSQP "elf-buildid-coreclr" key, [`dac_symbol_key`]). createdump
//! puts every module's program headers and PT_NOTE pages into the dump for exactly this reason,
//! so the id can be read without the runtime's files.
//!
//! Pure and panic-free on any input: the memory comes from an untrusted core file (fuzzed in
//! `fuzz/fuzz_targets/elf_core.rs`).

use crate::error::{Error, Result};

const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const NT_GNU_BUILD_ID: u32 = 3;
/// More program headers than any shared object has: a bound on what garbage makes us read.
const MAX_PHNUM: u64 = 512;
/// Build-id notes are tens of bytes; a note segment is a few hundred.
const MAX_NOTE_SEGMENT: u64 = 64 * 1024;

fn err(what: impl Into<String>) -> Error {
    Error::BuildId(what.into())
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    b.get(at..at + 2).map_or(0, |s| u16::from_le_bytes([s[0], s[1]]))
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4).and_then(|s| s.try_into().ok()).map_or(0, u32::from_le_bytes)
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8).and_then(|s| s.try_into().ok()).map_or(0, u64::from_le_bytes)
}

/// Reads `len` bytes at `addr` through `read` (which returns how many bytes it could copy).
fn read_exact(read: &mut dyn FnMut(u64, &mut [u8]) -> usize, addr: u64, len: u64, what: &str) -> Result<Vec<u8>> {
    let len = usize::try_from(len).map_err(|_| err(format!("{what}: size {len}")))?;
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        let at = addr.checked_add(done as u64).ok_or_else(|| err(format!("{what}: address overflows")))?;
        let n = read(at, &mut buf[done..]);
        if n == 0 {
            return Err(err(format!("{what} at {at:#x} is not in the dump")));
        }
        done += n.min(len - done);
    }
    Ok(buf)
}

/// The raw build-id bytes of the ELF image mapped at `base`, read through `read(addr, buf)`.
pub fn image_build_id(read: &mut dyn FnMut(u64, &mut [u8]) -> usize, base: u64) -> Result<Vec<u8>> {
    let eh = read_exact(read, base, 64, "ELF header")?;
    if &eh[..4] != b"\x7fELF" {
        return Err(err(format!("no ELF header at {base:#x}")));
    }
    if eh[4] != 2 || eh[5] != 1 {
        return Err(err("the image is not 64-bit little-endian ELF"));
    }
    let e_type = u16_at(&eh, 16);
    if e_type != 2 && e_type != 3 {
        return Err(err(format!("ELF type {e_type} is not an executable or shared object")));
    }
    let phoff = u64_at(&eh, 32);
    let phentsize = u64::from(u16_at(&eh, 54));
    let phnum = u64::from(u16_at(&eh, 56));
    if phentsize != 56 {
        return Err(err(format!("program header size {phentsize} is not 56")));
    }
    if phnum == 0 || phnum > MAX_PHNUM {
        return Err(err(format!("{phnum} program headers")));
    }
    let ph_addr = base.checked_add(phoff).ok_or_else(|| err("program header offset overflows"))?;
    let phs = read_exact(read, ph_addr, phnum * 56, "program headers")?;
    let headers: Vec<(u32, u64, u64, u64)> =
        phs.chunks_exact(56).map(|p| (u32_at(p, 0), u64_at(p, 16), u64_at(p, 40), u64_at(p, 48))).collect();
    // A shared object's addresses are relative to its load bias: base minus its lowest
    // PT_LOAD's page. An executable (ET_EXEC) is mapped at its link addresses.
    let bias = if e_type == 3 {
        let lowest = headers.iter().filter(|h| h.0 == PT_LOAD).map(|h| h.1 & !0xfff).min().unwrap_or(0);
        base.checked_sub(lowest).ok_or_else(|| err("PT_LOAD address above the module base"))?
    } else {
        0
    };
    let mut notes_seen = 0;
    for &(p_type, vaddr, memsz, align) in &headers {
        if p_type != PT_NOTE {
            continue;
        }
        notes_seen += 1;
        if memsz > MAX_NOTE_SEGMENT {
            return Err(err(format!("a PT_NOTE of {memsz} bytes")));
        }
        let at = bias.checked_add(vaddr).ok_or_else(|| err("PT_NOTE address overflows"))?;
        let data = read_exact(read, at, memsz, "PT_NOTE")?;
        if let Some(id) = find_gnu_build_id(&data, if align == 8 { 8 } else { 4 }) {
            return Ok(id.to_vec());
        }
    }
    Err(err(if notes_seen == 0 { "the image has no PT_NOTE".into() } else { "no NT_GNU_BUILD_ID note".to_string() }))
}

/// The descriptor of the `GNU` note of type NT_GNU_BUILD_ID in a note segment whose entries
/// are padded to `align` (4, or 8 for segments aligned so).
fn find_gnu_build_id(mut data: &[u8], align: usize) -> Option<&[u8]> {
    let pad = |n: usize| n.checked_add(align - 1).map(|n| n & !(align - 1));
    while data.len() >= 12 {
        let namesz = u32_at(data, 0) as usize;
        let descsz = u32_at(data, 4) as usize;
        let n_type = u32_at(data, 8);
        let desc_at = pad(namesz)?.checked_add(12)?;
        let desc_end = desc_at.checked_add(descsz)?;
        let name = data.get(12..12usize.checked_add(namesz)?)?;
        let desc = data.get(desc_at..desc_end)?;
        if n_type == NT_GNU_BUILD_ID && name == b"GNU\0" && !desc.is_empty() {
            return Some(desc);
        }
        data = data.get(pad(desc_end)?..)?;
    }
    None
}

/// The build-id of an ELF shared object on disk (a `libcoreclr.so` here): its notes lie in its
/// first segment, where file offsets are addresses.
pub fn file_build_id(path: &std::path::Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| err(format!("reading {}: {e}", path.display())))?;
    bytes_build_id(&bytes)
}

/// [`file_build_id`] of a file's bytes.
pub fn bytes_build_id(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut read = |addr: u64, buf: &mut [u8]| {
        let src = usize::try_from(addr).ok().and_then(|a| bytes.get(a..)).unwrap_or(&[]);
        let n = src.len().min(buf.len());
        buf[..n].copy_from_slice(&src[..n]);
        n
    };
    image_build_id(&mut read, 0)
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The symbol-server key of the DAC for the `libcoreclr.so` whose build-id is `build_id`
/// (SSQP "elf-buildid-coreclr": `libmscordaccore.so/elf-buildid-coreclr-<hex>/libmscordaccore.so`).
/// As the symbol store indexes them, ids of 16 to 19 bytes are zero-padded to 20; other
/// lengths have no key.
pub fn dac_symbol_key(build_id: &[u8]) -> Option<String> {
    Some(format!("libmscordaccore.so/elf-buildid-coreclr-{}/libmscordaccore.so", key_id(build_id)?))
}

/// The symbol-server key of `libcoreclr.so` itself (SSQP "elf-buildid", by its own id).
pub fn runtime_symbol_key(build_id: &[u8]) -> Option<String> {
    Some(format!("libcoreclr.so/elf-buildid-{}/libcoreclr.so", key_id(build_id)?))
}

fn key_id(build_id: &[u8]) -> Option<String> {
    if !(16..=20).contains(&build_id.len()) {
        return None;
    }
    let mut id = build_id.to_vec();
    id.resize(20, 0);
    Some(hex(&id))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal shared object image: ELF header, two program headers (PT_LOAD at 0, PT_NOTE),
    /// and a note segment holding a foreign note before the build-id.
    fn image(id: &[u8]) -> Vec<u8> {
        let mut img = vec![0u8; 0x200];
        img[..8].copy_from_slice(b"\x7fELF\x02\x01\x01\x00");
        img[16..18].copy_from_slice(&3u16.to_le_bytes());
        img[32..40].copy_from_slice(&64u64.to_le_bytes());
        img[54..56].copy_from_slice(&56u16.to_le_bytes());
        img[56..58].copy_from_slice(&2u16.to_le_bytes());
        let mut note = Vec::new();
        for (name, ty, desc) in [(&b"Go\0\0"[..], 4u32, &b"xyz"[..]), (b"GNU\0", NT_GNU_BUILD_ID, id)] {
            note.extend_from_slice(&(name.len() as u32).to_le_bytes());
            note.extend_from_slice(&(desc.len() as u32).to_le_bytes());
            note.extend_from_slice(&ty.to_le_bytes());
            note.extend_from_slice(name);
            note.extend_from_slice(desc);
            note.resize(note.len().next_multiple_of(4), 0);
        }
        let ph = |t: u32, vaddr: u64, size: u64| {
            let mut p = vec![0u8; 56];
            p[0..4].copy_from_slice(&t.to_le_bytes());
            p[16..24].copy_from_slice(&vaddr.to_le_bytes());
            p[40..48].copy_from_slice(&size.to_le_bytes());
            p[48..56].copy_from_slice(&4u64.to_le_bytes());
            p
        };
        img[64..120].copy_from_slice(&ph(PT_LOAD, 0, 0x200));
        img[120..176].copy_from_slice(&ph(PT_NOTE, 0x100, note.len() as u64));
        img[0x100..0x100 + note.len()].copy_from_slice(&note);
        img
    }

    fn reader(img: &[u8], base: u64) -> impl FnMut(u64, &mut [u8]) -> usize + '_ {
        move |addr, buf| {
            let Some(rel) = addr.checked_sub(base).and_then(|r| usize::try_from(r).ok()) else { return 0 };
            let Some(src) = img.get(rel..) else { return 0 };
            let n = src.len().min(buf.len());
            buf[..n].copy_from_slice(&src[..n]);
            n
        }
    }

    #[test]
    fn finds_the_build_id_after_other_notes_at_the_load_bias() {
        let id: Vec<u8> = (1..=20).collect();
        let img = image(&id);
        let base = 0x7f12_3456_0000;
        assert_eq!(image_build_id(&mut reader(&img, base), base).unwrap(), id);
        // Not at the base: no ELF header there.
        let e = image_build_id(&mut reader(&img, base), base + 0x1000).unwrap_err().to_string();
        assert!(e.contains("not in the dump"), "{e}");
    }

    #[test]
    fn absent_or_damaged_memory_is_a_typed_error() {
        let img = image(&[7; 20]);
        for cut in [10, 100, 0x110] {
            let e = image_build_id(&mut reader(&img[..cut], 0), 0).unwrap_err();
            assert!(matches!(e, Error::BuildId(_)), "{e}");
        }
        let mut bad = img.clone();
        bad[56..58].copy_from_slice(&0xffffu16.to_le_bytes());
        assert!(matches!(image_build_id(&mut reader(&bad, 0), 0), Err(Error::BuildId(_))));
    }

    #[test]
    fn the_dac_key_follows_the_symbol_store_convention() {
        let id = [0x18u8, 0x0a, 0x37, 0x3d, 0x6a, 0xfb, 0xab, 0xf0, 0xeb, 0x1f, 0x09, 0xbe, 0x1b, 0xc4, 0x5b, 0xd7];
        assert_eq!(
            dac_symbol_key(&id).unwrap(),
            "libmscordaccore.so/elf-buildid-coreclr-180a373d6afbabf0eb1f09be1bc45bd700000000/libmscordaccore.so",
            "16-byte ids are zero-padded to 20"
        );
        assert_eq!(
            runtime_symbol_key(&[0xab; 20]).unwrap(),
            format!("libcoreclr.so/elf-buildid-{}/libcoreclr.so", "ab".repeat(20))
        );
        assert_eq!(dac_symbol_key(&[1; 8]), None);
        assert_eq!(dac_symbol_key(&[1; 21]), None);
    }
}
