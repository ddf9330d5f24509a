use super::*;

fn thread(tid: u64, stack: &[&str]) -> DumpThread {
    DumpThread {
        os_tid: tid,
        managed_id: tid as u32 % 1000,
        stack: stack.iter().map(|s| s.to_string()).collect(),
        lock_refs: Vec::new(),
    }
}

/// A pool thread blocked in `.Result` inside `OrderService.Get` (frames as the DAC names them).
const POOL_RESULT: [&str; 9] = [
    "[HelperMethodFrame_1OBJ] System.Threading.Monitor.ObjWait(Int32, System.Object)",
    "System.Threading.ManualResetEventSlim.Wait(Int32, System.Threading.CancellationToken)",
    "System.Threading.Tasks.Task.SpinThenBlockingWait(Int32, System.Threading.CancellationToken)",
    "System.Threading.Tasks.Task.InternalWaitCore(Int32, System.Threading.CancellationToken)",
    "System.Threading.Tasks.Task`1[[System.Int32, System.Private.CoreLib]].GetResultCore(Boolean)",
    "System.Threading.Tasks.Task`1[[System.Int32, System.Private.CoreLib]].get_Result()",
    "Shop.OrderService.Get(Int32)",
    "System.Threading.ThreadPoolWorkQueue.Dispatch()",
    "System.Threading.PortableThreadPool+WorkerThread.WorkerThreadStart()",
];

const SEMAPHORE: [&str; 4] = [
    "[HelperMethodFrame_1OBJ] System.Threading.Monitor.ObjWait(Int32, System.Object)",
    "System.Threading.SemaphoreSlim.WaitUntilCountOrTimeout(Int32, UInt32, System.Threading.CancellationToken)",
    "System.Threading.SemaphoreSlim.Wait(Int32, System.Threading.CancellationToken)",
    "Shop.Inventory.Reserve()",
];

#[test]
fn method_keys_drop_markers_generics_and_parameters() {
    assert_eq!(method_key(POOL_RESULT[5]), "System.Threading.Tasks.Task.get_Result");
    assert_eq!(method_key(POOL_RESULT[0]), "System.Threading.Monitor.ObjWait");
    assert_eq!(
        method_key("System.Runtime.CompilerServices.TaskAwaiter`1[[System.Int32, System.Private.CoreLib]].GetResult()"),
        "System.Runtime.CompilerServices.TaskAwaiter.GetResult"
    );
    assert_eq!(method_key("Shop.X+<>c__DisplayClass1_0.<Run>b__0()"), "Shop.X+<>c__DisplayClass1_0.<Run>b__0");
}

#[test]
fn pool_threads_blocked_on_tasks_with_a_queue_are_starvation() {
    let mut threads: Vec<DumpThread> = (0..8).map(|i| thread(100 + i, &POOL_RESULT)).collect();
    threads.push(thread(200, &SEMAPHORE));
    let h = find_hangs(&threads, Some(20), &HangThresholds::default());
    assert_eq!(h.len(), 1, "one semaphore waiter is no finding: {h:#?}");
    assert_eq!(h[0].kind, HangKind::ThreadPoolStarvation);
    assert_eq!(h[0].wait, "Task.Result");
    assert_eq!(h[0].method, "Shop.OrderService.Get(Int32)");
    assert_eq!(h[0].threads.len(), 8);
    assert_eq!(h[0].queued_work_items, Some(20));
    assert_eq!(
        h[0].reason,
        "8 thread-pool threads wait in `OrderService.Get` → `Task.Result` (sync over async; 8 pool threads blocked on \
         tasks in all) while 20 work items wait in the pool's queue: the pool is starved, and the tasks they wait for \
         may need a pool thread to finish"
    );
}

#[test]
fn without_queued_work_the_pool_threads_are_only_blocked() {
    let threads: Vec<DumpThread> = (0..8).map(|i| thread(100 + i, &POOL_RESULT)).collect();
    let h = find_hangs(&threads, Some(0), &HangThresholds::default());
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].kind, HangKind::BlockedThreads);
    assert_eq!(h[0].reason, "8 threads wait in `OrderService.Get` → `Task.Result`, all with the same stack");
}

#[test]
fn blocked_threads_group_by_identical_stack_from_the_threshold() {
    let mut threads: Vec<DumpThread> = (0..6).map(|i| thread(300 + i, &SEMAPHORE)).collect();
    let mut other = SEMAPHORE.to_vec();
    other[3] = "Shop.Inventory.Release()";
    threads.extend((0..4).map(|i| thread(400 + i, &other)));
    // Threads in `lock` and the runtime's own waits are not this analysis' business.
    threads.push(thread(
        500,
        &[
            "[HelperMethodFrame_1OBJ] System.Threading.Monitor.ReliableEnter(System.Object, Boolean ByRef)",
            "Shop.A.B()",
        ],
    ));
    threads.push(thread(
        501,
        &["System.Threading.WaitHandle.WaitOne(Int32)", "System.Threading.TimerQueue.TimerThread()"],
    ));
    let h = find_hangs(&threads, None, &HangThresholds::default());
    assert_eq!(h.len(), 1, "{h:#?}");
    assert_eq!(h[0].kind, HangKind::BlockedThreads);
    assert_eq!(h[0].wait, "SemaphoreSlim.Wait");
    let tids: Vec<u64> = h[0].threads.iter().map(|t| t.os_tid).collect();
    assert_eq!(tids, [300, 301, 302, 303, 304, 305]);
}

#[test]
fn each_wait_api_is_named_by_its_outermost_frame() {
    let cases: [(&[&str], &str); 5] = [
        (&["System.Threading.Thread.Join()", "App.Main()"], "Thread.Join"),
        (&["System.Threading.ManualResetEventSlim.Wait()", "App.Warmup()"], "ManualResetEventSlim.Wait"),
        (
            &[
                "System.Threading.ManualResetEventSlim.Wait(Int32, System.Threading.CancellationToken)",
                "System.Threading.Tasks.Task.SpinThenBlockingWait(Int32, System.Threading.CancellationToken)",
                "System.Threading.Tasks.Task.Wait(Int32, System.Threading.CancellationToken)",
                "System.Threading.Tasks.Task.Wait()",
                "App.Report()",
            ],
            "Task.Wait",
        ),
        (&["System.Runtime.CompilerServices.TaskAwaiter.GetResult()", "App.Sync()"], "GetAwaiter().GetResult()"),
        (&["System.Threading.Monitor.Wait(System.Object)", "App.Consume()"], "Monitor.Wait"),
    ];
    for (stack, wait) in cases {
        let threads: Vec<DumpThread> = (0..5).map(|i| thread(i, stack)).collect();
        let h = find_hangs(&threads, None, &HangThresholds::default());
        assert_eq!(h.len(), 1, "{stack:?}");
        assert_eq!(h[0].wait, wait);
    }
}

#[test]
fn the_pool_queue_is_counted_from_the_work_queue_segments() {
    use crate::heap::ObjectGraphBuilder;
    let mut b = ObjectGraphBuilder::new();
    for (id, name) in [
        (1, "System.Threading.ThreadPoolWorkQueue"),
        (2, "System.Collections.Concurrent.ConcurrentQueue<System.Object>"),
        (3, "System.Collections.Concurrent.ConcurrentQueueSegment<System.Object>"),
        (4, "System.Collections.Concurrent.ConcurrentQueueSegment<System.Object>+Slot[]"),
        (5, "App.WorkItem"),
    ] {
        b.add_type(id, name);
    }
    b.add_node(0x100, 64, 1, 1);
    b.add_edge(0x200);
    b.add_node(0x200, 64, 2, 1);
    b.add_edge(0x300);
    b.add_node(0x300, 64, 3, 1);
    b.add_edge(0x400);
    b.add_node(0x400, 1024, 4, 20);
    for i in 0..20 {
        b.add_edge(0x1000 + i * 32);
    }
    for i in 0..20 {
        b.add_node(0x1000 + i * 32, 32, 5, 0);
    }
    let g = b.finish().unwrap();
    assert_eq!(queued_work_items(&g), Some(20));
    let empty = ObjectGraphBuilder::new().finish().unwrap();
    assert_eq!(queued_work_items(&empty), None);
}
