// A deliberately tiny HTTP/1.1 server on TcpListener. HttpListener is unusable on .NET Core 3.1
// here (it wants libssl), and the workloads only need "GET, one request per connection".
//
// Design constraints that come from the workloads being test patients:
//  * Every request runs on its own dedicated background thread, so a request that never returns
//    (or a deadlock it causes) can never block the listener or another request, and no request
//    depends on thread-pool injection speed (which differs between 3.1 and 8).
//  * The happy path throws no exceptions at all (TryParse, no control-flow exceptions), so
//    exception counters seen by our tracer are dominated by what /exceptions throws on purpose.
using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Globalization;
using System.IO;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Threading;

namespace Workloads
{
    sealed class HttpRequest
    {
        public string Method;
        public string Target;
        public string Path;
        public Dictionary<string, string> Query = new Dictionary<string, string>();

        // Typed, validated access to query parameters. Errors accumulate instead of throwing so
        // a handler checks Error once and answers 400.
        readonly HashSet<string> consumed = new HashSet<string>();
        public string Error;

        public int Int(string name, int dflt, int min, int max)
        {
            consumed.Add(name);
            string raw;
            if (!Query.TryGetValue(name, out raw)) return dflt;
            int v;
            if (!int.TryParse(raw, NumberStyles.None, CultureInfo.InvariantCulture, out v) || v < min || v > max)
            {
                if (Error == null)
                    Error = "query parameter '" + name + "' must be an integer in [" + min + ", " + max + "], got '" + raw + "'";
                return dflt;
            }
            return v;
        }

        public bool Has(string name) { return Query.ContainsKey(name); }

        // A word parameter (null if absent); the handler checks the value itself.
        public string Str(string name)
        {
            consumed.Add(name);
            string raw;
            return Query.TryGetValue(name, out raw) ? raw : null;
        }

        // Called after all Int() calls: parameters nobody asked for are typos in a test.
        public string Finish()
        {
            if (Error != null) return Error;
            foreach (var k in Query.Keys)
                if (!consumed.Contains(k)) return Error = "unknown query parameter '" + k + "'";
            return null;
        }
    }

    sealed class HttpResponse
    {
        public int Status;
        public object Body;
        // Runs after the response bytes were sent and the socket closed (used by /exit).
        public Action AfterSend;

        public static HttpResponse Ok(object body) { return new HttpResponse { Status = 200, Body = body }; }

        public static HttpResponse Error(int status, string message)
        {
            return new HttpResponse { Status = status, Body = new JObj { { "error", message }, { "status", status } } };
        }
    }

    sealed class HttpServer
    {
        readonly Dictionary<string, Func<HttpRequest, HttpResponse>> routes = new Dictionary<string, Func<HttpRequest, HttpResponse>>();
        readonly string logPrefix;
        TcpListener listener;
        int connections;

        public int Port { get; private set; }

        public HttpServer(string logPrefix) { this.logPrefix = logPrefix; }

        public void Route(string path, Func<HttpRequest, HttpResponse> handler) { routes[path] = handler; }

        // Every workload's /health ({"ok":true}) and /exit (answers, closes the connection, then
        // Environment.Exit(0), so the client always gets its answer before the process goes).
        // `beforeExit` undoes what would keep the runtime from exiting.
        public void RouteHealthAndExit(Action beforeExit = null)
        {
            Route("/health", req => req.Finish() != null
                ? HttpResponse.Error(400, req.Error)
                : HttpResponse.Ok(new JObj { { "ok", true } }));
            Route("/exit", req => {
                if (req.Finish() != null) return HttpResponse.Error(400, req.Error);
                var resp = HttpResponse.Ok(new JObj { { "exiting", true }, { "exit_code", 0 } });
                resp.AfterSend = () => {
                    if (beforeExit != null) beforeExit();
                    Environment.Exit(0);
                };
                return resp;
            });
        }

        // Binds before returning so the caller can print the ready line with the real port.
        public void Start(int port)
        {
            listener = new TcpListener(IPAddress.Loopback, port);
            listener.Start(64);
            Port = ((IPEndPoint)listener.LocalEndpoint).Port;
        }

        public void RunAcceptLoop()
        {
            while (true)
            {
                TcpClient client;
                try { client = listener.AcceptTcpClient(); }
                catch (SocketException e)
                {
                    // e.g. EMFILE; keep serving rather than silently dying and hanging every test.
                    Log("accept failed: " + e.Message);
                    Thread.Sleep(50);
                    continue;
                }
                int n = Interlocked.Increment(ref connections);
                var t = new Thread(() => Serve(client));
                t.IsBackground = true;
                t.Name = "http-worker-" + n;
                t.Start();
            }
        }

        public void StartAcceptThread()
        {
            var t = new Thread(RunAcceptLoop);
            t.IsBackground = true;
            t.Name = "http-accept";
            t.Start();
        }

        void Serve(TcpClient client)
        {
            var sw = Stopwatch.StartNew();
            HttpResponse resp = null;
            string target = "?";
            try
            {
                client.NoDelay = true;
                client.ReceiveTimeout = 10000;
                client.SendTimeout = 10000;
                var stream = client.GetStream();
                string head = ReadHead(stream);
                if (head == null) { client.Close(); return; }
                HttpRequest req;
                string err = Parse(head, out req);
                if (req != null) target = req.Target;
                if (err != null) resp = HttpResponse.Error(400, err);
                else if (req.Method != "GET") resp = HttpResponse.Error(405, "only GET is supported");
                else
                {
                    Func<HttpRequest, HttpResponse> handler;
                    if (!routes.TryGetValue(req.Path, out handler))
                        resp = HttpResponse.Error(404, "no such endpoint '" + req.Path + "'");
                    else
                    {
                        try { resp = handler(req); }
                        catch (Exception e) { resp = HttpResponse.Error(500, e.GetType().FullName + ": " + e.Message); }
                        if (resp == null) resp = HttpResponse.Error(500, "handler returned nothing");
                    }
                }
                Send(stream, resp);
                client.Client.Shutdown(SocketShutdown.Send);
            }
            catch (IOException e) { Log(target + ": connection error: " + e.Message); }
            catch (SocketException e) { Log(target + ": connection error: " + e.Message); }
            finally { client.Close(); }
            Log("GET " + target + " -> " + (resp == null ? 0 : resp.Status) + " (" + sw.ElapsedMilliseconds + " ms)");
            if (resp != null && resp.AfterSend != null) resp.AfterSend();
        }

        // Reads up to the blank line ending the headers; GET has no body, so that's the request.
        static string ReadHead(NetworkStream stream)
        {
            var buf = new byte[8192];
            int len = 0;
            while (len < buf.Length)
            {
                int n = stream.Read(buf, len, buf.Length - len);
                if (n <= 0) return null;
                len += n;
                for (int i = 3; i < len; i++)
                    if (buf[i - 3] == '\r' && buf[i - 2] == '\n' && buf[i - 1] == '\r' && buf[i] == '\n')
                        return Encoding.ASCII.GetString(buf, 0, i + 1);
            }
            return Encoding.ASCII.GetString(buf, 0, len); // oversized: Parse() will reject it
        }

        static string Parse(string head, out HttpRequest req)
        {
            req = null;
            int eol = head.IndexOf("\r\n", StringComparison.Ordinal);
            if (eol < 0) return "request head too large or malformed";
            string[] parts = head.Substring(0, eol).Split(' ');
            if (parts.Length != 3 || !parts[2].StartsWith("HTTP/1.", StringComparison.Ordinal) || !parts[1].StartsWith("/", StringComparison.Ordinal))
                return "malformed request line";
            req = new HttpRequest { Method = parts[0], Target = parts[1] };
            int q = req.Target.IndexOf('?');
            req.Path = q < 0 ? req.Target : req.Target.Substring(0, q);
            if (q < 0 || q == req.Target.Length - 1) return null;
            foreach (string pair in req.Target.Substring(q + 1).Split('&'))
            {
                int eq = pair.IndexOf('=');
                string k = Unescape(eq < 0 ? pair : pair.Substring(0, eq));
                string v = eq < 0 ? "" : Unescape(pair.Substring(eq + 1));
                if (k == null || v == null) return "malformed percent-encoding in query";
                if (k.Length == 0) return "empty query parameter name";
                if (req.Query.ContainsKey(k)) return "duplicate query parameter '" + k + "'";
                req.Query[k] = v;
            }
            return null;
        }

        // Form-style percent-decoding (UTF-8, '+' = space). System.Uri lives in System.Private.Uri,
        // which we don't compile against. Returns null on a malformed escape.
        static string Unescape(string s)
        {
            if (s.IndexOf('%') < 0 && s.IndexOf('+') < 0) return s;
            var bytes = new List<byte>();
            for (int i = 0; i < s.Length; i++)
            {
                char c = s[i];
                if (c == '+') bytes.Add((byte)' ');
                else if (c == '%')
                {
                    int hi, lo;
                    if (i + 2 >= s.Length || (hi = Hex(s[i + 1])) < 0 || (lo = Hex(s[i + 2])) < 0) return null;
                    bytes.Add((byte)(hi * 16 + lo));
                    i += 2;
                }
                else if (c < 0x80) bytes.Add((byte)c);
                else return null;
            }
            return Encoding.UTF8.GetString(bytes.ToArray());
        }

        static int Hex(char c)
        {
            if (c >= '0' && c <= '9') return c - '0';
            if (c >= 'a' && c <= 'f') return c - 'a' + 10;
            if (c >= 'A' && c <= 'F') return c - 'A' + 10;
            return -1;
        }

        static string Reason(int status)
        {
            switch (status)
            {
                case 200: return "OK";
                case 400: return "Bad Request";
                case 404: return "Not Found";
                case 405: return "Method Not Allowed";
                case 500: return "Internal Server Error";
                default: return "Status";
            }
        }

        static void Send(NetworkStream stream, HttpResponse resp)
        {
            byte[] body = Encoding.UTF8.GetBytes(Json.Serialize(resp.Body) + "\n");
            string head = "HTTP/1.1 " + resp.Status + " " + Reason(resp.Status) + "\r\n" +
                          "Content-Type: application/json\r\n" +
                          "Content-Length: " + body.Length + "\r\n" +
                          "Connection: close\r\n\r\n";
            byte[] h = Encoding.ASCII.GetBytes(head);
            stream.Write(h, 0, h.Length);
            stream.Write(body, 0, body.Length);
            stream.Flush();
        }

        // Off unless DUMPWATCH_WORKLOAD_LOG=1: a test that pipes stderr without draining it would
        // otherwise, after ~64 KiB, wedge request threads inside Console.Error's internal lock and
        // plant blocked threads and an owned monitor that are not part of any scenario.
        static readonly bool logEnabled = Environment.GetEnvironmentVariable("DUMPWATCH_WORKLOAD_LOG") == "1";

        // stderr only: stdout carries nothing but the ready line.
        void Log(string message)
        {
            if (logEnabled) Console.Error.WriteLine("[" + logPrefix + "] " + message);
        }
    }
}
