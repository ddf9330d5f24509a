//! The worker's answer, as the parent reads it: the worker runs a DAC and reads a dump that may
//! both be hostile, so its output is untrusted input. Everything is bounded before use: frame
//! lengths, counts, string lengths (fuzzed in `fuzz/fuzz_targets/worker_answer.rs`).
//!
//! Layout on the worker's stdout, little-endian: `CLRDUMP4`, then a u64 length and the JSON
//! [`Confinement`] (sent before the DAC is loaded), then a u64 length and the JSON
//! [`Snapshot`].

use std::io::Read;

use crate::error::{Error, Result};
use crate::model::Snapshot;
use crate::sandbox::Confinement;

pub(crate) const MAGIC: &[u8; 8] = b"CLRDUMP4";
/// The confinement report is a few hundred bytes.
const MAX_CONFINEMENT: u64 = 64 << 10;
/// A snapshot of a large heap (its roots and layout) is hundreds of MiB at most.
pub const MAX_SNAPSHOT: u64 = 2 << 30;
const MAX_THREADS: usize = 1 << 16;
const MAX_FRAMES: usize = 100_000;
const MAX_LOCK_REFS: usize = 1 << 20;
const MAX_ITEMS: usize = 1 << 24;
const MAX_WARNINGS: usize = 10_000;
/// Type and method names with generic arguments run to a few KiB.
const MAX_STRING: usize = 64 << 10;

fn bad(what: impl std::fmt::Display) -> Error {
    Error::Worker(format!("bad worker output: {what}"))
}

/// Reads a length-prefixed JSON block of at most `max` bytes.
fn block(r: &mut impl Read, max: u64, what: &str) -> Result<Vec<u8>> {
    let mut len = [0u8; 8];
    r.read_exact(&mut len).map_err(|_| bad(format!("no {what}")))?;
    let len = u64::from_le_bytes(len);
    if len > max {
        return Err(bad(format!("{what} of {len} bytes (at most {max})")));
    }
    // Grown as bytes arrive: a length alone reserves nothing.
    let mut buf = Vec::new();
    r.take(len).read_to_end(&mut buf).map_err(|e| bad(format!("{what}: {e}")))?;
    if buf.len() as u64 != len {
        return Err(bad(format!("short {what}: {} of {len} bytes", buf.len())));
    }
    Ok(buf)
}

/// The magic and the confinement report.
pub(crate) fn read_confinement(r: &mut impl Read) -> Result<Confinement> {
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).map_err(|_| bad("no header"))?;
    if &magic != MAGIC {
        return Err(bad("wrong magic"));
    }
    let json = block(r, MAX_CONFINEMENT, "confinement report")?;
    serde_json::from_slice(&json).map_err(|e| bad(format!("confinement report: {e}")))
}

/// The snapshot, validated.
pub(crate) fn read_snapshot(r: &mut impl Read) -> Result<Snapshot> {
    let json = block(r, MAX_SNAPSHOT, "snapshot")?;
    let s: Snapshot = serde_json::from_slice(&json).map_err(|e| bad(format!("snapshot: {e}")))?;
    validate(&s)?;
    Ok(s)
}

/// Both parts of a whole answer (what the fuzz target drives).
pub fn parse_answer(mut bytes: &[u8]) -> Result<(Confinement, Snapshot)> {
    let c = read_confinement(&mut bytes)?;
    let s = read_snapshot(&mut bytes)?;
    Ok((c, s))
}

fn count(what: &str, n: usize, max: usize) -> Result<()> {
    if n > max { Err(bad(format!("{n} {what} (at most {max})"))) } else { Ok(()) }
}

fn string(what: &str, s: &str) -> Result<()> {
    if s.len() > MAX_STRING {
        Err(bad(format!("a {what} of {} bytes (at most {MAX_STRING})", s.len())))
    } else {
        Ok(())
    }
}

/// Counts and string lengths within what a real runtime produces.
pub fn validate(s: &Snapshot) -> Result<()> {
    count("threads", s.threads.len(), MAX_THREADS)?;
    for t in &s.threads {
        count("frames in a thread", t.frames.len(), MAX_FRAMES)?;
        count("lock references in a thread", t.lock_refs.len(), MAX_LOCK_REFS)?;
        for f in &t.frames {
            string("frame name", &f.name)?;
        }
    }
    count("sync blocks", s.sync_blocks.len(), MAX_ITEMS)?;
    for b in &s.sync_blocks {
        string("lock's type name", &b.object_type)?;
    }
    count("types", s.types.len(), MAX_ITEMS)?;
    for t in &s.types {
        string("type name", &t.name)?;
    }
    count("roots", s.roots.len(), 1 << 28)?;
    for r in &s.roots {
        if let crate::model::RootSource::Static { type_name, field_name } = &r.kind {
            string("static's type name", type_name)?;
            string("field name", field_name)?;
        }
    }
    count("heap ranges", s.heap.ranges.len(), MAX_ITEMS)?;
    count("warnings", s.warnings.len(), MAX_WARNINGS)?;
    for w in &s.warnings {
        string("warning", w)?;
    }
    count("phases", s.phases.len(), 1000)?;
    for p in &s.phases {
        string("phase name", &p.name)?;
    }
    if let Some(v) = &s.runtime_version
        && v.len() > 256
    {
        return Err(bad(format!("a runtime version of {} bytes", v.len())));
    }
    if let Some(layout) = &s.layout {
        layout.check_counts(s.types.len()).map_err(bad)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::Layer;

    fn answer(c: &Confinement, s: &Snapshot) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        for json in [serde_json::to_vec(c).unwrap(), serde_json::to_vec(s).unwrap()] {
            out.extend_from_slice(&(json.len() as u64).to_le_bytes());
            out.extend_from_slice(&json);
        }
        out
    }

    fn snapshot() -> Snapshot {
        serde_json::from_value(serde_json::json!({
            "runtime_version": "8.0.4", "dac_revision": 1, "threads": [], "sync_blocks": [],
            "heap": {"server_gc": false, "regions": true, "structures_valid": true, "segments": 1, "objects": 0,
                     "bytes": 0, "free_objects": 0, "free_bytes": 0, "walked_bytes": 0, "resyncs": 0, "ranges": []},
            "types": [], "roots": [], "finalizer_thread": null, "warnings": []
        }))
        .unwrap()
    }

    #[test]
    fn a_well_formed_answer_parses_and_damage_is_a_typed_error() {
        let c = Confinement::off();
        let good = answer(&c, &snapshot());
        let (c2, s2) = parse_answer(&good).unwrap();
        assert_eq!((c2, s2.runtime_version.as_deref()), (c, Some("8.0.4")));
        for cut in [0, 4, 8, 12, 20, good.len() - 1] {
            assert!(matches!(parse_answer(&good[..cut]), Err(Error::Worker(_))), "cut at {cut}");
        }
        let mut huge = good.clone();
        huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        let e = parse_answer(&huge).unwrap_err().to_string();
        assert!(e.contains("at most"), "{e}");
    }

    #[test]
    fn oversized_strings_and_counts_are_refused() {
        let c = Confinement { landlock: Layer::Enforced("ABI 7".into()), ..Confinement::off() };
        let mut s = snapshot();
        s.warnings = vec!["x".repeat(MAX_STRING + 1)];
        assert!(parse_answer(&answer(&c, &s)).unwrap_err().to_string().contains("warning of"));
        let mut s = snapshot();
        s.warnings = vec![String::new(); MAX_WARNINGS + 1];
        assert!(parse_answer(&answer(&c, &s)).unwrap_err().to_string().contains("warnings"));
        let mut s = snapshot();
        s.runtime_version = Some("9".repeat(300));
        assert!(parse_answer(&answer(&c, &s)).is_err());
    }
}
