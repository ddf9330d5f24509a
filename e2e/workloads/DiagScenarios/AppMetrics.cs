// The app's own metrics, set to known values by /app-metrics: what a metric trigger watches.
// * EventCounters (every runtime from .NET Core 3.0): the EventSource "DiagScenarios.Queue" with a
//   PollingCounter "queue-length".
// * System.Diagnostics.Metrics (.NET 6+): the Meter "DiagScenarios.App" with an ObservableGauge<int>
//   "queue-length" and a Histogram<double> "request-duration" (ms). The workloads compile against
//   .NET Core 3.1, which has no Meter type, so the meter is made by reflection when the runtime
//   has one.
using System;
using System.Diagnostics.Tracing;
using System.Reflection;
using System.Threading;
using Workloads;

namespace DiagScenarios
{
    [EventSource(Name = "DiagScenarios.Queue")]
    sealed class QueueEventSource : EventSource
    {
        public static readonly QueueEventSource Log = new QueueEventSource();

        // Kept in a field: a counter is published only while referenced.
        internal readonly PollingCounter QueueLengthCounter;

        QueueEventSource()
        {
            QueueLengthCounter = new PollingCounter("queue-length", this, () => AppMetrics.QueueLength) {
                DisplayName = "Queue Length",
            };
        }
    }

    static class AppMetrics
    {
        public const string EventSourceName = "DiagScenarios.Queue";
        public const string MeterName = "DiagScenarios.App";

        static int queueLength;
        static int requestDurationMs;
        static object meter;
        static Action<double> recordDuration;
        static string meterError;

        public static int QueueLength { get { return Volatile.Read(ref queueLength); } }

        static readonly object installLock = new object();
        static bool installed;

        // With --app-metrics 1 at start-up (the EventSource and the meter exist before any session
        // asks, as in an app that has them), else at the first /app-metrics: other tests' processes
        // get no extra thread, assembly or EventSource.
        public static void Install()
        {
            lock (installLock)
            {
                if (installed) return;
                installed = true;
            }
            GC.KeepAlive(QueueEventSource.Log);
            try { CreateMeter(); }
            catch (Exception e) { meterError = e.GetType().Name + ": " + e.Message; }
            var recorder = new Thread(RecordDurations) { IsBackground = true, Name = "app-metrics-recorder" };
            recorder.Start();
        }

        static void CreateMeter()
        {
            Type meterType = Type.GetType("System.Diagnostics.Metrics.Meter, System.Diagnostics.DiagnosticSource");
            if (meterType == null) { meterError = "no System.Diagnostics.Metrics.Meter in this runtime"; return; }
            meter = Activator.CreateInstance(meterType, new object[] { MeterName });
            MethodInfo gauge = null, histogram = null;
            foreach (var m in meterType.GetMethods())
            {
                var p = m.GetParameters();
                // CreateObservableGauge<T>(string name, Func<T> observeValue, string unit, string description)
                if (m.Name == "CreateObservableGauge" && p.Length == 4 && p[1].ParameterType.IsGenericType
                    && p[1].ParameterType.GetGenericTypeDefinition() == typeof(Func<>)
                    && p[1].ParameterType.GetGenericArguments()[0].IsGenericParameter)
                    gauge = m;
                // CreateHistogram<T>(string name, string unit, string description)
                if (m.Name == "CreateHistogram" && p.Length == 3 && p[1].ParameterType == typeof(string))
                    histogram = m;
            }
            if (gauge == null || histogram == null) { meterError = "Meter has no CreateObservableGauge/CreateHistogram overload we know"; return; }
            Func<int> observe = () => QueueLength;
            gauge.MakeGenericMethod(typeof(int)).Invoke(meter, new object[] { "queue-length", observe, null, "work items waiting" });
            object h = histogram.MakeGenericMethod(typeof(double)).Invoke(meter, new object[] { "request-duration", "ms", "request duration" });
            MethodInfo record = h.GetType().GetMethod("Record", new[] { typeof(double) });
            recordDuration = (Action<double>)Delegate.CreateDelegate(typeof(Action<double>), h, record);
        }

        // 50 recordings a second of the configured duration, so every interval's quantiles are it.
        static void RecordDurations()
        {
            while (true)
            {
                int ms = Volatile.Read(ref requestDurationMs);
                if (ms > 0 && recordDuration != null) recordDuration(ms);
                Thread.Sleep(20);
            }
        }

        public static HttpResponse Handle(HttpRequest req)
        {
            Install();
            int queue = req.Int("queue", QueueLength, 0, 1000000);
            int duration = req.Int("duration_ms", Volatile.Read(ref requestDurationMs), 0, 600000);
            string err = req.Finish();
            if (err != null) return HttpResponse.Error(400, err);
            Volatile.Write(ref queueLength, queue);
            Volatile.Write(ref requestDurationMs, duration);
            return HttpResponse.Ok(new JObj {
                { "queue_length", queue },
                { "request_duration_ms", duration },
                { "event_source", EventSourceName },
                { "counter", "queue-length" },
                { "meter", meter != null ? MeterName : null },
                { "meter_error", meterError },
                { "gauge", "queue-length" },
                { "histogram", "request-duration" },
            });
        }
    }
}
