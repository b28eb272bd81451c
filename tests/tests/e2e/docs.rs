//! The documentation's tables agree with the code: the README's task kinds with the protocol's
//! [`TaskType::ALL`], the agent's feature tables (`agent/src/lib.rs` `//!` and
//! `agent/README.md`) with the `[features]` of `agent/Cargo.toml`, and the circuit tables (the
//! README's and `zk/src/lib.rs`'s, with each circuit's default size) with
//! [`ambient_zk::CircuitId::all`]. (The README's circuit sizes are the coordinator's; the `zk`
//! test here checks them against `GET /api/v1/circuits`.)

use std::collections::BTreeMap;

use ambient_protocol::TaskType;
use ambient_zk::CircuitId;

/// A file of the workspace, by its path from the root.
pub fn workspace_file(path: &str) -> String {
    let full = format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

/// The body rows of the first Markdown table after the line `heading`, as trimmed cells with
/// their backticks removed. `prefix` is stripped from every line first (`"//! "` for Rust docs).
pub fn table(text: &str, prefix: &str, heading: &str) -> Vec<Vec<String>> {
    let mut lines = text
        .lines()
        .map(|l| l.strip_prefix(prefix).unwrap_or(l).trim_end())
        .skip_while(|l| *l != heading);
    assert!(lines.next().is_some(), "no line {heading:?}");
    lines
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2) // the header and |---|
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').collect();
            cells
                .iter()
                .map(|c| c.trim().trim_matches('`').to_string())
                .collect()
        })
        .collect()
}

#[test]
fn the_readme_lists_every_task_kind() {
    let documented: Vec<String> = table(&workspace_file("README.md"), "", "## Task kinds")
        .into_iter()
        .map(|row| row[0].clone())
        .collect();
    let kinds: Vec<String> = TaskType::ALL
        .iter()
        .map(|t| {
            serde_json::to_value(t)
                .unwrap()
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(documented, kinds, "README.md, ## Task kinds");
}

#[test]
fn the_agent_feature_tables_match_its_cargo_toml() {
    let manifest: toml::Table = workspace_file("agent/Cargo.toml").parse().unwrap();
    let features = manifest["features"].as_table().unwrap();
    let defaults: Vec<&str> = features["default"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let declared: BTreeMap<String, &str> = features
        .keys()
        .filter(|f| *f != "default")
        .map(|f| {
            let on = if defaults.contains(&f.as_str()) {
                "yes"
            } else {
                "no"
            };
            (f.clone(), on)
        })
        .collect();
    let mut drift = Vec::new();
    for (file, prefix, heading) in [
        ("agent/src/lib.rs", "//! ", "# Features"),
        ("agent/README.md", "", "## Features"),
    ] {
        let documented: BTreeMap<String, &str> = table(&workspace_file(file), prefix, heading)
            .into_iter()
            .map(|row| {
                let on = if row[1] == "yes" { "yes" } else { "no" };
                (row[0].clone(), on)
            })
            .collect();
        if documented != declared {
            drift.push(format!(
                "{file}: documents {documented:?}, agent/Cargo.toml declares {declared:?}"
            ));
        }
    }
    assert!(drift.is_empty(), "{}", drift.join("\n"));
}

#[test]
fn the_readme_lists_every_circuit() {
    let documented: Vec<String> = table(&workspace_file("README.md"), "", "#### Circuits")
        .into_iter()
        .map(|row| row[0].clone())
        .collect();
    let registered: Vec<&str> = CircuitId::all().iter().map(|c| c.name()).collect();
    assert_eq!(documented, registered, "README.md, #### Circuits");
}

#[test]
fn the_zk_crate_docs_list_every_circuit_with_its_default_size() {
    // Cells like "hash_chain (size n, default 256)" once the backticks are gone.
    let documented: Vec<(String, usize)> =
        table(&workspace_file("zk/src/lib.rs"), "//! ", "Circuits:")
            .into_iter()
            .map(|row| {
                let cell = row[0].replace('`', "");
                let name = cell.split(' ').next().unwrap_or_default().to_string();
                let default = cell
                    .split("default ")
                    .nth(1)
                    .and_then(|d| d.trim_end_matches(')').parse().ok())
                    .unwrap_or_else(|| panic!("no default size in {cell:?}"));
                (name, default)
            })
            .collect();
    let registered: Vec<(String, usize)> = CircuitId::all()
        .iter()
        .map(|c| (c.name().to_string(), c.default_size()))
        .collect();
    assert_eq!(documented, registered, "zk/src/lib.rs, Circuits:");
}
