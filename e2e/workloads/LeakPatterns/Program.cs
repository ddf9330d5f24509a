// LeakPatterns: the common .NET leak shapes, each on request, and the harmless shapes that look
// like them, each reporting exactly what it holds so heap tests can assert on ground truth.
// See ../README.md for the endpoint reference. Type, field and event names are part of that
// ground truth: do not rename them.
using System;
using Workloads;

namespace LeakPatterns
{
    static class Program
    {
        const string Usage = "usage: LeakPatterns.dll [--port N (default 0 = ephemeral)]";

        static int Main(string[] argv)
        {
            Native.Check();
            var args = Args.Parse(argv, Usage, "--port");
            int requestedPort = args.Get("--port", 0);
            if (requestedPort > 65535) Args.Fail(Usage, "--port must be <= 65535");

            var server = new HttpServer("leaks");
            // A stuck finalizer thread keeps the runtime from exiting: let it go first.
            server.RouteHealthAndExit(Blocker.Release);
            server.Route("/events", Catalog.Handle);
            server.Route("/timers", Sessions.Handle);
            server.Route("/closures", RetryQueue.Handle);
            server.Route("/orders", OrderBook.Handle);
            server.Route("/finalizers", Finalizers.Handle);
            server.Route("/handles", NativeHandles.Handle);
            server.Route("/lru", LruCache.Handle);
            server.Route("/table", Countries.Handle);
            server.Route("/churn", Churn.Handle);
            server.Route("/truth", Truth);
            server.Start(requestedPort);
            Ready.Print(server.Port);
            server.RunAcceptLoop();
            return 0;
        }

        static HttpResponse Truth(HttpRequest req)
        {
            string err = req.Finish();
            if (err != null) return HttpResponse.Error(400, err);
            return HttpResponse.Ok(new JObj {
                { "pid", Native.Pid() },
                { "runtime", Environment.Version.ToString() },
                { "event_subscribers", Catalog.Subscribers },
                { "event", "LeakPatterns.Catalog.Changed" },
                { "subscriber_type", typeof(Observer).FullName },
                { "timers", Sessions.Count },
                { "timer_target_type", typeof(Session).FullName },
                { "closures", RetryQueue.Count },
                { "closure_capture_type", typeof(Order).FullName },
                { "open_orders", OrderBook.Count },
                { "order_type", typeof(Order).FullName },
                { "finalizable_waiting", Finalizers.Waiting },
                { "finalizable_type", typeof(TempFile).FullName },
                { "finalizer_blocked_in", Finalizers.Blocked ? "LeakPatterns.Blocker.Finalize" : null },
                { "strong_handles", NativeHandles.StrongCount },
                { "strong_handle_type", typeof(NativeSubscription).FullName },
                { "pinned_handles", NativeHandles.PinnedCount },
                { "pinned_buffer_bytes", NativeHandles.PinnedBufferBytes },
                { "lru_entries", LruCache.Shared.Count },
                { "lru_capacity", LruCache.Shared.Capacity },
                { "lru_entry_type", typeof(CacheEntry).FullName },
                { "table_rows", Countries.Count },
                { "table_row_type", typeof(Country).FullName },
                { "churned", Churn.Total },
                { "churn_type", typeof(RequestBuffer).FullName },
            });
        }
    }
}
