//! The sidecar's modules import each other without a cycle (lib.rs describes the layers): every
//! `crate::<module>` path in `src/` is an edge from the module whose file it is in (a directory
//! module's files are that module), `crate::<Name>` re-exported by lib.rs an edge to the module it
//! comes from, and the graph must sort topologically. A cycle fails with its modules named.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module → the modules it names, from the source files under `src`.
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let modules: BTreeSet<String> = lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod ").or_else(|| l.trim().strip_prefix("mod ")))
        .filter_map(|m| m.strip_suffix(';')) // `mod tests { ... }` is inline
        .map(str::to_string)
        .collect();
    // `pub use error::Error;` makes `crate::Error` an edge to `error`.
    let reexports: BTreeMap<String, String> = lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub use ")?.strip_suffix(';')?.split_once("::"))
        .map(|(m, name)| (name.to_string(), m.to_string()))
        .collect();
    let mut g: BTreeMap<String, BTreeSet<String>> = modules.iter().map(|m| (m.clone(), BTreeSet::new())).collect();
    for module in &modules {
        let file = src.join(format!("{module}.rs"));
        let files: Vec<_> = if file.exists() {
            vec![file]
        } else {
            std::fs::read_dir(src.join(module)).unwrap().map(|e| e.unwrap().path()).collect()
        };
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            for name in named_after_crate(&text) {
                let target = reexports.get(&name).cloned().unwrap_or(name);
                if modules.contains(&target) && &target != module {
                    g.get_mut(module).unwrap().insert(target);
                }
            }
        }
    }
    g
}

/// The first segment of every `crate::` path in code (comments skipped), `crate::{a, b::c}` too.
fn named_after_crate(text: &str) -> Vec<String> {
    let ident = |s: &str| s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>();
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.starts_with("//")) {
        // A trailing comment (` // `; a URL's `://` in a string is not one).
        let mut rest = line.split(" // ").next().unwrap_or(line);
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                out.extend(group[..end].split(',').map(|p| ident(p.trim())).filter(|p| !p.is_empty()));
            } else {
                out.push(ident(rest));
            }
        }
    }
    out
}

/// A cycle of `g`, if there is one (depth-first search, the path on the stack when it closes).
fn cycle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        done: &mut BTreeSet<String>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| s == n) {
            let mut c = stack[i..].to_vec();
            c.push(n.to_string());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n.to_string());
        for next in &g[n] {
            if let Some(c) = visit(next, g, done, stack) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    g.keys().find_map(|n| visit(n, g, &mut done, &mut Vec::new()))
}

#[test]
fn the_sidecar_modules_import_each_other_without_a_cycle() {
    let g = graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(g.len() > 10 && g["watcher"].contains("capture"), "the graph is read: {g:?}");
    if let Some(c) = cycle(&g) {
        panic!("import cycle in sidecar/src: {}", c.join(" → "));
    }
}

#[test]
fn a_cycle_is_found_and_named() {
    let text = "use crate::{Error, b::X};\nfn f() { crate::c::g(); } // crate::d\n";
    assert_eq!(named_after_crate(text), ["Error", "b", "c"]);
    let g: BTreeMap<String, BTreeSet<String>> = [("a", vec!["b"]), ("b", vec!["c"]), ("c", vec!["a"]), ("d", vec![])]
        .into_iter()
        .map(|(n, e)| (n.to_string(), e.into_iter().map(String::from).collect()))
        .collect();
    assert_eq!(cycle(&g).unwrap(), ["a", "b", "c", "a"]);
}
