// Hangs that are not lock cycles. Ground truth per call: which threads block, in which method of
// ours (the innermost frame of our code) and on which wait API.
//
//   /taskwait: thread-pool starvation by sync-over-async. The pool is capped at `threads`
//     threads; each runs OrderService.Get, which (once all of them are inside) starts a task on
//     the pool's global queue and blocks on its .Result. Every pool thread is blocked, the tasks
//     they wait for sit in the queue with `queued` more work items, and nothing runs again.
//   /block?kind=semaphore|mres|task|join: `threads` dedicated threads block forever in
//     InventoryService.Reserve (SemaphoreSlim.Wait), CacheWarmup.AwaitReady
//     (ManualResetEventSlim.Wait), ReportJob.Run (Task.Wait) or Shutdown.WaitForWorker
//     (Thread.Join of a thread that sleeps forever).
using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Threading;
using System.Threading.Tasks;
using Workloads;

namespace DiagScenarios
{
    sealed class BlockedRecord
    {
        public int ManagedId;
        public long OsTid;
        public Thread Thread;

        public JObj ToJson() { return new JObj { { "managed_id", ManagedId }, { "os_tid", OsTid } }; }

        public static BlockedRecord Current()
        {
            var me = Thread.CurrentThread;
            return new BlockedRecord { ManagedId = me.ManagedThreadId, OsTid = Native.GetTid(), Thread = me };
        }
    }

    static class OrderService
    {
        public static readonly List<BlockedRecord> Blocked = new List<BlockedRecord>();

        [MethodImpl(MethodImplOptions.NoInlining)]
        static int Lookup(int id) { return id * 2; }

        // Set by /taskwait: every pool thread is inside Get before any of them starts its task,
        // so no free pool thread is left to run one.
        public static CountdownEvent AllInside;

        // Sync over async: the task needs a pool thread, and this pool thread waits for it.
        // PreferFairness puts it on the global queue, where the waiting thread cannot run it inline.
        [MethodImpl(MethodImplOptions.NoInlining)]
        public static int Get(int id)
        {
            AllInside.Signal();
            AllInside.Wait();
            var task = Task.Factory.StartNew(() => Lookup(id), CancellationToken.None,
                TaskCreationOptions.PreferFairness, TaskScheduler.Default);
            lock (Blocked) Blocked.Add(BlockedRecord.Current());
            return task.Result;
        }
    }

    static class InventoryService
    {
        static readonly SemaphoreSlim Gate = new SemaphoreSlim(0);

        [MethodImpl(MethodImplOptions.NoInlining)]
        public static void Reserve() { Gate.Wait(); }
    }

    static class CacheWarmup
    {
        static readonly ManualResetEventSlim Ready = new ManualResetEventSlim(false);

        [MethodImpl(MethodImplOptions.NoInlining)]
        public static void AwaitReady() { Ready.Wait(); }
    }

    static class ReportJob
    {
        static readonly TaskCompletionSource<int> Never = new TaskCompletionSource<int>();

        [MethodImpl(MethodImplOptions.NoInlining)]
        public static void Run() { Never.Task.Wait(); }
    }

    static class Shutdown
    {
        [MethodImpl(MethodImplOptions.NoInlining)]
        public static void Worker() { Thread.Sleep(Timeout.Infinite); }

        [MethodImpl(MethodImplOptions.NoInlining)]
        public static void WaitForWorker(Thread worker) { worker.Join(); }
    }

    static class Hangs
    {
        const int SetupTimeoutMs = 10000;
        const int SettleMs = 200;
        const int StableMs = 100;
        static bool starved;

        public static HttpResponse TaskWait(HttpRequest req)
        {
            int threads = req.Int("threads", 8, 1, 64);
            int queued = req.Int("queued", 20, 0, 10000);
            string err = req.Finish();
            if (err != null) return HttpResponse.Error(400, err);
            if (threads < Environment.ProcessorCount)
                return HttpResponse.Error(400, "threads must be at least the processor count (" + Environment.ProcessorCount + ")");
            lock (OrderService.Blocked)
            {
                if (starved) return HttpResponse.Error(409, "the pool is already starved; start a new process");
                starved = true;
            }
            // Capping the pool makes the starvation exact: no thread is ever injected to rescue it.
            int workers, io;
            ThreadPool.GetMinThreads(out workers, out io);
            if (!ThreadPool.SetMinThreads(threads, io) || !ThreadPool.SetMaxThreads(threads, Math.Max(io, threads)))
                return HttpResponse.Error(500, "could not cap the thread pool at " + threads + " threads");
            OrderService.AllInside = new CountdownEvent(threads);
            for (int i = 0; i < threads; i++)
            {
                int id = i;
                ThreadPool.QueueUserWorkItem(_ => OrderService.Get(id));
            }
            var sw = Stopwatch.StartNew();
            while (true)
            {
                lock (OrderService.Blocked) if (OrderService.Blocked.Count == threads) break;
                if (sw.ElapsedMilliseconds > SetupTimeoutMs)
                    return HttpResponse.Error(500, "only some pool threads reached OrderService.Get within 10 s");
                Thread.Sleep(10);
            }
            var pool = new List<Thread>();
            lock (OrderService.Blocked) foreach (var b in OrderService.Blocked) pool.Add(b.Thread);
            if (!SteadilyBlocked(pool)) return HttpResponse.Error(500, "pool threads did not block on Task.Result within 10 s");
            for (int i = 0; i < queued; i++) ThreadPool.QueueUserWorkItem(_ => { });
            Thread.Sleep(SettleMs);
            var list = new List<object>();
            lock (OrderService.Blocked) foreach (var b in OrderService.Blocked) list.Add(b.ToJson());
            return HttpResponse.Ok(new JObj {
                { "blocked", list },
                { "method", "DiagScenarios.OrderService.Get" },
                { "wait", "Task.Result" },
                // The tasks the blocked threads wait for, plus the extra items: all on the global queue.
                { "queued_work_items", threads + queued },
                { "pending_work_items", ThreadPool.PendingWorkItemCount },
            });
        }

        // SemaphoreSlim, ManualResetEventSlim and Task.Wait spin before they block, and their spin
        // sleeps (Thread.Sleep(0/1)) read as WaitSleepJoin too: on a loaded machine one look caught
        // a thread mid-spin, before the wait whose stack the tests expect. A thread counts as
        // blocked once it read WaitSleepJoin at every look for StableMs.
        static bool SteadilyBlocked(IEnumerable<Thread> threads)
        {
            var sw = Stopwatch.StartNew();
            foreach (var t in threads)
                for (var steady = Stopwatch.StartNew(); steady.ElapsedMilliseconds < StableMs; Thread.Sleep(5))
                {
                    if ((t.ThreadState & System.Threading.ThreadState.WaitSleepJoin) == 0) steady.Restart();
                    if (sw.ElapsedMilliseconds > SetupTimeoutMs) return false;
                }
            return true;
        }

        public static HttpResponse Block(HttpRequest req)
        {
            int threads = req.Int("threads", 6, 1, 256);
            string kind = req.Str("kind");
            string err = req.Finish();
            if (err != null) return HttpResponse.Error(400, err);
            ThreadStart body;
            string method, wait;
            Thread worker = null;
            switch (kind)
            {
                case "semaphore": body = InventoryService.Reserve; method = "DiagScenarios.InventoryService.Reserve"; wait = "SemaphoreSlim.Wait"; break;
                case "mres": body = CacheWarmup.AwaitReady; method = "DiagScenarios.CacheWarmup.AwaitReady"; wait = "ManualResetEventSlim.Wait"; break;
                case "task": body = ReportJob.Run; method = "DiagScenarios.ReportJob.Run"; wait = "Task.Wait"; break;
                case "join":
                    worker = new Thread(Shutdown.Worker) { IsBackground = true, Name = "shutdown-worker" };
                    worker.Start();
                    var w = worker;
                    body = () => Shutdown.WaitForWorker(w);
                    method = "DiagScenarios.Shutdown.WaitForWorker";
                    wait = "Thread.Join";
                    break;
                default: return HttpResponse.Error(400, "kind must be semaphore, mres, task or join");
            }
            var records = new BlockedRecord[threads];
            var ts = new Thread[threads];
            var started = new CountdownEvent(threads);
            for (int i = 0; i < threads; i++)
            {
                int slot = i;
                ts[i] = new Thread(() => { records[slot] = BlockedRecord.Current(); started.Signal(); body(); });
                ts[i].IsBackground = true;
                ts[i].Name = "hang-" + kind + "-" + i;
                ts[i].Start();
            }
            if (!started.Wait(SetupTimeoutMs)) return HttpResponse.Error(500, "threads did not start within 10 s");
            if (!SteadilyBlocked(ts)) return HttpResponse.Error(500, "threads did not block within 10 s");
            Thread.Sleep(SettleMs);
            var list = new List<object>();
            foreach (var r in records) list.Add(r.ToJson());
            return HttpResponse.Ok(new JObj { { "kind", kind }, { "threads", list }, { "method", method }, { "wait", wait } });
        }
    }
}
