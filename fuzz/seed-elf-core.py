#!/usr/bin/env python3
"""Seed the (git-ignored) corpus of the `elf_core` target with small but well-formed cores.

Usage: fuzz/seed-elf-core.py [real-core | libcoreclr.so ...]

Always writes a synthetic core (PRSTATUS, FPREGSET, AUXV, FILE notes, three PT_LOADs, one of
them with p_filesz = 0 as 3.1 writes them) and its PN_XNUM variant. Each real core given
(e.g. from `dumpwatch dump`) is shrunk: headers and notes kept, every PT_LOAD cut to at most
64 bytes, so the fuzzer starts from createdump's real note layout. The same target reads the
bytes as a module image for its GNU build-id: a synthetic shared object is written, and each
`*.so` given is cut to its first 4 KiB (ELF header, program headers, notes).
"""
import os
import struct
import sys

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "elf_core")


def note(ntype, desc, name=b"CORE\0"):
    pad = lambda b: b + b"\0" * (-len(b) % 4)
    return struct.pack("<III", len(name), len(desc), ntype) + pad(name) + pad(desc)


def ehdr(phoff, phnum, shoff=0, shnum=0):
    ident = b"\x7fELF" + bytes([2, 1, 1, 3]) + b"\0" * 8
    return ident + struct.pack("<HHIQQQIHHHHHH", 4, 62, 1, 0, phoff, shoff, 0, 64, 56, phnum, 64, shnum, 0)


def phdr(ptype, flags, off, vaddr, filesz, memsz):
    return struct.pack("<IIQQQQQQ", ptype, flags, off, vaddr, 0, filesz, memsz, 4096)


def build(loads, notes, xnum=False):
    """loads: [(vaddr, data, memsz)]; returns core bytes."""
    nph = 1 + len(loads)
    phoff = 64 + (64 if xnum else 0)
    notes_off = phoff + 56 * nph
    data_off = notes_off + len(notes)
    phs = [phdr(4, 0, notes_off, 0, len(notes), 0)]
    blobs = b""
    for vaddr, data, memsz in loads:
        phs.append(phdr(1, 6, data_off + len(blobs), vaddr, len(data), memsz))
        blobs += data
    if xnum:
        head = ehdr(phoff, 0xFFFF, 64, 1) + struct.pack("<IIQQQQIIQQ", 0, 0, 0, 0, 0, 1, 0, nph, 0, 0)
    else:
        head = ehdr(phoff, nph)
    return head + b"".join(phs) + notes + blobs


def synthetic():
    prstatus = bytearray(336)
    struct.pack_into("<i", prstatus, 32, 4242)
    for i in range(27):
        struct.pack_into("<Q", prstatus, 112 + i * 8, 0x1000 * (i + 1))
    auxv = struct.pack("<QQQQ", 7, 0x7F0000000000, 0, 0)
    paths = [b"/usr/share/dotnet/shared/Microsoft.NETCore.App/8.0.4/libcoreclr.so", b"/app/App.dll"]
    nt_file = struct.pack("<QQ", 2, 4096)
    nt_file += struct.pack("<QQQ", 0x7F1000000000, 0x7F1000010000, 0)
    nt_file += struct.pack("<QQQ", 0x7F2000000000, 0x7F2000001000, 0)
    nt_file += b"\0".join(paths) + b"\0"
    notes = note(1, bytes(prstatus)) + note(2, bytes(512)) + note(6, auxv) + note(0x46494C45, nt_file)
    loads = [(0x7F1000000000, b"@(#)Version 8.0.424.16909 @Commit: x\0", 0x10000),
             (0x7F2000000000, b"", 0x1000),
             (0x7F3000000000, bytes(range(64)), 64)]
    return notes, loads


def image():
    """A shared object's first bytes: ELF header, PT_LOAD + PT_NOTE, a GNU build-id note."""
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + b"\0" * 8
    head = ident + struct.pack("<HHIQQQIHHHHHH", 3, 62, 1, 0, 64, 0, 0, 64, 56, 2, 64, 0, 0)
    notes = note(3, bytes(range(20)), b"GNU\0")
    phs = struct.pack("<IIQQQQQQ", 1, 5, 0, 0, 0, 0x1000, 0x1000, 0x1000)
    phs += struct.pack("<IIQQQQQQ", 4, 4, 176, 176, 176, len(notes), len(notes), 4)
    return head + phs + notes


def shrink(path):
    with open(path, "rb") as f:
        data = f.read()
    phoff, = struct.unpack_from("<Q", data, 32)
    phnum, = struct.unpack_from("<H", data, 56)
    if phnum == 0xFFFF:
        shoff, = struct.unpack_from("<Q", data, 40)
        phnum, = struct.unpack_from("<I", data, shoff + 44)
    notes, loads = b"", []
    for i in range(phnum):
        t, fl, off, va, pa, fs, ms, al = struct.unpack_from("<IIQQQQQQ", data, phoff + i * 56)
        if t == 4:
            notes += data[off:off + fs]
        elif t == 1 and len(loads) < 200:
            loads.append((va, data[off:off + min(fs, 64)], ms))
    return notes, loads


def main():
    os.makedirs(OUT, exist_ok=True)
    seeds = {"synthetic": synthetic()}
    with open(os.path.join(OUT, "image-synthetic"), "wb") as f:
        f.write(image())
    for p in [p for p in sys.argv[1:] if p.endswith(".so")]:
        with open(p, "rb") as src, open(os.path.join(OUT, "image-" + os.path.basename(p)), "wb") as f:
            f.write(src.read(4096))
    for p in [p for p in sys.argv[1:] if not p.endswith(".so")]:
        seeds["shrunk-" + os.path.basename(os.path.dirname(os.path.abspath(p))) + "-" + os.path.basename(p)] = shrink(p)
    for name, (notes, loads) in seeds.items():
        for xnum in (False, True):
            with open(os.path.join(OUT, name + ("-xnum" if xnum else "")), "wb") as f:
                f.write(build(loads, notes, xnum))
    print(f"seeded {len(os.listdir(OUT))} inputs into {OUT}")


main()
