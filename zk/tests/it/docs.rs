//! The tables of circuits list exactly the registered circuits ([`CircuitId::all`]), in order:
//! the README's (`#### Circuits`; the sizes there are the coordinator's, which the e2e test `zk`
//! checks against `GET /api/v1/circuits`) and the crate docs' (`zk/src/lib.rs`, with each
//! circuit's default size).

use ambient_zk::CircuitId;

/// The first cells of the body rows of the first Markdown table after the line `heading`,
/// backticks removed. `prefix` is stripped from every line first (`"//! "` for Rust docs).
fn first_column(text: &str, prefix: &str, heading: &str) -> Vec<String> {
    let mut lines = text
        .lines()
        .map(|l| l.strip_prefix(prefix).unwrap_or(l).trim_end())
        .skip_while(|l| *l != heading);
    assert!(lines.next().is_some(), "no line {heading:?}");
    lines
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2) // the header and |---|
        .map(|l| l.split('|').nth(1).unwrap().trim().to_string())
        .collect()
}

#[test]
fn the_readme_lists_every_circuit() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let documented: Vec<String> = first_column(&readme, "", "#### Circuits")
        .iter()
        .map(|c| c.trim_matches('`').to_string())
        .collect();
    let registered: Vec<&str> = CircuitId::all().iter().map(|c| c.name()).collect();
    assert_eq!(documented, registered, "README.md's circuit table");
}

#[test]
fn the_crate_docs_list_every_circuit_with_its_default_size() {
    let lib = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/lib.rs"))
        .expect("zk/src/lib.rs");
    // Cells like "`hash_chain` (size `n`, default 256)".
    let documented: Vec<(String, usize)> = first_column(&lib, "//! ", "Circuits:")
        .iter()
        .map(|cell| {
            let name = cell.split('`').nth(1).unwrap_or_default().to_string();
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
    assert_eq!(documented, registered, "zk/src/lib.rs's circuit table");
}
