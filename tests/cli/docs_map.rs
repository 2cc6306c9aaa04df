//! `docs/architecture.md` has a map of the tree (crate → module → one line). This keeps it
//! matching: every source file of the shipped crates and the test kit is listed under its crate,
//! and every listed file exists.

use std::path::{Path, PathBuf};

const CRATES: &[&str] = &[
    "src",
    "providers/src",
    "state/src",
    "sim/zstack/src",
    "testkit/src",
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The map's entries under the heading naming `root`: the backticked paths of its list items.
fn listed(doc: &str, root: &str) -> Vec<String> {
    let heading = format!("(`{root}/`)");
    let Some(start) = doc
        .lines()
        .position(|l| l.starts_with("### ") && l.contains(&heading))
    else {
        return Vec::new();
    };
    doc.lines()
        .skip(start + 1)
        .take_while(|l| !l.starts_with('#'))
        .filter_map(|l| l.strip_prefix("- `"))
        .filter_map(|l| l.split_once('`').map(|(p, _)| p.to_string()))
        .collect()
}

#[test]
fn the_architecture_map_lists_every_source_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/architecture.md")).unwrap();
    let mut problems = Vec::new();
    for krate in CRATES {
        let dir = root.join(krate);
        if !dir.exists() {
            continue;
        }
        let mut files = Vec::new();
        sources(&dir, &mut files);
        let listed = listed(&doc, krate);
        for f in &files {
            let rel = f.strip_prefix(&dir).unwrap().to_string_lossy().into_owned();
            // Unit-test files sit next to the code they test and are not listed.
            if rel.ends_with("tests.rs") {
                continue;
            }
            if !listed.contains(&rel) {
                problems.push(format!("{krate}/{rel} is not in the map"));
            }
        }
        for l in &listed {
            if !dir.join(l).exists() {
                problems.push(format!("the map lists {krate}/{l}, which does not exist"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "docs/architecture.md `## Map` is out of date:\n{}",
        problems.join("\n")
    );
}
