//! Instruction pointer → managed method name, from MethodLoadVerbose (code jitted during a
//! session) and the rundown's MethodDCEndVerbose (every method loaded before it).

use nettrace::events::MethodInfo;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Method {
    pub start: u64,
    pub size: u32,
    /// `Namespace.Type.Method(signature)`, the way `clrstack` prints frames.
    pub name: String,
}

/// Sorted address ranges of managed code.
#[derive(Debug, Default, Clone)]
pub struct MethodMap {
    methods: Vec<Method>,
    sorted: bool,
}

impl MethodMap {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.methods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.methods.is_empty()
    }

    pub fn add(&mut self, start: u64, size: u32, name: String) {
        if size == 0 {
            return;
        }
        self.methods.push(Method { start, size, name });
        self.sorted = false;
    }

    pub fn add_event(&mut self, m: &MethodInfo<'_>) {
        self.add(m.start_address, m.size, m.full_name());
    }

    fn ensure_sorted(&mut self) {
        if !self.sorted {
            // The same method can be reported by load and rundown: keep one range per start.
            self.methods.sort_by_key(|m| m.start);
            self.methods.dedup_by_key(|m| m.start);
            self.sorted = true;
        }
    }

    /// Finish adding; lookups need the ranges sorted.
    pub fn seal(&mut self) {
        self.ensure_sorted();
    }

    /// The method whose code contains `ip`. Call [`seal`](Self::seal) after the last `add`.
    pub fn lookup(&self, ip: u64) -> Option<&Method> {
        debug_assert!(self.sorted || self.methods.is_empty(), "MethodMap::lookup before seal");
        let i = self.methods.partition_point(|m| m.start <= ip);
        let m = self.methods.get(i.checked_sub(1)?)?;
        (ip < m.start + m.size as u64).then_some(m)
    }

    /// Frames for a stack (leaf first); runs of unknown IPs collapse into one
    /// `[native or unknown code]` frame, as dotnet-stack prints `[Native Frames]`.
    pub fn symbolize(&self, stack: &[u64]) -> Vec<String> {
        let mut out: Vec<String> = Vec::with_capacity(stack.len());
        for &ip in stack {
            match self.lookup(ip) {
                Some(m) => out.push(m.name.clone()),
                None => {
                    if out.last().map(String::as_str) != Some(UNKNOWN_FRAME) {
                        out.push(UNKNOWN_FRAME.to_string());
                    }
                }
            }
        }
        out
    }
}

pub const UNKNOWN_FRAME: &str = "[native or unknown code]";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_finds_the_containing_range_only() {
        let mut m = MethodMap::new();
        m.add(0x2000, 0x10, "B".into());
        m.add(0x1000, 0x100, "A".into());
        m.add(0x1000, 0x100, "A".into());
        m.seal();
        assert_eq!(m.len(), 1 + 1);
        assert_eq!(m.lookup(0x1000).unwrap().name, "A");
        assert_eq!(m.lookup(0x10ff).unwrap().name, "A");
        assert!(m.lookup(0x1100).is_none());
        assert!(m.lookup(0xfff).is_none());
        assert_eq!(m.lookup(0x200f).unwrap().name, "B");
        assert_eq!(m.symbolize(&[1, 2, 0x1001, 3, 0x2001]), vec![UNKNOWN_FRAME, "A", UNKNOWN_FRAME, "B"]);
    }
}
