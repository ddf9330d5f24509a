// Idle: a healthy, quiet .NET process for "nothing is wrong" tests. It allocates nothing after
// start-up, holds no locks, throws nothing and burns no CPU; the main thread just sleeps.
using System;
using System.Threading;
using Workloads;

namespace Idle
{
    static class Program
    {
        const string Usage = "usage: Idle.dll [--port N (0/absent = no listener)] [--exit-after-ms N]";

        static int Main(string[] argv)
        {
            Native.Check();
            var args = Args.Parse(argv, Usage, "--port", "--exit-after-ms");
            int port = args.Get("--port", 0);
            if (port > 65535) Args.Fail(Usage, "--port must be <= 65535");

            // Port 0 means "no listener" here (unlike DiagScenarios): an idle patient should not
            // even have an accept thread unless a test explicitly wants to reach it.
            if (port > 0)
            {
                var server = new HttpServer("idle");
                server.RouteHealthAndExit();
                server.Start(port);
                port = server.Port;
                server.StartAcceptThread();
            }

            Ready.Print(port);
            if (args.Has("--exit-after-ms")) Thread.Sleep(args.Get("--exit-after-ms", 0));
            else Thread.Sleep(Timeout.Infinite);
            return 0;
        }
    }
}
