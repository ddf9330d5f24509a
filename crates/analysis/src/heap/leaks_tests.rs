use super::*;
use crate::heap::ObjectGraphBuilder;

/// Builds heaps object by object: `obj` returns the new object's address; references are
/// given up front, so objects are added children first.
struct Heap {
    b: ObjectGraphBuilder,
    next: u64,
    types: HashMap<String, u64>,
}

impl Heap {
    fn new() -> Self {
        Heap { b: ObjectGraphBuilder::new(), next: 0x1000, types: HashMap::new() }
    }

    fn ty(&mut self, name: &str) -> u64 {
        let n = self.types.len() as u64 + 1;
        let id = *self.types.entry(name.to_string()).or_insert(n);
        self.b.add_type(id, name);
        id
    }

    fn obj(&mut self, type_name: &str, size: u64, refs: &[u64]) -> u64 {
        let t = self.ty(type_name);
        let at = self.next;
        self.next += size.max(8);
        self.b.add_node(at, size, t, refs.len() as u64);
        for &r in refs {
            self.b.add_edge(r);
        }
        at
    }

    /// An object whose references are filled in later (for cycles).
    fn reserve(&mut self, size: u64) -> u64 {
        let at = self.next;
        self.next += size.max(8);
        at
    }

    fn obj_at(&mut self, at: u64, type_name: &str, size: u64, refs: &[u64]) {
        let t = self.ty(type_name);
        self.b.add_node(at, size, t, refs.len() as u64);
        for &r in refs {
            self.b.add_edge(r);
        }
    }

    fn static_root(&mut self, object: u64, declaring: &str, field: &str) {
        let t = self.ty(declaring);
        self.b.add_static_root(object, t, field);
    }

    fn finish(self) -> (ObjectGraph, u64) {
        let g = self.b.finish().unwrap();
        let total = g.histogram().total_bytes();
        (g, total)
    }
}

fn suspects(heap: Heap) -> Vec<LeakSuspect> {
    let (g, total) = heap.finish();
    let r = g.retained_sizes();
    leak_suspects(&g, &r, total, &LeakThresholds::default())
}

/// `static App.Catalog.Changed` → `EventHandler` → `Object[]` → n × (`EventHandler` → `Observer`
/// → `Byte[]`).
fn event(h: &mut Heap, n: u64, payload: u64) {
    let handlers: Vec<u64> = (0..n)
        .map(|_| {
            let bytes = h.obj("System.Byte[]", payload, &[]);
            let observer = h.obj("App.Observer", 24, &[bytes]);
            h.obj("System.EventHandler", 64, &[observer])
        })
        .collect();
    let list = h.obj("System.Object[]", 32 + 8 * n, &handlers);
    let multicast = h.obj("System.EventHandler", 64, &[list]);
    h.static_root(multicast, "App.Catalog", "Changed");
}

#[test]
fn an_event_with_many_handlers_names_the_event_and_the_subscriber() {
    let mut h = Heap::new();
    event(&mut h, 3000, 100);
    let s = suspects(h);
    assert_eq!(s.len(), 1, "{s:#?}");
    let e = &s[0];
    assert_eq!(e.pattern, LeakPattern::EventHandlers);
    assert_eq!(e.confidence, Confidence::High);
    assert_eq!(e.type_name, "App.Observer");
    assert_eq!(e.instances, 3000);
    assert_eq!(e.holder, "static event App.Catalog.Changed");
    assert_eq!(e.retained_bytes, 3000 * (64 + 24 + 100));
    assert_eq!(e.path, ["System.EventHandler", "System.Object[]", "System.EventHandler", "App.Observer"]);
    assert_eq!(
        e.reason,
        "3,000 `App.Observer` objects are reachable only through the invocation list of static event \
         App.Catalog.Changed (3,000 handlers of type `System.EventHandler`): handlers added and never removed"
    );
}

#[test]
fn an_event_with_a_few_handlers_is_silent() {
    let mut h = Heap::new();
    event(&mut h, 200, 100_000);
    assert!(suspects(h).is_empty());
}

#[test]
fn an_event_of_a_long_lived_object_names_its_declaring_type() {
    let mut h = Heap::new();
    let handlers: Vec<u64> = (0..1500)
        .map(|_| {
            let o = h.obj("App.Listener", 24, &[]);
            h.obj("System.Action<System.Int32>", 64, &[o])
        })
        .collect();
    let list = h.obj("System.Object[]", 32 + 8 * 1500, &handlers);
    let multicast = h.obj("System.Action<System.Int32>", 64, &[list]);
    let bus = h.obj("App.Bus", 24, &[multicast]);
    h.static_root(bus, "App.Bus", "Instance");
    let s = suspects(h);
    assert_eq!(s[0].pattern, LeakPattern::EventHandlers);
    assert_eq!(s[0].holder, "an event of App.Bus (static App.Bus.Instance → App.Bus)");
    assert_eq!(s[0].type_name, "App.Listener");
}

/// A static list of `count` `Order`s (with a `Byte[]` each) under `declaring.field`.
fn order_list(h: &mut Heap, declaring: &str, field: &str, count: u64, payload: u64) {
    let orders: Vec<u64> = (0..count)
        .map(|_| {
            let b = h.obj("System.Byte[]", payload, &[]);
            h.obj("App.Order", 32, &[b])
        })
        .collect();
    let array = h.obj("App.Order[]", 32 + 8 * count, &orders);
    let list = h.obj("System.Collections.Generic.List<App.Order>", 32, &[array]);
    h.static_root(list, declaring, field);
}

#[test]
fn one_type_under_two_holders_is_two_suspects_with_their_own_counts() {
    let mut h = Heap::new();
    order_list(&mut h, "App.OrderBook", "Open", 6000, 3000);
    order_list(&mut h, "App.Archive", "Closed", 4000, 3000);
    let s = suspects(h);
    let found: Vec<(&str, u64, &str)> =
        s.iter().map(|x| (x.type_name.as_str(), x.instances, x.holder.as_str())).collect();
    assert_eq!(
        found,
        [
            ("App.Order", 6000, "static App.OrderBook.Open → System.Collections.Generic.List<App.Order> → App.Order[]"),
            ("App.Order", 4000, "static App.Archive.Closed → System.Collections.Generic.List<App.Order> → App.Order[]"),
        ]
    );
    assert!(s.iter().all(|x| x.pattern == LeakPattern::Collection && x.confidence == Confidence::Low));
    assert_eq!(s[0].retained_bytes, 6000 * 3032);
    assert!(
        s[0].reason.starts_with("6,000 `App.Order` objects retain 17.3 MiB (60 % of the heap) and are kept by static")
    );
}

#[test]
fn closures_name_what_they_capture() {
    let mut h = Heap::new();
    let actions: Vec<u64> = (0..2000)
        .map(|_| {
            let b = h.obj("System.Byte[]", 1000, &[]);
            let order = h.obj("App.Order", 32, &[b]);
            let closure = h.obj("App.RetryQueue+<>c__DisplayClass2_0", 24, &[order]);
            h.obj("System.Action", 64, &[closure])
        })
        .collect();
    let array = h.obj("System.Action[]", 32 + 8 * 2000, &actions);
    let list = h.obj("System.Collections.Generic.List<System.Action>", 32, &[array]);
    h.static_root(list, "App.RetryQueue", "Pending");
    let s = suspects(h);
    assert_eq!(s.len(), 1, "{s:#?}");
    assert_eq!(s[0].pattern, LeakPattern::Closures);
    assert_eq!(s[0].confidence, Confidence::Medium);
    assert_eq!(s[0].type_name, "App.Order");
    assert_eq!(s[0].instances, 2000);
    assert_eq!(
        s[0].reason,
        "2,000 `App.Order` objects are captured by closures (`App.RetryQueue+<>c__DisplayClass2_0`) and reachable only \
         through 2,000 delegates held by static App.RetryQueue.Pending → System.Collections.Generic.List<System.Action> \
         → System.Action[]: callbacks stored and never released"
    );
}

/// `static TimerQueue.Instances` → `TimerQueue[]` → `TimerQueue` → a doubly linked list of
/// `TimerQueueTimer`s, each → `TimerCallback` → closure → `Session` → `Timer` → `TimerHolder` →
/// back to its `TimerQueueTimer` (the session keeps its own timer: a cycle). Returns the
/// callbacks.
fn timers(h: &mut Heap, n: u64) -> Vec<u64> {
    let at: Vec<u64> = (0..n).map(|_| h.reserve(96)).collect();
    let mut callbacks = Vec::new();
    for i in 0..n as usize {
        let holder = h.obj("System.Threading.TimerHolder", 24, &[at[i]]);
        let timer = h.obj("System.Threading.Timer", 24, &[holder]);
        let buffer = h.obj("System.Byte[]", 2000, &[]);
        let session = h.obj("App.Session", 32, &[timer, buffer]);
        let closure = h.obj("App.Sessions+<>c__DisplayClass1_0", 24, &[session]);
        let callback = h.obj("System.Threading.TimerCallback", 64, &[closure]);
        callbacks.push(callback);
        let mut refs = vec![callback];
        refs.extend(at.get(i + 1));
        refs.extend(i.checked_sub(1).map(|p| at[p]));
        h.obj_at(at[i], "System.Threading.TimerQueueTimer", 96, &refs);
    }
    let queue = h.obj("System.Threading.TimerQueue", 48, &[at[0]]);
    let queues = h.obj("System.Threading.TimerQueue[]", 40, &[queue]);
    h.static_root(queues, "System.Threading.TimerQueue", "<Instances>k__BackingField");
    callbacks
}

#[test]
fn timers_name_their_callbacks_target_and_the_queue() {
    let mut h = Heap::new();
    let _ = timers(&mut h, 1500);
    let s = suspects(h);
    assert_eq!(s.len(), 1, "{s:#?}");
    assert_eq!(s[0].pattern, LeakPattern::Timers);
    assert_eq!(s[0].type_name, "App.Session");
    assert_eq!(s[0].instances, 1500);
    assert_eq!(
        s[0].reason,
        "1,500 `App.Session` objects are reachable only through the callbacks of 1,500 scheduled \
         `System.Threading.Timer`s (callback `System.Threading.TimerCallback` → `App.Sessions+<>c__DisplayClass1_0`) on \
         the runtime's timer queue (static System.Threading.TimerQueue.<Instances>k__BackingField → \
         System.Threading.TimerQueue[] → System.Threading.TimerQueue): timers created and never disposed"
    );
}

#[test]
fn timers_name_the_method_their_callback_calls_when_the_snapshot_tells() {
    let mut h = Heap::new();
    let callbacks = timers(&mut h, 1500);
    // A dump tells what each delegate calls (the DAC names its method).
    for &c in &callbacks {
        h.b.add_delegate_method(c, "App.Sessions+<>c__DisplayClass1_0.<Start>b__0(System.Object)");
    }
    let s = suspects(h);
    assert_eq!(s.len(), 1, "{s:#?}");
    assert!(
        s[0].reason.contains(
            "(callback `System.Threading.TimerCallback` → `App.Sessions+<>c__DisplayClass1_0`, calling \
             `App.Sessions+<>c__DisplayClass1_0.<Start>b__0(System.Object)`) on the runtime's timer queue"
        ),
        "{}",
        s[0].reason
    );
}

#[test]
fn a_small_collection_and_a_few_timers_are_silent() {
    let mut h = Heap::new();
    order_list(&mut h, "App.Cache", "Recent", 5000, 100);
    let _ = timers(&mut h, 300);
    // Padding: the list is well below 10 % of this heap.
    let pad: Vec<u64> = (0..100).map(|_| h.obj("System.Byte[]", 200_000, &[])).collect();
    let table = h.obj("System.Byte[][]", 32 + 800, &pad);
    h.static_root(table, "App.Assets", "Blobs");
    assert!(suspects(h).is_empty());
}

#[test]
fn structural_patterns_rank_before_big_collections() {
    let mut h = Heap::new();
    order_list(&mut h, "App.OrderBook", "Open", 10_000, 2000);
    event(&mut h, 1200, 16);
    let s = suspects(h);
    let patterns: Vec<LeakPattern> = s.iter().map(|x| x.pattern).collect();
    assert_eq!(patterns, [LeakPattern::EventHandlers, LeakPattern::Collection]);
}

#[test]
fn a_dictionary_is_one_suspect_and_objects_of_several_roots_one_per_type() {
    let mut h = Heap::new();
    // Dictionary<String, Country>: keys and values share the entries array.
    let entries: Vec<u64> = (0..5000)
        .flat_map(|_| {
            let key = h.obj("System.String", 40, &[]);
            let flag = h.obj("System.Byte[]", 2000, &[]);
            let value = h.obj("App.Country", 32, &[flag]);
            [key, value]
        })
        .collect();
    let array = h.obj("System.Collections.Generic.Dictionary+Entry<System.String,App.Country>[]", 24 * 5000, &entries);
    let dict = h.obj("System.Collections.Generic.Dictionary<System.String,App.Country>", 80, &[array]);
    h.static_root(dict, "App.Countries", "ByCode");
    // Two types, each object held by two statics' arrays at once: no single holder.
    for (name, size) in [("App.SharedA", 3000), ("App.SharedB", 2500)] {
        let objects: Vec<u64> = (0..4000).map(|_| h.obj(name, size, &[])).collect();
        let a = h.obj("System.Object[]", 8 * 4000, &objects);
        let b = h.obj("System.Object[]", 8 * 4000, &objects);
        h.static_root(a, "App.Registry", "First");
        h.static_root(b, "App.Registry", "Second");
    }
    let types: Vec<String> = suspects(h).iter().map(|s| format!("{} {}", s.type_name, s.instances)).collect();
    assert_eq!(types, ["App.SharedA 4000", "App.Country 5000", "App.SharedB 4000"]);
}

#[test]
fn objects_held_by_gc_handles_are_named_by_the_handle_kind() {
    let mut h = Heap::new();
    // 2,000 subscriptions, each with a 1 KiB buffer, each the target of its own strong handle;
    // 1,500 pinned 4 KiB buffers.
    for _ in 0..2000 {
        let buffer = h.obj("System.Byte[]", 1024, &[]);
        let sub = h.obj("App.NativeSubscription", 40, &[buffer]);
        h.b.add_root(sub, RootKind::StrongHandle);
    }
    for _ in 0..1500 {
        let buffer = h.obj("System.Byte[]", 4096, &[]);
        h.b.add_root(buffer, RootKind::PinnedHandle);
    }
    // A buffer two statics share is in the same group (no single holder) but not a handle's.
    let stray = h.obj("System.Byte[]", 4096, &[]);
    for field in ["Left", "Right"] {
        let holder = h.obj("App.Holder", 16, &[stray]);
        h.static_root(holder, "App.Pair", field);
    }
    // Control: 4,000 objects of two statics at once have no single holder either, and no handle.
    let shared: Vec<u64> = (0..4000).map(|_| h.obj("App.Shared", 3000, &[])).collect();
    for field in ["First", "Second"] {
        let a = h.obj("System.Object[]", 8 * 4000, &shared);
        h.static_root(a, "App.Registry", field);
    }
    let s = suspects(h);
    let rows: Vec<(&str, u64, LeakPattern, &str)> =
        s.iter().map(|x| (x.type_name.as_str(), x.instances, x.pattern, x.holder.as_str())).collect();
    assert_eq!(
        rows,
        [
            ("System.Byte[]", 1500, LeakPattern::GcHandles, "1,500 pinned GC handles"),
            ("App.NativeSubscription", 2000, LeakPattern::GcHandles, "2,000 strong GC handles"),
            (
                "App.Shared",
                4000,
                LeakPattern::Collection,
                "several roots, e.g. static App.Registry.First → System.Object[]"
            ),
        ]
    );
    assert_eq!(s[1].root, "[strong handle]");
    assert_eq!(s[1].confidence, Confidence::High);
    assert_eq!(
        s[1].reason,
        "2,000 `App.NativeSubscription` objects retain 2.0 MiB and are each the target of a strong GC handle (2,000 \
         handles): `GCHandle.Alloc` never freed. A handle is not an object, so the dump does not say which code \
         allocated it"
    );
    assert!(s[0].reason.contains("pinned GC handle") && s[0].reason.contains("fragment"), "{}", s[0].reason);
    assert_eq!(s[0].retained_bytes, 1500 * 4096, "the handles' buffers, not the shared one");
}

#[test]
fn runs_of_one_type_read_once() {
    let names = ["A", "Node", "Node", "Node", "Node", "B", "B"];
    assert_eq!(collapse_runs(names.into_iter()), ["A", "Node (×4)", "B", "B"]);
}

#[test]
fn numbers_read_well() {
    assert_eq!(thousands(0), "0");
    assert_eq!(thousands(999), "999");
    assert_eq!(thousands(30_000), "30,000");
    assert_eq!(thousands(1_234_567), "1,234,567");
    assert_eq!(human_bytes(1536), "1.5 KiB");
}
