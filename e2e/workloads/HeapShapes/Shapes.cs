// The shapes. Each is held by one static field of Shapes (the holder a retention analysis must
// name) and made of objects of this workload's own types, counted in the answer ("counts"), so
// a test can compare per-type counts and what the holder retains with the dump.
//
// One shape at a time: building one drops the previous (several share the Item type).
//
// "holder_dominates": whether every counted object is reachable only through the holder. It is
// false for the timers, whose callbacks the runtime's timer queue also reaches.
using System;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.Threading;
using Workloads;

namespace HeapShapes
{
    sealed class Item
    {
        public long Id;
        public Item(long id) { Id = id; }
    }

    sealed class TreeNode
    {
        public TreeNode Left, Right;
        public int Key;
    }

    sealed class GraphNode
    {
        public GraphNode Next, Jump, Back;
        public int Id;
    }

    sealed class Subscriber
    {
        public int Id;
        public int Seen;
        public void OnChanged(object sender, EventArgs e) { Seen++; }
    }

    sealed class Payload
    {
        public long Id;
        public int Ticks;
        public void Touch() { Ticks++; }
    }

    sealed class Pair
    {
        public Item Item;
        public long Key;
    }

    static class Shapes
    {
        public static LinkedList<Item> List;
        public static TreeNode Tree;
        public static GraphNode[] Graph;
        public static Dictionary<int, Item> Map;
        public static ConcurrentDictionary<int, Item> ConcurrentMap;
        public static event EventHandler Changed;
        public static List<Timer> TimerList;
        public static Item[] Array;
        public static Pair[] Big;

        public static void Clear()
        {
            if (TimerList != null) foreach (var t in TimerList) t.Dispose();
            List = null; Tree = null; Graph = null; Map = null; ConcurrentMap = null; Changed = null;
            TimerList = null; Array = null; Big = null;
        }

        static JObj Truth(string field, bool dominates, JObj counts)
        {
            return new JObj {
                { "holder_type", "HeapShapes.Shapes" },
                { "holder_field", field },
                { "holder_dominates", dominates },
                { "counts", counts },
            };
        }

        // A doubly linked list (LinkedList<T> is circular: the first node's Prev is the last).
        public static JObj LinkedList(int n)
        {
            var list = new LinkedList<Item>();
            for (int i = 0; i < n; i++) list.AddLast(new Item(i));
            List = list;
            return Truth("List", true, new JObj { { "HeapShapes.Item", n } });
        }

        // A balanced binary search tree over the keys 0..n-1, built level by level.
        public static JObj BalancedTree(int n)
        {
            Tree = Subtree(0, n - 1);
            return Truth("Tree", true, new JObj { { "HeapShapes.TreeNode", n } });
        }

        static TreeNode Subtree(int lo, int hi)
        {
            if (lo > hi) return null;
            int mid = lo + (hi - lo) / 2;
            // Depth is log2(n): recursion is fine here.
            return new TreeNode { Key = mid, Left = Subtree(lo, mid - 1), Right = Subtree(mid + 1, hi) };
        }

        // A ring of n nodes, each also pointing at two pseudo-random others: cycles everywhere.
        public static JObj Cycles(int n)
        {
            var nodes = new GraphNode[n];
            for (int i = 0; i < n; i++) nodes[i] = new GraphNode { Id = i };
            uint x = 2463534242;
            for (int i = 0; i < n; i++)
            {
                x ^= x << 13; x ^= x >> 17; x ^= x << 5;
                nodes[i].Next = nodes[(i + 1) % n];
                nodes[i].Jump = nodes[(int)(x % (uint)n)];
                nodes[i].Back = nodes[(int)((x >> 7) % (uint)n)];
            }
            Graph = nodes;
            return Truth("Graph", true, new JObj { { "HeapShapes.GraphNode", n } });
        }

        public static JObj Dictionary(int n)
        {
            var map = new Dictionary<int, Item>();
            for (int i = 0; i < n; i++) map[i] = new Item(i);
            Map = map;
            return Truth("Map", true, new JObj { { "HeapShapes.Item", n } });
        }

        public static JObj ConcurrentDictionary(int n)
        {
            var map = new ConcurrentDictionary<int, Item>();
            for (int i = 0; i < n; i++) map[i] = new Item(i);
            ConcurrentMap = map;
            return Truth("ConcurrentMap", true, new JObj { { "HeapShapes.Item", n } });
        }

        // n subscribers that never unsubscribe: one invocation list of n delegates.
        public static JObj StaticEvent(int n)
        {
            for (int i = 0; i < n; i++) Changed += new Subscriber { Id = i }.OnChanged;
            return Truth("Changed", true, new JObj { { "HeapShapes.Subscriber", n } });
        }

        // What the subscribers are there for (also keeps mcs from calling the event unused).
        public static void RaiseChanged()
        {
            var handlers = Changed;
            if (handlers != null) handlers(null, EventArgs.Empty);
        }

        // n hourly timers whose callbacks are closures over a payload each.
        public static JObj Timers(int n)
        {
            var timers = new List<Timer>(n);
            for (int i = 0; i < n; i++)
            {
                var payload = new Payload { Id = i };
                timers.Add(new Timer(_ => payload.Touch(), null, 3600000, 3600000));
            }
            TimerList = timers;
            return Truth("TimerList", false, new JObj { { "HeapShapes.Payload", n } });
        }

        // n small objects in one array.
        public static JObj SmallObjectsArray(int n)
        {
            var items = new Item[n];
            for (int i = 0; i < n; i++) items[i] = new Item(i);
            Array = items;
            return Truth("Array", true, new JObj { { "HeapShapes.Item", n } });
        }

        // n objects in all: n/2 pairs, each holding an item, in one array.
        public static JObj BigHeap(int n)
        {
            int pairs = n / 2;
            var big = new Pair[pairs];
            for (int i = 0; i < pairs; i++) big[i] = new Pair { Key = i, Item = new Item(i) };
            Big = big;
            return Truth("Big", true, new JObj { { "HeapShapes.Pair", pairs }, { "HeapShapes.Item", pairs } });
        }
    }
}
