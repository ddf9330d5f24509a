//! The parent's graph walk (`clrdump::heapwalk::walk_graph`, then the object graph's
//! construction) on a dump and a heap layout it cannot trust: the worker read both from the
//! dump. The input describes a core file (PT_LOADs mostly filled with objects of the layout's
//! types) and the layout (object ranges, allocation contexts, per type its sizes and GCDesc),
//! each from sane to absurd (`clrdump::testing::heap_case`). The walk must never panic or hang,
//! and may add no more objects and references than the dump's bytes allow.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    clrdump::testing::check_heap_case(data);
});
