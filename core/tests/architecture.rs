//! Architecture invariant: no module imports one that imports it back, in any crate of the
//! workspace. Edges are read from `crate::`/`super::` paths (as `../shared/tools/module-circles.py`
//! reads them): an edge joins the two sibling modules under the deepest common parent, so a
//! child using its parent (or the reverse) is not an edge. Code after `#[cfg(test)]` is ignored.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

/// The module a source file is, relative to its crate's `src`.
fn module_of(src: &Path, file: &Path) -> Module {
    let relative = file.strip_prefix(src).unwrap_or(file).with_extension("");
    let mut parts: Module = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|last| ["mod", "lib", "main"].contains(&last.as_str())) {
        parts.pop();
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "bin") {
                continue;
            }
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The paths after `crate::` or `super::` in `text`, split into segments.
fn paths(text: &str) -> Vec<(bool, Vec<String>)> {
    let mut found = Vec::new();
    for (start, _) in text.match_indices("::") {
        let before = &text[..start];
        let head_start = before.rfind(|c: char| !(c.is_alphanumeric() || c == '_')).map_or(0, |i| i + 1);
        let head = &before[head_start..];
        let is_crate = head == "crate";
        if !is_crate && head != "super" {
            continue;
        }
        // Skip `super::super` chains after the first (they are read from their start).
        if before[..head_start].ends_with("::") {
            continue;
        }
        let rest = &text[start + 2..];
        let mut segments = Vec::new();
        for segment in rest.split("::") {
            let name: String = segment.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if name.is_empty() {
                break;
            }
            let whole = name.len() == segment.len();
            segments.push(name);
            if !whole {
                break;
            }
        }
        found.push((is_crate, segments));
    }
    found
}

/// Sibling-module edges of one crate.
fn edges(src: &Path) -> BTreeMap<Module, BTreeSet<Module>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut graph: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for file in files {
        let me = module_of(src, &file);
        if me.is_empty() {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let text = text.split("#[cfg(test)]").next().unwrap_or_default();
        for (is_crate, segments) in paths(text) {
            let mut target: Module = if is_crate { Vec::new() } else { me[..me.len() - 1].to_vec() };
            let mut segments = segments.into_iter().peekable();
            while !is_crate && segments.peek().is_some_and(|s| s == "super") {
                segments.next();
                target.pop();
            }
            target.extend(segments);
            let common = me.iter().zip(&target).take_while(|(a, b)| a == b).count();
            if common >= me.len() || common >= target.len() {
                continue; // parent and child, not siblings
            }
            let sibling = &target[..=common];
            let as_file = src.join(sibling.join("/")).with_extension("rs");
            if !as_file.exists() && !src.join(sibling.join("/")).is_dir() {
                continue;
            }
            graph.entry(me[..=common].to_vec()).or_default().insert(sibling.to_vec());
        }
    }
    graph
}

/// The strongly connected components with more than one module (Tarjan).
fn circles(graph: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct Walk<'a> {
        graph: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        stack: Vec<&'a Module>,
        on_stack: BTreeSet<&'a Module>,
        next: usize,
        found: Vec<Vec<Module>>,
    }
    fn visit<'a>(walk: &mut Walk<'a>, v: &'a Module) {
        walk.index.insert(v, walk.next);
        walk.low.insert(v, walk.next);
        walk.next += 1;
        walk.stack.push(v);
        walk.on_stack.insert(v);
        for w in walk.graph.get(v).into_iter().flatten() {
            if !walk.index.contains_key(w) {
                visit(walk, w);
                let low = walk.low[v].min(walk.low[w]);
                walk.low.insert(v, low);
            } else if walk.on_stack.contains(w) {
                let low = walk.low[v].min(walk.index[w]);
                walk.low.insert(v, low);
            }
        }
        if walk.low[v] == walk.index[v] {
            let mut component = Vec::new();
            while let Some(w) = walk.stack.pop() {
                walk.on_stack.remove(w);
                component.push(w.clone());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                walk.found.push(component);
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !walk.index.contains_key(v) {
            visit(&mut walk, v);
        }
    }
    walk.found
}

#[test]
fn no_module_of_any_crate_imports_one_that_imports_it_back() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut report = Vec::new();
    let mut crates = 0;
    for entry in std::fs::read_dir(&workspace).expect("the workspace").flatten() {
        let src = entry.path().join("src");
        if !entry.path().join("Cargo.toml").exists() || !src.is_dir() {
            continue;
        }
        crates += 1;
        for circle in circles(&edges(&src)) {
            let names: Vec<String> = circle.iter().map(|m| m.join("::")).collect();
            report.push(format!("{}: {}", entry.file_name().to_string_lossy(), names.join(", ")));
        }
    }
    assert!(crates >= 5, "found the workspace's crates ({crates})");
    assert!(report.is_empty(), "import circles:\n{}", report.join("\n"));
}

#[test]
fn a_circle_is_found_and_a_parent_child_edge_is_not_one() {
    let dir = tempfile::tempdir().expect("dir");
    let src = dir.path();
    std::fs::create_dir_all(src.join("b")).expect("dir");
    std::fs::write(src.join("lib.rs"), "mod a;\nmod b;\nmod c;\n").expect("write");
    std::fs::write(src.join("a.rs"), "use crate::b::Thing;\n").expect("write");
    std::fs::write(src.join("b/mod.rs"), "mod inner;\nuse super::c::X;\n").expect("write");
    std::fs::write(src.join("b/inner.rs"), "use super::Thing;\nuse crate::a::Y;\n").expect("write");
    std::fs::write(src.join("c.rs"), "use crate::b::inner::Z;\n#[cfg(test)]\nuse crate::a::Q;\n").expect("write");
    let found = circles(&edges(src));
    let names: Vec<Vec<String>> = found.iter().map(|c| c.iter().map(|m| m.join("::")).collect()).collect();
    assert_eq!(names, vec![vec!["a".to_owned(), "b".to_owned(), "c".to_owned()]]);
    // Without b's uses of a and c, only a and c use b: no circle. A child using its parent
    // (`super::Thing` in b::inner) is not an edge, and neither is code under `#[cfg(test)]`.
    std::fs::write(src.join("b/mod.rs"), "mod inner;\n").expect("write");
    std::fs::write(src.join("b/inner.rs"), "use super::Thing;\n").expect("write");
    assert!(circles(&edges(src)).is_empty(), "{:?}", circles(&edges(src)));
}
