//! The layout keeps the pipeline visible: the modules of the library (`src/`, the command
//! line apart) import one another without a circle, and the math modules know nothing of
//! llama.cpp. Read from the source text: every `crate::…`, `super::…` and `self::…` path
//! outside comments and test modules is an import of the module it names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module path (`pipeline::engine::session`) → source text, comments and tests removed.
fn modules() -> BTreeMap<String, String> {
    fn walk(dir: &Path, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(root().join("src")).unwrap().with_extension("");
            let mut parts: Vec<String> =
                rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            if parts[0] == "cli" || parts == ["main"] {
                continue; // the binary
            }
            if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
                parts.pop();
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let text = text.split("#[cfg(test)]\nmod tests").next().unwrap_or_default();
            let code: String = text
                .lines()
                .map(|l| l.split("//").next().unwrap_or_default())
                .collect::<Vec<_>>()
                .join("\n");
            out.insert(parts.join("::"), code);
        }
    }
    let mut out = BTreeMap::new();
    walk(&root().join("src"), &mut out);
    out
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The modules `code` of module `at` imports.
fn imports(at: &str, code: &str, known: &BTreeMap<String, String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = code.as_bytes();
    for start in ["crate::", "super::", "self::"] {
        for (i, _) in code.match_indices(start) {
            if i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_') {
                continue;
            }
            let path: String = code[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let mut segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
            let mut base: Vec<&str> = if segs[0] == "crate" {
                vec![]
            } else {
                at.split("::").filter(|s| !s.is_empty()).collect()
            };
            match segs[0] {
                "crate" | "self" => {
                    segs.remove(0);
                }
                _ => {
                    while segs.first() == Some(&"super") {
                        base.pop();
                        segs.remove(0);
                    }
                }
            }
            base.extend(segs);
            let target = (1..=base.len())
                .rev()
                .map(|k| base[..k].join("::"))
                .find(|m| known.contains_key(m));
            if let Some(t) = target {
                let related = t == at
                    || t.starts_with(&format!("{at}::"))
                    || at.starts_with(&format!("{t}::"));
                if !related {
                    out.insert(t);
                }
            }
        }
    }
    out
}

#[test]
fn the_library_imports_without_a_circle() {
    let mods = modules();
    assert!(mods.len() > 40, "only {} modules found", mods.len());
    let edges: BTreeMap<&String, BTreeSet<String>> =
        mods.iter().map(|(m, code)| (m, imports(m, code, &mods))).collect();
    // A module on a circle reaches itself.
    for start in edges.keys() {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<&String> = edges[start].iter().collect();
        let mut path = Vec::new();
        while let Some(m) = todo.pop() {
            if !seen.insert(m.clone()) {
                continue;
            }
            path.push(m.clone());
            assert!(m != *start, "{start} imports itself through {path:?}");
            if let Some(next) = edges.get(m) {
                todo.extend(next.iter());
            }
        }
    }
}

#[test]
fn the_math_knows_nothing_of_llama_cpp() {
    let mods = modules();
    for m in [
        "pipeline::divergence",
        "pipeline::combine",
        "pipeline::combine::exact",
        "pipeline::bytes",
        "pipeline::bytes::view",
        "pipeline::bytes::vocab",
        "pipeline::bytes::step",
        "pipeline::sample",
        "pipeline::recipe",
        "pipeline::text",
        "error",
    ] {
        let code = mods.get(m).unwrap_or_else(|| panic!("{m} is missing"));
        assert!(!code.contains("llama_cpp"), "{m} uses llama.cpp");
        assert!(!code.contains("engine::"), "{m} uses the engine");
    }
}
