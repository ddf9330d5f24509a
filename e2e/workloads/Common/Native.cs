// Process-level helpers shared by every workload: OS thread ids, per-thread CPU time, the
// "ready" line and strict command-line parsing.
using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;

namespace Workloads
{
    static class Native
    {
        // x86_64 syscall numbers / clock ids. The workloads only target x86_64 Linux; on anything
        // else these would return garbage, so Check() refuses to start instead.
        const long SYS_gettid = 186;
        const int CLOCK_THREAD_CPUTIME_ID = 3;

        // "libc" is special-cased by the CoreCLR loader to mean libc.so.6 on Linux (a plain
        // dlopen("libc.so") would hit the ld script from libc6-dev and fail).
        [DllImport("libc", EntryPoint = "syscall")]
        static extern long syscall(long n);

        [StructLayout(LayoutKind.Sequential)]
        struct Timespec
        {
            public long tv_sec;
            public long tv_nsec;
        }

        [DllImport("libc", EntryPoint = "clock_gettime")]
        static extern int clock_gettime(int clockId, out Timespec ts);

        // The kernel tid: what /proc/<pid>/task/<tid>, perf, gdb and a core dump's NT_PRSTATUS call
        // the thread, and what the CLR reports as a thread's OSThreadId.
        public static long GetTid()
        {
            return syscall(SYS_gettid);
        }

        // CPU time consumed by the calling thread only, so /cpu can prove the burn happened on the
        // handler thread rather than merely wall-clock time passing.
        public static double ThreadCpuMs()
        {
            Timespec ts;
            if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, out ts) != 0) return double.NaN;
            return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
        }

        [DllImport("libc", EntryPoint = "sched_setaffinity", SetLastError = true)]
        static extern int sched_setaffinity(int pid, IntPtr cpusetsize, ref ulong mask);

        // Binds the calling thread (pid 0 = the caller in sched_setaffinity) to one CPU.
        public static void PinCurrentThread(int cpu)
        {
            ulong mask = 1UL << (cpu % 64);
            if (sched_setaffinity(0, (IntPtr)8, ref mask) != 0)
                throw new InvalidOperationException("sched_setaffinity(cpu " + cpu + ") failed: errno " + Marshal.GetLastWin32Error());
        }

        [DllImport("libc", EntryPoint = "usleep")]
        static extern int usleep(uint usec);

        // Thread.Sleep has millisecond granularity; a lock held across a short syscall is finer.
        public static void SleepMicroseconds(int us)
        {
            usleep((uint)us);
        }

        public static void Check()
        {
            if (!RuntimeInformation.IsOSPlatform(OSPlatform.Linux) ||
                RuntimeInformation.ProcessArchitecture != Architecture.X64)
            {
                Console.Error.WriteLine("this workload only supports x86_64 Linux (raw syscall numbers)");
                Environment.Exit(2);
            }
        }

        public static int Pid()
        {
            using (var p = Process.GetCurrentProcess()) return p.Id;
        }

        public static int ThreadCount()
        {
            using (var p = Process.GetCurrentProcess()) return p.Threads.Count;
        }
    }

    static class Ready
    {
        // Exactly one line on stdout: tests block on it, so it must only appear once the listener
        // (if any) accepts connections, and nothing else may ever be written to stdout.
        public static void Print(int port)
        {
            var line = Json.Serialize(new JObj {
                { "ready", true },
                { "pid", Native.Pid() },
                { "port", port },
                { "runtime", Environment.Version.ToString() },
                { "framework", RuntimeInformation.FrameworkDescription },
            });
            Console.Out.Write(line + "\n");
            Console.Out.Flush();
        }
    }

    // Strict "--name value" parser: a typo in a test's command line must fail the start, not be
    // silently ignored and produce a patient with the wrong ground truth.
    sealed class Args
    {
        readonly Dictionary<string, int> values = new Dictionary<string, int>();

        public static Args Parse(string[] argv, string usage, params string[] known)
        {
            var a = new Args();
            for (int i = 0; i < argv.Length; i++)
            {
                string name = argv[i];
                if (name == "--help" || name == "-h") { Console.Error.WriteLine(usage); Environment.Exit(0); }
                if (Array.IndexOf(known, name) < 0) Fail(usage, "unknown argument '" + name + "'");
                if (i + 1 >= argv.Length) Fail(usage, name + " needs a value");
                int v;
                if (!int.TryParse(argv[++i], NumberStyles.None, CultureInfo.InvariantCulture, out v))
                    Fail(usage, name + " needs a non-negative integer, got '" + argv[i] + "'");
                a.values[name] = v;
            }
            return a;
        }

        public int Get(string name, int dflt)
        {
            int v;
            return values.TryGetValue(name, out v) ? v : dflt;
        }

        public bool Has(string name) { return values.ContainsKey(name); }

        public static void Fail(string usage, string message)
        {
            Console.Error.WriteLine("error: " + message);
            Console.Error.WriteLine(usage);
            Environment.Exit(2);
        }
    }
}
