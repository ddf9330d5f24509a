//! StackBlock decoding and the stack cache that is flushed at every sequence point.

use std::collections::HashMap;

use crate::Error;
use crate::cursor::Cursor;

/// Stacks seen since the last SPBlock, stored as one flat IP vector (widened to u64, in
/// stream order, which is leaf first) plus per-id ranges.
#[derive(Default)]
pub(crate) struct StackCache {
    ips: Vec<u64>,
    /// Id of `ranges[0]`; ids in a StackBlock run consecutively from FirstId, so the
    /// common case is a dense vector.
    base_id: u32,
    ranges: Vec<(usize, usize)>,
    /// Ids that do not continue the dense run (never produced by the runtime, but legal).
    sparse: HashMap<u32, (usize, usize)>,
}

impl StackCache {
    pub(crate) fn clear(&mut self) {
        self.ips.clear();
        self.ranges.clear();
        self.sparse.clear();
        self.base_id = 0;
    }

    /// Resolve a stack id; unknown ids and id 0 mean "no stack".
    #[inline]
    pub(crate) fn get(&self, id: u32) -> Option<&[u64]> {
        if id == 0 {
            return Some(&[]);
        }
        let range = id
            .checked_sub(self.base_id)
            .and_then(|i| self.ranges.get(i as usize).copied())
            .or_else(|| self.sparse.get(&id).copied())?;
        self.ips.get(range.0..range.0 + range.1)
    }

    /// Parse a StackBlock body and add its stacks. `max_ips` bounds the cache size.
    pub(crate) fn add_block(
        &mut self,
        body: &[u8],
        base: u64,
        pointer_size: u32,
        max_ips: usize,
    ) -> Result<u32, Error> {
        let mut c = Cursor::new(body, base);
        let first_id = c.u32("stack block first id")?;
        let count = c.u32("stack block count")?;
        let psize = pointer_size as usize;
        for i in 0..count {
            let size = c.u32("stack size")? as usize;
            let bytes = c.bytes(size, "stack bytes")?;
            if !size.is_multiple_of(psize) {
                return Err(c.err("stack size is not a multiple of the pointer size"));
            }
            if self.ips.len() + size / psize > max_ips {
                return Err(Error::LimitExceeded { what: "stack cache since the last sequence point" });
            }
            let start = self.ips.len();
            if psize == 4 {
                self.ips.extend(bytes.chunks_exact(4).map(|b| u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))));
            } else {
                self.ips.extend(
                    bytes.chunks_exact(8).map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])),
                );
            }
            let id = first_id.wrapping_add(i);
            let range = (start, size / psize);
            if self.ranges.is_empty() && self.sparse.is_empty() {
                self.base_id = id;
            }
            let next_dense = self.base_id.wrapping_add(self.ranges.len() as u32);
            if id == next_dense && id >= self.base_id {
                self.ranges.push(range);
            } else {
                self.sparse.insert(id, range);
            }
        }
        Ok(count)
    }
}
