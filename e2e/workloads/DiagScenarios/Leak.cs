// The memory-leak scenario. The type and field names are part of the ground truth that heap tests
// assert on (histograms by type, GC-root paths), so do not rename them:
//
//   static DiagScenarios.Processor.Current            (static field, the GC root)
//     -> Processor.cache       : DiagScenarios.CustomerCache
//       -> CustomerCache.customers : List<DiagScenarios.Customer>
//         -> Customer.Name     : System.String  ("customer-000000123")
//
// Invariant tests rely on: the number of DiagScenarios.Customer objects on the heap (live or dead)
// equals CustomerCache.Count at every instant. Customers are only ever constructed in
// CustomerCache.Add, straight into the list, and never removed, so no dead or temporary Customer
// can exist.
using System;
using System.Collections.Generic;
using System.Globalization;
using System.Threading;

namespace DiagScenarios
{
    sealed class Customer
    {
        public int Id;
        public string Name;

        public Customer(int id, string name)
        {
            Id = id;
            Name = name;
        }
    }

    sealed class CustomerCache
    {
        // Digits in a name: fixed width keeps every Name string the same size, so the byte
        // estimate below is exact rather than approximate. 9 digits cover every id we allow.
        public const int IdDigits = 9;
        public const string NamePrefix = "customer-";
        public const int MaxCustomers = 999999999;

        // Bytes one customer adds on a 64-bit CLR (both 3.1 and 8):
        //   Customer: 8 (header) + 8 (method table) + 8 (Name ref) + 4 (Id), padded to 8 = 32
        //   Name:     8 + 8 + 4 (length) + 2 * (18 chars + NUL terminator) = 58, padded to 8 = 64
        // The List<Customer> backing array (8 bytes a slot, amortised doubling) is not counted:
        // it is reported separately as measured allocation (allocated_bytes).
        public const int BytesPerCustomer = 96;

        readonly object gate = new object();
        readonly List<Customer> customers = new List<Customer>();

        public int Count
        {
            get { lock (gate) return customers.Count; }
        }

        // Returns the new total. Ids are 1..total, contiguous, in insertion order.
        public int Add(int count)
        {
            lock (gate)
            {
                // Building the name in a reused buffer means the only allocations per customer are
                // the Customer and its Name string: no garbage intermediates to blur heap deltas.
                char[] buf = new char[NamePrefix.Length + IdDigits];
                NamePrefix.CopyTo(0, buf, 0, NamePrefix.Length);
                for (int i = 0; i < count; i++)
                {
                    int id = customers.Count + 1;
                    int v = id;
                    for (int d = buf.Length - 1; d >= NamePrefix.Length; d--)
                    {
                        buf[d] = (char)('0' + v % 10);
                        v /= 10;
                    }
                    customers.Add(new Customer(id, new string(buf)));
                }
                return customers.Count;
            }
        }
    }

    sealed class Processor
    {
        // A plain static field (not an auto-property) so the root shows up as "Current", not as a
        // compiler-generated backing field.
        public static readonly Processor Current = new Processor();

        readonly CustomerCache cache = new CustomerCache();

        public CustomerCache Cache { get { return cache; } }
    }

    static class LeakScenario
    {
        public static Workloads.HttpResponse Handle(Workloads.HttpRequest req)
        {
            bool byCount = req.Has("count"), byKb = req.Has("kb");
            int count = req.Int("count", 0, 0, 20000000);
            int kb = req.Int("kb", 0, 0, 1000000);
            string err = req.Finish();
            if (err == null && byCount == byKb) err = "give exactly one of count=N (customers) or kb=N (KiB)";
            if (err != null) return Workloads.HttpResponse.Error(400, err);

            // kb -> count: floor(kb * 1024 / 96), so approx_bytes_added never exceeds the request.
            int n = byCount ? count : (int)((long)kb * 1024 / CustomerCache.BytesPerCustomer);
            var cache = Processor.Current.Cache;
            if ((long)cache.Count + n > CustomerCache.MaxCustomers)
                return Workloads.HttpResponse.Error(400, "would exceed " + CustomerCache.MaxCustomers + " customers");

            long before = GC.GetAllocatedBytesForCurrentThread();
            int total = cache.Add(n);
            long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
            return Workloads.HttpResponse.Ok(new Workloads.JObj {
                { "added", n },
                { "total_customers", total },
                { "approx_bytes_added", (long)n * CustomerCache.BytesPerCustomer },
                { "bytes_per_customer", CustomerCache.BytesPerCustomer },
                { "allocated_bytes", allocated },
                { "type", typeof(Customer).FullName },
            });
        }
    }
}
