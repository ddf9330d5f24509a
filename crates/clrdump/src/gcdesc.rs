//! A type's GCDesc, where its objects hold references: the series the runtime stores just
//! below each MethodTable (count at mt-8, then (size, offset) pairs, or, for arrays of
//! structs, a negative count and repeating (pointers, skip) items). Read once per type and
//! applied to every object of it: reading it from the dump per object cost a fifth of the
//! heap walk.

/// More series than any real type has: the word read is not a GCDesc.
const MAX_SERIES: i64 = 10_000;

/// The reference layout of one type.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum GcDesc {
    /// Runs of references: (offset of the first, run size relative to the object's size).
    Series(Vec<(i64, i64)>),
    /// Arrays of structs: from `start`, per element, (references, bytes to skip) items.
    Repeating { start: i64, items: Vec<(i64, i64)> },
}

impl GcDesc {
    /// The GCDesc of the MethodTable at `mt`, read with `read_u64`; `None` when it cannot
    /// be read or makes no sense (the type's objects then have no references we can follow).
    pub(crate) fn read(mt: u64, read_u64: impl Fn(u64) -> Option<u64>) -> Option<GcDesc> {
        let series = read_u64(mt.checked_sub(8)?)? as i64;
        let highest = mt.checked_sub(24)?;
        if series > 0 && series <= MAX_SERIES {
            let mut runs = Vec::with_capacity(series as usize);
            for i in 0..series as u64 {
                let at = highest.checked_sub(i * 16)?;
                let (size, offset) = (read_u64(at)?, read_u64(at.checked_add(8)?)?);
                runs.push((offset as i64, size as i64));
            }
            Some(GcDesc::Series(runs))
        } else if series < 0 && series > -MAX_SERIES {
            let start = read_u64(highest.checked_add(8)?)? as i64;
            let mut items = Vec::with_capacity((-series) as usize);
            for i in 0..(-series) as u64 {
                let word = read_u64(highest.checked_sub(i * 8)?)?;
                items.push(((word & 0xffff_ffff) as i64, i64::from((word >> 32) as u32)));
            }
            Some(GcDesc::Repeating { start, items })
        } else {
            None
        }
    }

    /// The non-null references of one object, given its bytes (as many as the dump has);
    /// `false` when the desc does not fit the object and its references were cut short.
    ///
    /// A desc comes from the dump and, in the parent, through the worker: nothing bounds its
    /// runs, items or offsets. A real one visits each 8-byte slot of an object at most once
    /// and has no more runs (or items per element) than slots it visits, so two steps per
    /// slot, plus a few, complete every real object; the budget bounds a hostile desc's cost
    /// (and the references it adds) by the object's size.
    pub(crate) fn references(&self, obj: &[u8], out: &mut Vec<u64>) -> bool {
        let size = obj.len() as i64;
        let mut budget = (obj.len() / 8).saturating_mul(2).saturating_add(16);
        let mut step = || {
            budget = budget.saturating_sub(1);
            budget > 0
        };
        // And at most one reference per slot.
        let room = out.len().saturating_add(obj.len() / 8);
        let mut push = |at: i64| {
            if out.len() >= room {
                return false;
            }
            if let Some(word) = usize::try_from(at).ok().and_then(|at| obj.get(at..at.checked_add(8)?))
                && let Ok(bytes) = <[u8; 8]>::try_from(word)
                && u64::from_le_bytes(bytes) != 0
            {
                out.push(u64::from_le_bytes(bytes));
            }
            true
        };
        match self {
            GcDesc::Series(runs) => {
                for &(offset, relative_size) in runs {
                    if !step() {
                        return false;
                    }
                    // Slots before the object hold nothing of it.
                    let mut at = offset.max(0);
                    let stop = offset.saturating_add(relative_size).saturating_add(size);
                    while at < stop && at < size {
                        if !step() || !push(at) {
                            return false;
                        }
                        at += 8;
                    }
                }
            }
            GcDesc::Repeating { start, items } => {
                let mut at = *start;
                while at < size - 8 {
                    let before = at;
                    for &(pointers, skip) in items {
                        if !step() {
                            return false;
                        }
                        let stop = at.saturating_add(pointers.saturating_mul(8));
                        while at < stop && at < size {
                            if !step() || !push(at) {
                                return false;
                            }
                            at += 8;
                        }
                        at = at.saturating_add(skip);
                    }
                    if at <= before {
                        break;
                    }
                }
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(words: &[u64]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    #[test]
    fn series_cover_the_fields_and_grow_with_arrays() {
        // A class with references at 8 and 16 (one run of 16 bytes, stored as 16 - size 32).
        let memory = |addr: u64| match addr {
            0x1000_0ff8 => Some(1),
            0x1000_0fe8 => Some((16i64 - 32) as u64),
            0x1000_0ff0 => Some(8),
            _ => None,
        };
        let desc = GcDesc::read(0x1000_1000, memory).unwrap();
        assert_eq!(desc, GcDesc::Series(vec![(8, -16)]));
        let mut out = Vec::new();
        desc.references(&object(&[0x1000_1000, 0xAA, 0, 7]), &mut out);
        assert_eq!(out, vec![0xAA], "null references are skipped");
    }

    #[test]
    fn repeating_items_walk_arrays_of_structs() {
        // Elements of 16 bytes: a reference then 8 bytes of data, from offset 16.
        let memory = |addr: u64| match addr {
            0x2000_0ff8 => Some((-1i64) as u64),
            0x2000_0ff0 => Some(16),
            0x2000_0fe8 => Some(1 | (8 << 32)),
            _ => None,
        };
        let desc = GcDesc::read(0x2000_1000, memory).unwrap();
        let mut out = Vec::new();
        desc.references(&object(&[0x2000_1000, 2, 0x10, 1, 0x20, 2]), &mut out);
        assert_eq!(out, vec![0x10, 0x20]);
    }

    #[test]
    fn implausible_or_unreadable_descs_are_none() {
        assert_eq!(GcDesc::read(0x1000, |_| Some(1 << 40)), None);
        assert_eq!(GcDesc::read(0x1000, |_| None), None);
        assert_eq!(GcDesc::read(4, |_| Some(1)), None);
    }
}
