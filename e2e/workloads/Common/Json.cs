// Minimal JSON writer shared by every workload. We cannot count on System.Text.Json behaving the
// same on 3.1 and 8 (and mcs compiles against the 3.1 implementation assemblies), and the
// responses are tiny, so a hand-rolled serializer keeps the output byte-for-byte predictable.
using System;
using System.Collections;
using System.Collections.Generic;
using System.Globalization;
using System.Text;

namespace Workloads
{
    // An ordered JSON object: field order in responses is stable, which keeps test failures and
    // README examples readable. Supports collection initializers: new JObj { { "ok", true } }.
    sealed class JObj : IEnumerable
    {
        readonly List<KeyValuePair<string, object>> fields = new List<KeyValuePair<string, object>>();

        public JObj Add(string key, object value)
        {
            fields.Add(new KeyValuePair<string, object>(key, value));
            return this;
        }

        public IEnumerator GetEnumerator() { return fields.GetEnumerator(); }

        internal List<KeyValuePair<string, object>> Fields { get { return fields; } }
    }

    static class Json
    {
        public static string Serialize(object value)
        {
            var sb = new StringBuilder();
            Write(sb, value);
            return sb.ToString();
        }

        static void Write(StringBuilder sb, object v)
        {
            if (v == null) { sb.Append("null"); return; }
            if (v is bool) { sb.Append((bool)v ? "true" : "false"); return; }
            if (v is string) { WriteString(sb, (string)v); return; }
            if (v is int) { sb.Append(((int)v).ToString(CultureInfo.InvariantCulture)); return; }
            if (v is long) { sb.Append(((long)v).ToString(CultureInfo.InvariantCulture)); return; }
            if (v is double)
            {
                double d = (double)v;
                // JSON has no NaN/Infinity; null is the least surprising stand-in.
                if (double.IsNaN(d) || double.IsInfinity(d)) sb.Append("null");
                else sb.Append(d.ToString("0.###", CultureInfo.InvariantCulture));
                return;
            }
            var obj = v as JObj;
            if (obj != null)
            {
                sb.Append('{');
                bool first = true;
                foreach (var kv in obj.Fields)
                {
                    if (!first) sb.Append(',');
                    first = false;
                    WriteString(sb, kv.Key);
                    sb.Append(':');
                    Write(sb, kv.Value);
                }
                sb.Append('}');
                return;
            }
            var seq = v as IEnumerable;
            if (seq != null)
            {
                sb.Append('[');
                bool first = true;
                foreach (var item in seq)
                {
                    if (!first) sb.Append(',');
                    first = false;
                    Write(sb, item);
                }
                sb.Append(']');
                return;
            }
            // Falling back to ToString() would silently produce invalid JSON; make the bug obvious.
            throw new ArgumentException("Json.Serialize: unsupported type " + v.GetType().FullName);
        }

        static void WriteString(StringBuilder sb, string s)
        {
            sb.Append('"');
            foreach (char c in s)
            {
                switch (c)
                {
                    case '"': sb.Append("\\\""); break;
                    case '\\': sb.Append("\\\\"); break;
                    case '\n': sb.Append("\\n"); break;
                    case '\r': sb.Append("\\r"); break;
                    case '\t': sb.Append("\\t"); break;
                    default:
                        if (c < 0x20) sb.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
                        else sb.Append(c);
                        break;
                }
            }
            sb.Append('"');
        }
    }
}
