// The leak shapes and the look-alikes. Every holder is a static field so that its name is the
// ground truth a heap analysis must print:
//
//   static event LeakPatterns.Catalog.Changed     -> invocation list -> N x Observer   (event handlers)
//   TimerQueue (runtime) -> TimerQueueTimer -> closure -> Session -> its own Timer      (timers)
//   static LeakPatterns.RetryQueue.Pending        -> List<Action> -> closure -> Order  (closures)
//   static LeakPatterns.OrderBook.Open            -> Dictionary<int, Order> -> Order   (collection)
//   finalizer queue -> TempFile, the finalizer thread stuck in Blocker.Finalize        (finalization)
//   strong GC handle -> NativeSubscription; pinned GC handle -> byte[]                 (GC handles)
//
// and three that must not be reported as leaks: LruCache.Shared (bounded, at steady state),
// Countries.ByCode (a lookup table loaded at start, never changed) and Churn (short-lived).
using System;
using System.Collections.Generic;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Threading;
using Workloads;

namespace LeakPatterns
{
    sealed class Observer
    {
        readonly byte[] state = new byte[128];
        public int Seen;

        public void OnChanged(object sender, EventArgs e) { Seen += state.Length; }
    }

    static class Catalog
    {
        // A field-like event: the compiler names its backing field `Changed` as well, and that
        // static field is the GC root a heap analysis sees.
        public static event EventHandler Changed;

        static readonly object gate = new object();
        static int subscribers;

        public static int Subscribers { get { lock (gate) return subscribers; } }

        public static HttpResponse Handle(HttpRequest req)
        {
            int n = req.Int("count", 1000, 0, 1000000);
            string err = req.Finish();
            if (err != null) return HttpResponse.Error(400, err);
            lock (gate)
            {
                // Subscribed and forgotten: nothing but the event references these observers.
                for (int i = 0; i < n; i++) Changed += new Observer().OnChanged;
                subscribers += n;
                return HttpResponse.Ok(new JObj {
                    { "added", n }, { "total", subscribers }, { "event", "LeakPatterns.Catalog.Changed" },
                    { "subscriber_type", typeof(Observer).FullName },
                });
            }
        }
    }

    sealed class Session
    {
        readonly byte[] buffer = new byte[2048];
        public Timer Timer;
        public int Touches;

        public void Touch() { Touches += buffer.Length; }
    }

    static class Sessions
    {
        static readonly object gate = new object();
        static int count;

        public static int Count { get { lock (gate) return count; } }

        // The callback closes over `session` (a compiler-generated closure class) and the session
        // keeps its own timer, which is never disposed: only the runtime's timer queue holds
        // them, and it holds them for as long as the timer is scheduled (every hour, forever).
        [MethodImpl(MethodImplOptions.NoInlining)]
        static void Start()
        {
            var session = new Session();
            session.Timer = new Timer(_ => session.Touch(), null, 3600000, 3600000);
        }

        public static HttpResponse Handle(HttpRequest req)
        {
            int n = req.Int("count", 1000, 0, 1000000);
            string err = req.Finish();
            if (err != null) return HttpResponse.Error(400, err);
            lock (gate)
            {
                for (int i = 0; i < n; i++) Start();
                count += n;
                return HttpResponse.Ok(new JObj {
                    { "added", n }, { "total", count }, { "target_type", typeof(Session).FullName },
                });
            }
        }
    }

    sealed class Order
    {
        public readonly int Id;
        readonly byte[] lines = new byte[512];
        public int Retries;

        public Order(int id) { Id = id; }

        public void Retry() { Retries += lines.Length; }
    }

    static class RetryQueue
    {
        static readonly List<Action> Pending = new List<Action>();
        static int nextId = 1000000000;

        public static int Count { get { lock (Pending) return Pending.Count; } }

        public static HttpResponse Handle(HttpRequest req)
        {
            int n = req.Int("count", 1000, 0, 1000000);
            string err = req.Finish();
            if (err != null) return HttpResponse.Error(400, err);
            lock (Pending)
            {
                for (int i = 0; i < n; i++)
                {
                    // One closure per order: the lambda captures this iteration's `order`.
                    var order = new Order(nextId++);
                    Pending.Add(() => order.Retry());
                }
                return HttpResponse.Ok(new JObj {
                    { "added", n }, { "total", Pending.Count }, { "capture_type", typeof(Order).FullName },
                });
            }
        }
    }

    static class OrderBook
    {
        static readonly Dictionary<int, Order> Open = new Dictionary<int, Order>();

        public static int Count { get { lock (Open) return Open.Count; } }

        public static HttpResponse Handle(HttpRequest req)
        {
            int n = req.Int("count", 1000, 0, 10000000);
            string err = req.Finish();
            if (err != null) return HttpResponse.Error(400, err);
            lock (Open)
            {
                // Orders are opened and never closed.
                for (int i = 0; i < n; i++)
                {
                    int id = Open.Count + 1;
                    Open.Add(id, new Order(id));
                }
                return HttpResponse.Ok(new JObj {
                    { "added", n }, { "total", Open.Count }, { "type", typeof(Order).FullName },
                });
            }
        }
    }

    // What native interop leaves behind: a subscription handed to native code as a GCHandle
    // (strong) and a buffer pinned for it, neither ever freed. Only the handles' IntPtrs are kept,
    // which the GC does not follow: the handle table is all that holds the objects.
    sealed class NativeSubscription
    {
        public readonly byte[] State = new byte[1024];
        public readonly int Id;
        public NativeSubscription(int id) { Id = id; }
    }

    static class NativeHandles
    {
        public const int PinnedBufferBytes = 4096;
        static readonly List<IntPtr> Strong = new List<IntPtr>();
        static readonly List<IntPtr> Pinned = new List<IntPtr>();

        public static int StrongCount { get { lock (Strong) return Strong.Count; } }
        public static int PinnedCount { get { lock (Strong) return Pinned.Count; } }

        public static HttpResponse Handle(HttpRequest req)
        {
            int n = req.Int("count", 1000, 0, 1000000);
            int pinned = req.Int("pinned", 0, 0, 1000000);
            string err = req.Finish();
            if (err != null) return HttpResponse.Error(400, err);
            lock (Strong)
            {
                for (int i = 0; i < n; i++)
                {
                    var sub = new NativeSubscription(Strong.Count + 1);
                    Strong.Add(GCHandle.ToIntPtr(GCHandle.Alloc(sub)));
                }
                for (int i = 0; i < pinned; i++)
                {
                    var buffer = new byte[PinnedBufferBytes];
                    Pinned.Add(GCHandle.ToIntPtr(GCHandle.Alloc(buffer, GCHandleType.Pinned)));
                }
                return HttpResponse.Ok(new JObj {
                    { "strong", Strong.Count }, { "pinned", Pinned.Count },
                    { "type", typeof(NativeSubscription).FullName },
                });
            }
        }
    }

    sealed class Blocker
    {
        public static readonly ManualResetEventSlim Entered = new ManualResetEventSlim(false);
        static readonly ManualResetEventSlim Never = new ManualResetEventSlim(false);

        // For /exit only: the runtime's shutdown waits for the finalizer thread.
        public static void Release() { Never.Set(); }

        // A finalizer that waits for something that never happens: the finalizer thread stops
        // here, and every finalizable object that dies afterwards waits in the queue forever.
        ~Blocker()
        {
            Entered.Set();
            Never.Wait();
        }
    }

    sealed class TempFile
    {
        readonly byte[] buffer = new byte[1024];

        ~TempFile() { Interlocked.Add(ref Finalizers.Finalized, buffer.Length > 0 ? 1 : 0); }
    }

    static class Finalizers
    {
        public static int Finalized;
        static readonly object gate = new object();
        static int created;
        static bool blocked;

        public static int Waiting { get { lock (gate) return created - Volatile.Read(ref Finalized); } }
        public static bool Blocked { get { lock (gate) return blocked; } }

        [MethodImpl(MethodImplOptions.NoInlining)]
        static void Abandon(int n)
        {
            for (int i = 0; i < n; i++) new TempFile();
        }

        [MethodImpl(MethodImplOptions.NoInlining)]
        static void AbandonBlocker() { new Blocker(); }

        public static HttpResponse Handle(HttpRequest req)
        {
            int n = req.Int("count", 1000, 0, 1000000);
            string err = req.Finish();
            if (err != null) return HttpResponse.Error(400, err);
            lock (gate)
            {
                if (!blocked)
                {
                    AbandonBlocker();
                    GC.Collect();
                    if (!Blocker.Entered.Wait(10000))
                        return HttpResponse.Error(500, "the finalizer thread did not reach Blocker.Finalize within 10 s");
                    blocked = true;
                }
                Abandon(n);
                // Found dead, queued for finalization, never finalized: the thread is stuck.
                GC.Collect();
                created += n;
                return HttpResponse.Ok(new JObj {
                    { "added", n }, { "waiting", created - Volatile.Read(ref Finalized) },
                    { "finalized", Volatile.Read(ref Finalized) }, { "type", typeof(TempFile).FullName },
                    { "finalizer_blocked_in", "LeakPatterns.Blocker.Finalize" },
                });
            }
        }
    }

    sealed class CacheEntry
    {
        public readonly int Key;
        readonly byte[] value = new byte[1024];

        public CacheEntry(int key) { Key = key; value[0] = (byte)key; }
    }

    // A bounded LRU cache: at most Capacity entries, the least recently used evicted first.
    sealed class LruCache
    {
        public static readonly LruCache Shared = new LruCache(5000);

        public readonly int Capacity;
        readonly Dictionary<int, LinkedListNode<CacheEntry>> map = new Dictionary<int, LinkedListNode<CacheEntry>>();
        readonly LinkedList<CacheEntry> order = new LinkedList<CacheEntry>();
        uint seed = 12345;

        LruCache(int capacity) { Capacity = capacity; }

        public int Count { get { lock (map) return map.Count; } }

        void Touch(int key)
        {
            LinkedListNode<CacheEntry> node;
            if (map.TryGetValue(key, out node))
            {
                order.Remove(node);
                order.AddFirst(node);
                return;
            }
            map[key] = order.AddFirst(new CacheEntry(key));
            if (map.Count > Capacity)
            {
                var last = order.Last;
                order.RemoveLast();
                map.Remove(last.Value.Key);
            }
        }

        public static HttpResponse Handle(HttpRequest req)
        {
            int ops = req.Int("ops", 10000, 0, 10000000);
            int keys = req.Int("keys", 20000, 1, 10000000);
            string err = req.Finish();
            if (err != null) return HttpResponse.Error(400, err);
            var c = Shared;
            lock (c.map)
            {
                // A fixed pseudo-random key sequence: the same requests give the same cache.
                for (int i = 0; i < ops; i++)
                {
                    c.seed = c.seed * 1103515245 + 12345;
                    c.Touch((int)((c.seed >> 8) % (uint)keys));
                }
                return HttpResponse.Ok(new JObj {
                    { "ops", ops }, { "entries", c.map.Count }, { "capacity", c.Capacity },
                    { "type", typeof(CacheEntry).FullName },
                });
            }
        }
    }

    sealed class Country
    {
        public readonly string Code;
        public readonly string Name;
        readonly byte[] flag = new byte[64];

        public Country(string code, string name) { Code = code; Name = name; flag[0] = 1; }
    }

    static class Countries
    {
        static readonly Dictionary<string, Country> ByCode = new Dictionary<string, Country>();

        public static int Count { get { lock (ByCode) return ByCode.Count; } }

        // Loaded once; later calls with the same size change nothing, another size is refused.
        public static HttpResponse Handle(HttpRequest req)
        {
            int rows = req.Int("rows", 50000, 1, 10000000);
            string err = req.Finish();
            if (err != null) return HttpResponse.Error(400, err);
            lock (ByCode)
            {
                if (ByCode.Count != 0 && ByCode.Count != rows)
                    return HttpResponse.Error(409, "the table is loaded with " + ByCode.Count + " rows");
                for (int i = ByCode.Count; i < rows; i++)
                {
                    string code = "C" + i.ToString("D7");
                    ByCode.Add(code, new Country(code, "Country " + i));
                }
                return HttpResponse.Ok(new JObj { { "rows", ByCode.Count }, { "type", typeof(Country).FullName } });
            }
        }
    }

    sealed class RequestBuffer
    {
        public readonly byte[] Data = new byte[4096];
    }

    static class Churn
    {
        static long total;
        public static long Sink;

        public static long Total { get { return Interlocked.Read(ref total); } }

        public static HttpResponse Handle(HttpRequest req)
        {
            int n = req.Int("count", 10000, 0, 10000000);
            string err = req.Finish();
            if (err != null) return HttpResponse.Error(400, err);
            long sum = 0;
            // Each buffer dies at the end of its iteration.
            for (int i = 0; i < n; i++) sum += new RequestBuffer().Data.Length;
            Sink = sum;
            Interlocked.Add(ref total, n);
            return HttpResponse.Ok(new JObj { { "allocated", n }, { "total", Total }, { "type", typeof(RequestBuffer).FullName } });
        }
    }
}
