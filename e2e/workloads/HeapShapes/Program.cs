// HeapShapes: the heap shapes a retention analysis must get through, on request, each kept by
// one static field (its holder) so a test knows exactly what that field retains. Every endpoint
// builds one shape (dropping the previous one), collects the garbage its construction left (so the heap holds exactly what
// the shape keeps), and answers the ground truth: the holder, and how many objects of which
// types the shape is made of. See ../README.md for the endpoints.
using System;
using Workloads;

namespace HeapShapes
{
    static class Program
    {
        const string Usage = "usage: HeapShapes.dll [--port N (default 0 = ephemeral)]";

        static int Main(string[] argv)
        {
            Native.Check();
            var args = Args.Parse(argv, Usage, "--port");
            int requestedPort = args.Get("--port", 0);
            if (requestedPort > 65535) Args.Fail(Usage, "--port must be <= 65535");

            var server = new HttpServer("shapes");
            server.RouteHealthAndExit();
            server.Route("/list", req => Build(req, 1000000, Shapes.LinkedList));
            server.Route("/tree", req => Build(req, 1000000, Shapes.BalancedTree));
            server.Route("/cycles", req => Build(req, 1000000, Shapes.Cycles));
            server.Route("/dictionary", req => Build(req, 1000000, Shapes.Dictionary));
            server.Route("/concurrent", req => Build(req, 1000000, Shapes.ConcurrentDictionary));
            server.Route("/event", req => Build(req, 100000, Shapes.StaticEvent));
            server.Route("/timers", req => Build(req, 100000, Shapes.Timers));
            server.Route("/array", req => Build(req, 10000000, Shapes.SmallObjectsArray));
            server.Route("/big", req => Build(req, 20000000, Shapes.BigHeap));
            server.Start(requestedPort);

            Ready.Print(server.Port);
            server.RunAcceptLoop();
            return 0;
        }

        // n = the number of elements (nodes, entries, handlers, objects); each shape says what
        // that means in its answer.
        static HttpResponse Build(HttpRequest req, int dflt, Func<int, JObj> shape)
        {
            int n = req.Int("n", dflt, 1, 50000000);
            string err = req.Finish();
            if (err != null) return HttpResponse.Error(400, err);
            Shapes.Clear();
            JObj truth = shape(n);
            // Construction garbage (resized arrays, iterators) must not count as the shape.
            for (int i = 0; i < 2; i++)
            {
                GC.Collect(2, GCCollectionMode.Forced, true, true);
                GC.WaitForPendingFinalizers();
            }
            truth.Add("n", n);
            truth.Add("total_memory", GC.GetTotalMemory(false));
            return HttpResponse.Ok(truth);
        }
    }
}
