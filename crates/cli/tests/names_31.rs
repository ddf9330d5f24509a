//! Every type of a .NET Core 3.1 app is named, whatever the size of its assembly. 3.1 heap
//! dumps leave assembly metadata out; the reader then serves those bytes from the files the
//! process mapped. How a dump splits an assembly into present and absent pages depends on its
//! size: an assembly whose first page is in the dump and whose next ones are not lost every
//! name when its metadata started in the first page and went on into the next (reads that
//! spanned both kinds returned only the part in the dump). So the apps here are generated and compiled in the test, from
//! 4 KiB (metadata in the first page) to several MiB (metadata megabytes into the file), and
//! each must come out fully named: types with their exact counts, the type of a held lock, the
//! holder's method in its stack.

use std::process::Command;

use testbed::{Isolation, Runtime, Value, Workload};

/// (assembly name, types, filler methods): the filler's IL comes before the metadata in the
/// file mcs writes, so it decides where the names lie.
const APPS: [(&str, usize, usize); 7] = [
    ("NamesTiny", 8, 0),       // 4 KiB: everything in the first page
    ("NamesStraddle", 40, 0),  // 7 KiB: metadata from the first page into the second
    ("NamesSmall", 12, 4),     // 8.5 KiB over three pages, metadata in the second
    ("NamesStraddle3", 60, 0), // 9 KiB, metadata from the first page into the second
    ("NamesMedium", 40, 100),  // ~140 KiB
    ("NamesLarge", 40, 1_000), // ~1.4 MiB
    ("NamesHuge", 40, 2_500),  // ~3.5 MiB
];

/// `types` classes with `k + 1` instances of `Type{k}` kept alive, one thread holding the lock
/// of the last type's instance forever and another waiting for it.
fn source(name: &str, types: usize, filler: usize) -> String {
    let mut s =
        format!("using System; using System.Collections.Generic; using System.Threading;\nnamespace {name} {{\n");
    for t in 0..types {
        s += &format!("public sealed class Type{t} {{ public int Id; public Type{t}(int id) {{ Id = id; }} }}\n");
    }
    s += "static class Filler {\n";
    for f in 0..filler {
        let body: String = (0..100).map(|i| format!("x = x * {} + {i}; ", f * 7 + i + 3)).collect();
        s += &format!("public static long F{f}(long x) {{ {body}return x; }}\n");
    }
    s += "}\nstatic class Program {\n";
    s += "public static List<object> Keep = new List<object>();\nstatic object gate;\n";
    s += "static ManualResetEvent held = new ManualResetEvent(false);\n";
    s += "static void Hold() { lock (gate) { held.Set(); Thread.Sleep(Timeout.Infinite); } }\n";
    s += "static void Wait() { lock (gate) { } }\n";
    s += "static int Main() {\n";
    for t in 0..types {
        s += &format!("for (int i = 0; i <= {t}; i++) Keep.Add(new Type{t}(i));\n");
    }
    s += "gate = Keep[Keep.Count - 1];\n";
    s += "new Thread(Hold) { IsBackground = true }.Start(); held.WaitOne();\n";
    s += "new Thread(Wait) { IsBackground = true }.Start(); Thread.Sleep(500);\n";
    s += "Console.Out.Write(\"{\\\"ready\\\":true,\\\"port\\\":0}\\n\"); Console.Out.Flush();\n";
    s += "Thread.Sleep(Timeout.Infinite); return 0; } } }\n";
    s
}

fn dumpwatch(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dumpwatch")).args(args).output().expect("run dumpwatch");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_app_type_is_named_on_31_whatever_the_assembly_size() {
    testbed::require_setup();
    let dir = tempfile::tempdir().unwrap();
    for (name, types, filler) in APPS {
        let dll = testbed::compile_app(dir.path(), name, &source(name, types, filler));
        let size = std::fs::metadata(&dll).unwrap().len();
        let w = Workload::start_dll(Runtime::Net31, &dll, &[], &Isolation::default());
        let core = dir.path().join(format!("{name}.core"));
        let core = core.to_str().unwrap();
        let (ok, _, err) = dumpwatch(&["dump", &w.pid.to_string(), "-o", core, "--type", "heap"]);
        assert!(ok, "{name}: dump failed: {err}");
        // The DAC `dump` wrote beside the core, from this machine's runtime: trusted on purpose.
        let (ok, out, err) = dumpwatch(&["analyze", core, "--json", "--top", "100000", "--trust-dac-beside-dump"]);
        assert!(ok, "{name}: analyze failed: {err}");
        let ctx = format!("{name} ({size} bytes)");
        assert!(!out.contains("<unknown") && !out.contains("!Unknown"), "{ctx}: unnamed types or frames:\n{out}");
        let f: Value = serde_json::from_str(&out).unwrap();
        assert!(f["warnings"].as_array().unwrap().is_empty(), "{ctx}: {}", f["warnings"]);
        let top = f["heap"]["top_types"].as_array().unwrap();
        for t in 0..types {
            let type_name = format!("{name}.Type{t}");
            let row = top.iter().find(|r| r["type_name"] == type_name.as_str());
            assert_eq!(row.map(|r| r["count"].as_u64().unwrap()), Some(t as u64 + 1), "{ctx}: {type_name}");
        }
        let wait = &f["long_waits"][0];
        assert_eq!(wait["lock"]["object_type"], format!("{name}.Type{}", types - 1), "{ctx}: {wait}");
        let hold = format!("{name}.Program.Hold");
        let stack = wait["owner_stack"].as_array().unwrap();
        assert!(stack.iter().any(|f| f.as_str().unwrap().starts_with(&hold)), "{ctx}: {hold} not in {stack:?}");
    }
}
