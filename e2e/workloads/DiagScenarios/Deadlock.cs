// The deadlock scenario, after the DiagScenarios sample: two threads take two plain
// System.Object monitors in opposite order, plus N bystanders that queue behind the first lock.
//
// Ground truth per deadlock (the named method is the innermost frame of our own code, right below
// the runtime's Monitor.Enter frames):
//   deadlock-a: holds o1, blocked in Monitor.Enter(o2), called from DeadlockFunc
//   deadlock-b: holds o2, blocked in Monitor.Enter(o1), called from DeadlockFunc
//   deadlock-waiter-i: holds nothing, blocked in Monitor.Enter(o1), called from WaiterFunc
// So o1 has 1 owner (a) and N+1 waiters (b + all waiters); o2 has 1 owner (b) and 1 waiter (a).
// The threads never exit; each /deadlock call adds an independent set with fresh lock objects.
using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Threading;
using Workloads;

namespace DiagScenarios
{
    sealed class ThreadRecord
    {
        public string Name;
        public string Holds;
        public string WaitsFor;
        public int ManagedId;
        public long OsTid;
        public Thread Thread;
        // Set by the thread itself immediately before its final, blocking Monitor.Enter.
        public readonly ManualResetEvent AboutToBlock = new ManualResetEvent(false);

        public void RecordIds()
        {
            ManagedId = Thread.CurrentThread.ManagedThreadId;
            OsTid = Native.GetTid();
        }

        public JObj ToJson()
        {
            var o = new JObj { { "name", Name }, { "managed_id", ManagedId }, { "os_tid", OsTid } };
            if (Holds != null) o.Add("holds", Holds);
            o.Add("waits_for", WaitsFor);
            return o;
        }
    }

    sealed class DeadlockRecord
    {
        public int Id;
        public object O1, O2;
        public ThreadRecord A, B;
        public List<ThreadRecord> Waiters = new List<ThreadRecord>();

        public JObj ToJson()
        {
            var waiters = new List<object>();
            foreach (var w in Waiters) waiters.Add(w.ToJson());
            return new JObj {
                { "id", Id },
                { "owners", new object[] { A.ToJson(), B.ToJson() } },
                { "waiters", waiters },
                { "method", "DeadlockFunc" },
                { "waiter_method", "WaiterFunc" },
                { "method_type", typeof(Deadlocks).FullName },
                { "lock_type", O1.GetType().FullName },
            };
        }
    }

    static class Deadlocks
    {
        const int MaxWaiters = 64;
        const int SetupTimeoutMs = 10000;
        // Extra settling time after every thread is observed blocked; the brief asks for ~200 ms
        // so that a dump taken right after the response can't catch a thread mid-spin.
        const int SettleMs = 200;

        static readonly List<DeadlockRecord> all = new List<DeadlockRecord>();
        static readonly object allGate = new object();

        public static List<object> Snapshot()
        {
            var list = new List<object>();
            lock (allGate) foreach (var d in all) list.Add(d.ToJson());
            return list;
        }

        // NoInlining: the frame must exist in every stack walk (dumps, EventPipe samples), because
        // tests look for the method by name.
        [MethodImpl(MethodImplOptions.NoInlining)]
        static void DeadlockFunc(object first, object second, ManualResetEvent iHoldFirst, ManualResetEvent otherHoldsFirst, ThreadRecord me)
        {
            lock (first)
            {
                iHoldFirst.Set();
                // Without this rendezvous one thread could grab both locks and no cycle would form.
                otherHoldsFirst.WaitOne();
                me.AboutToBlock.Set();
                lock (second)
                {
                    Console.Error.WriteLine("[diag] BUG: deadlock thread " + me.Name + " acquired both locks");
                }
            }
        }

        [MethodImpl(MethodImplOptions.NoInlining)]
        static void WaiterFunc(object target, ThreadRecord me)
        {
            me.AboutToBlock.Set();
            lock (target)
            {
                Console.Error.WriteLine("[diag] BUG: waiter " + me.Name + " acquired a deadlocked lock");
            }
        }

        // A request handler that needs the deadlocked lock: queued on the thread pool, as a web
        // app's requests would be. They pile up, the pool's queue grows: the stall signal a
        // policy can trigger on where live detection is unavailable (.NET < 8).
        [MethodImpl(MethodImplOptions.NoInlining)]
        static void RequestFunc(object target)
        {
            lock (target)
            {
                Console.Error.WriteLine("[diag] BUG: a request acquired a deadlocked lock");
            }
        }

        static void Start(ThreadRecord r, ThreadStart body)
        {
            ThreadStart wrapped = () => { r.RecordIds(); body(); };
            r.Thread = new Thread(wrapped);
            // Background: the deadlocked threads must never keep the process alive at /exit.
            r.Thread.IsBackground = true;
            r.Thread.Name = r.Name;
            r.Thread.Start();
        }

        static bool WaitAll(List<ThreadRecord> rs, int deadline, Stopwatch sw)
        {
            foreach (var r in rs)
            {
                int left = deadline - (int)sw.ElapsedMilliseconds;
                if (left <= 0 || !r.AboutToBlock.WaitOne(left)) return false;
            }
            return true;
        }

        // AboutToBlock only says the thread is about to call Monitor.Enter; the CLR spins before
        // it really blocks. A thread blocked in Monitor.Enter reports WaitSleepJoin (checked on
        // both 3.1 and 8), and none of these threads can be in any other wait at that point.
        static bool AllBlocked(List<ThreadRecord> rs, int deadline, Stopwatch sw)
        {
            while (sw.ElapsedMilliseconds < deadline)
            {
                bool all = true;
                foreach (var r in rs)
                    if ((r.Thread.ThreadState & System.Threading.ThreadState.WaitSleepJoin) == 0) { all = false; break; }
                if (all) return true;
                Thread.Sleep(5);
            }
            return false;
        }

        public static HttpResponse Handle(HttpRequest req)
        {
            int waiters = req.Int("waiters", 3, 0, MaxWaiters);
            int requests = req.Int("requests", 0, 0, 10000);
            string err = req.Finish();
            if (err != null) return HttpResponse.Error(400, err);

            var d = new DeadlockRecord { O1 = new object(), O2 = new object() };
            object o1 = d.O1, o2 = d.O2;
            var aHolds = new ManualResetEvent(false);
            var bHolds = new ManualResetEvent(false);
            d.A = new ThreadRecord { Name = "deadlock-a", Holds = "o1", WaitsFor = "o2" };
            d.B = new ThreadRecord { Name = "deadlock-b", Holds = "o2", WaitsFor = "o1" };
            ThreadRecord a = d.A, b = d.B;
            var sw = Stopwatch.StartNew();

            Start(a, () => DeadlockFunc(o1, o2, aHolds, bHolds, a));
            Start(b, () => DeadlockFunc(o2, o1, bHolds, aHolds, b));
            var owners = new List<ThreadRecord> { a, b };
            // Waiters start only once a owns o1, so each of them really queues behind deadlock-a.
            if (!WaitAll(owners, SetupTimeoutMs, sw))
                return HttpResponse.Error(500, "deadlock threads did not reach their second lock in time");

            for (int i = 0; i < waiters; i++)
            {
                var w = new ThreadRecord { Name = "deadlock-waiter-" + i, WaitsFor = "o1" };
                d.Waiters.Add(w);
                Start(w, () => WaiterFunc(o1, w));
            }
            var everyone = new List<ThreadRecord>(owners);
            everyone.AddRange(d.Waiters);
            if (!WaitAll(d.Waiters, SetupTimeoutMs, sw) || !AllBlocked(everyone, SetupTimeoutMs, sw))
                return HttpResponse.Error(500, "deadlock threads were not all blocked within " + SetupTimeoutMs + " ms");
            Thread.Sleep(SettleMs);

            lock (allGate)
            {
                d.Id = all.Count + 1;
                all.Add(d);
            }
            for (int i = 0; i < requests; i++) ThreadPool.QueueUserWorkItem(_ => RequestFunc(o1));
            var answer = d.ToJson();
            answer.Add("requests_queued", requests);
            return HttpResponse.Ok(answer);
        }
    }
}
