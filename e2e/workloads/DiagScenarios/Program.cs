// DiagScenarios: a deliberately sick .NET process, modelled on Microsoft's DiagnosticScenarios
// sample. Every endpoint reports exactly what it did so integration tests can compare dumpwatch's
// findings against ground truth. See ../README.md for the endpoint reference.
using System;
using System.Threading;
using Workloads;

namespace DiagScenarios
{
    static class Program
    {
        const string Usage = "usage: DiagScenarios.dll [--port N (default 0 = ephemeral)] [--leak-count N] [--app-metrics 1]";

        static int port;

        static int Main(string[] argv)
        {
            Native.Check();
            // First, so that first_chance_exceptions covers the whole life of the process.
            ExceptionScenario.Install();
            var args = Args.Parse(argv, Usage, "--port", "--leak-count", "--app-metrics");
            int requestedPort = args.Get("--port", 0);
            if (requestedPort > 65535) Args.Fail(Usage, "--port must be <= 65535");
            int leak = args.Get("--leak-count", 0);
            if (leak > CustomerCache.MaxCustomers) Args.Fail(Usage, "--leak-count too large");
            if (leak > 0) Processor.Current.Cache.Add(leak);
            if (args.Get("--app-metrics", 0) == 1) AppMetrics.Install();

            var server = new HttpServer("diag");
            server.RouteHealthAndExit();
            server.Route("/deadlock", Deadlocks.Handle);
            server.Route("/leak", LeakScenario.Handle);
            server.Route("/cpu", CpuScenario.Handle);
            server.Route("/exceptions", ExceptionScenario.Handle);
            server.Route("/gc", GcScenario.Handle);
            server.Route("/contend", ContendScenario.Handle);
            server.Route("/taskwait", Hangs.TaskWait);
            server.Route("/block", Hangs.Block);
            server.Route("/crash", CrashScenario.Handle);
            server.Route("/app-metrics", AppMetrics.Handle);
            server.Route("/truth", Truth);
            server.Start(requestedPort);
            port = server.Port;

            Ready.Print(port);
            // The main thread stays the accept loop so the process lives exactly as long as it
            // serves; every other thread we create is a background thread.
            server.RunAcceptLoop();
            return 0;
        }

        static HttpResponse Truth(HttpRequest req)
        {
            string err = req.Finish();
            if (err != null) return HttpResponse.Error(400, err);
            return HttpResponse.Ok(new JObj {
                { "pid", Native.Pid() },
                { "port", port },
                { "runtime", Environment.Version.ToString() },
                { "framework", System.Runtime.InteropServices.RuntimeInformation.FrameworkDescription },
                { "total_customers", Processor.Current.Cache.Count },
                { "customer_type", typeof(Customer).FullName },
                { "leak_root", "DiagScenarios.Processor.Current -> cache -> customers" },
                { "deadlocks", Deadlocks.Snapshot() },
                { "exceptions_thrown", ExceptionScenario.Total },
                { "first_chance_exceptions", ExceptionScenario.FirstChance },
                { "gc_collections", GcScenario.Counts() },
                { "total_memory", GC.GetTotalMemory(false) },
                { "thread_count", Native.ThreadCount() },
            });
        }
    }
}
