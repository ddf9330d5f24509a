// The smaller scenarios: CPU burn, exceptions, forced GC and lock contention.
using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Threading;
using Workloads;

namespace DiagScenarios
{
    static class CpuScenario
    {
        // Written so the JIT cannot prove the loop useless and delete it.
        public static double Sink;

        // Burns until the calling thread has consumed `ms` of CPU time (not wall time), so the
        // ground truth holds on a loaded machine too: a sampler at F Hz should see about
        // F * burned_ms / 1000 samples of this frame on this thread, however long it took.
        // NoInlining: CPU-sampling tests expect this frame on top of the hot thread's stacks.
        [MethodImpl(MethodImplOptions.NoInlining)]
        static double BurnCpu(int ms)
        {
            double start = Native.ThreadCpuMs();
            var sw = Stopwatch.StartNew();
            bool cpuClock = !double.IsNaN(start);
            double x = 1;
            while (cpuClock ? Native.ThreadCpuMs() - start < ms : sw.ElapsedMilliseconds < ms)
                for (int i = 0; i < 20000; i++) x = Math.Sqrt(x + i);
            return x;
        }

        public static HttpResponse Handle(HttpRequest req)
        {
            int ms = req.Int("ms", 1000, 0, 600000);
            string err = req.Finish();
            if (err != null) return HttpResponse.Error(400, err);
            double cpu0 = Native.ThreadCpuMs();
            var sw = Stopwatch.StartNew();
            Sink = BurnCpu(ms);
            double wall = sw.Elapsed.TotalMilliseconds;
            double cpu = Native.ThreadCpuMs() - cpu0;
            return HttpResponse.Ok(new JObj {
                { "burned_ms", cpu },
                { "wall_ms", wall },
                { "managed_id", Thread.CurrentThread.ManagedThreadId },
                { "os_tid", Native.GetTid() },
                { "thread_name", Thread.CurrentThread.Name },
                { "method", "BurnCpu" },
                { "method_type", typeof(CpuScenario).FullName },
            });
        }
    }

    static class ExceptionScenario
    {
        static long total;
        static long firstChance;

        public static long Total { get { return Interlocked.Read(ref total); } }

        // Every managed exception thrown anywhere in the process, as the runtime itself reports
        // them: normally equal to Total, which proves nothing else (sockets, runtime internals)
        // threw. A tracer's exception count should match this number, not Total, if they differ.
        public static long FirstChance { get { return Interlocked.Read(ref firstChance); } }

        public static void Install()
        {
            AppDomain.CurrentDomain.FirstChanceException += (s, e) => Interlocked.Increment(ref firstChance);
        }

        [MethodImpl(MethodImplOptions.NoInlining)]
        static void ThrowOne(int i)
        {
            throw new InvalidOperationException("dumpwatch test exception #" + i);
        }

        // A second type, message and method, so that a type filter has something to tell apart.
        [MethodImpl(MethodImplOptions.NoInlining)]
        static void ThrowTimeout(int i)
        {
            throw new TimeoutException("dumpwatch test timeout #" + i);
        }

        public static HttpResponse Handle(HttpRequest req)
        {
            int count = req.Int("count", 1, 0, 1000000);
            string kind = req.Str("type") ?? "invalid";
            string err = req.Finish();
            if (err != null) return HttpResponse.Error(400, err);
            bool timeout = kind == "timeout";
            if (!timeout && kind != "invalid") return HttpResponse.Error(400, "type must be invalid or timeout");
            int caught = 0;
            for (int i = 0; i < count; i++)
            {
                // Counted before the throw so /truth never lags what a tracer may already have seen.
                Interlocked.Increment(ref total);
                try { if (timeout) ThrowTimeout(i); else ThrowOne(i); }
                catch (InvalidOperationException) { caught++; }
                catch (TimeoutException) { caught++; }
            }
            return HttpResponse.Ok(new JObj {
                { "thrown", count },
                { "caught", caught },
                { "total_thrown", Total },
                { "first_chance_total", FirstChance },
                { "type", timeout ? typeof(TimeoutException).FullName : typeof(InvalidOperationException).FullName },
                { "method", timeout ? "ThrowTimeout" : "ThrowOne" },
                { "message_prefix", timeout ? "dumpwatch test timeout #" : "dumpwatch test exception #" },
            });
        }
    }

    // The exception no one catches: thrown on a thread of its own shortly after the response
    // went out, it ends the process the way an app's bug does (the runtime writes its crash dump
    // and, on .NET 6+, its crash report when the environment asks for them).
    public class WorkloadCrashException : Exception
    {
        public WorkloadCrashException(string message) : base(message) { }
    }

    static class CrashScenario
    {
        [MethodImpl(MethodImplOptions.NoInlining)]
        static void ThrowUnhandled()
        {
            throw new WorkloadCrashException("dumpwatch test crash");
        }

        public static HttpResponse Handle(HttpRequest req)
        {
            int delay = req.Int("delay_ms", 200, 0, 60000);
            string err = req.Finish();
            if (err != null) return HttpResponse.Error(400, err);
            var t = new Thread(() => { Thread.Sleep(delay); ThrowUnhandled(); });
            t.Name = "crasher";
            t.IsBackground = true;
            t.Start();
            return HttpResponse.Ok(new JObj {
                { "exception_type", typeof(WorkloadCrashException).FullName },
                { "method", "ThrowUnhandled" },
                { "thread", t.ManagedThreadId },
                { "delay_ms", delay },
            });
        }
    }

    static class GcScenario
    {
        public static JObj Counts()
        {
            return new JObj {
                { "gen0", GC.CollectionCount(0) },
                { "gen1", GC.CollectionCount(1) },
                { "gen2", GC.CollectionCount(2) },
            };
        }

        public static HttpResponse Handle(HttpRequest req)
        {
            string err = req.Finish();
            if (err != null) return HttpResponse.Error(400, err);
            GC.Collect();
            GC.WaitForPendingFinalizers();
            GC.Collect();
            return HttpResponse.Ok(new JObj {
                { "gen0_collections", GC.CollectionCount(0) },
                { "gen1_collections", GC.CollectionCount(1) },
                { "gen2_collections", GC.CollectionCount(2) },
                { "total_memory", GC.GetTotalMemory(false) },
            });
        }
    }

    // Lock-throughput benchmark: measures how much a tracer slows down contended Monitor use
    // (run it with and without tracing attached and compare ops_per_sec).
    static class ContendScenario
    {
        sealed class Run
        {
            public readonly object Gate = new object();
            public readonly ManualResetEvent Go = new ManualResetEvent(false);
            public long Counter;
            public long Sink;
            public volatile bool Stop;
        }

        [MethodImpl(MethodImplOptions.NoInlining)]
        static void ContendFunc(Run run, int cpu, int work, int inside, int sleepUs)
        {
            // Pinned threads on distinct cores really contend; unpinned, the scheduler sometimes
            // puts both on one core, where they take turns and throughput doubles (a bimodal
            // figure that hides a 3 % effect).
            if (cpu >= 0) Native.PinCurrentThread(cpu);
            run.Go.WaitOne();
            long sink = 0;
            while (!run.Stop)
            {
                // Work outside the lock makes it a service-like lock user rather than a pure
                // lock ping-pong; the spin is the same on both sides of the comparison.
                for (int i = 0; i < work; i++) sink = sink * 31 + i;
                lock (run.Gate)
                {
                    // Work under the lock: long enough holds make waiters give up spinning and
                    // block, which is what emits ContentionStart/Stop (a bare counter++ does ~100/s).
                    long held = run.Sink;
                    for (int i = 0; i < inside; i++) held = held * 31 + i;
                    // A hold across a blocking call (I/O under a lock): every waiter blocks.
                    if (sleepUs > 0) Native.SleepMicroseconds(sleepUs);
                    run.Counter++;
                    run.Sink = held + sink;
                }
            }
        }

        public static HttpResponse Handle(HttpRequest req)
        {
            int threads = req.Int("threads", 4, 1, 64);
            int ms = req.Int("ms", 1000, 1, 60000);
            bool pin = req.Int("pin", 0, 0, 1) == 1;
            int work = req.Int("work", 0, 0, 1000000);
            int inside = req.Int("inside", 0, 0, 1000000);
            int sleepUs = req.Int("sleep_us", 0, 0, 1000000);
            string err = req.Finish();
            if (err != null) return HttpResponse.Error(400, err);
            var run = new Run();
            long contentionsBefore = Monitor.LockContentionCount;
            var ts = new List<Thread>();
            for (int i = 0; i < threads; i++)
            {
                int cpu = pin ? i % Environment.ProcessorCount : -1;
                var t = new Thread(() => ContendFunc(run, cpu, work, inside, sleepUs));
                t.IsBackground = true;
                t.Name = "contend-" + i;
                t.Start();
                ts.Add(t);
            }
            var sw = Stopwatch.StartNew();
            run.Go.Set();
            Thread.Sleep(ms);
            run.Stop = true;
            foreach (var t in ts) t.Join();
            double elapsed = sw.Elapsed.TotalMilliseconds;
            long ops;
            lock (run.Gate) ops = run.Counter;
            long contentions = Monitor.LockContentionCount - contentionsBefore;
            return HttpResponse.Ok(new JObj {
                { "threads", threads },
                { "pinned", pin },
                { "work", work },
                { "inside", inside },
                { "sleep_us", sleepUs },
                { "contentions", contentions },
                { "contentions_per_sec", contentions / (elapsed / 1000.0) },
                { "ms", ms },
                { "elapsed_ms", elapsed },
                { "ops", ops },
                { "ops_per_sec", ops / (elapsed / 1000.0) },
            });
        }
    }
}
