//! `ambient up --dataset NAME=PATH.csv[:LABEL]`: a data scientist's own CSV, split across the
//! local agents so that each holds only its part, for federated learning in one command.
//!
//! The split is stratified by label: the rows of each label value, in file order, are dealt to
//! the agents in turn, each class starting at the agent after the one the previous class ended
//! on. So every agent holds about `1/N` of every class, the parts' sizes differ by at most one
//! row, and the same file always splits the same way. The file is read and checked with the
//! federated client's own parser (numeric columns, a 0/1 label) before any agent starts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ambient_agent::config::DatasetConfig;
use ambient_fl::data::Dataset;
use anyhow::Context as _;

/// One `--dataset` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetArg {
    /// The name tasks use (`inputs.dataset`).
    pub name: String,
    /// The CSV file.
    pub path: PathBuf,
    /// Its label column.
    pub label: String,
}

/// Reads `NAME=PATH.csv[:LABEL]` (the label column defaults to `target`).
pub fn parse_arg(text: &str) -> Result<DatasetArg, String> {
    let (name, rest) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected NAME=PATH.csv[:LABEL]"))?;
    let ok_name = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !ok_name {
        return Err(format!(
            "{name:?}: a data set name is 1 to 64 letters, digits, '-' or '_'"
        ));
    }
    // The label is after the last ':' that follows the file name's ".csv".
    let (path, label) = match rest.rsplit_once(':') {
        Some((p, l)) if p.ends_with(".csv") && !l.is_empty() => (p, l),
        _ => (rest, "target"),
    };
    if path.is_empty() {
        return Err(format!("{text:?}: no CSV file after '='"));
    }
    Ok(DatasetArg {
        name: name.to_string(),
        path: PathBuf::from(path),
        label: label.to_string(),
    })
}

/// Splits each data set across `agents` agents, writes each part to
/// `DIR/datasets/agent-{i}/{NAME}.csv` (owner-only), and returns each agent's `[[datasets]]`.
pub fn split(
    sets: &[DatasetArg],
    agents: u32,
    dir: &Path,
) -> anyhow::Result<Vec<Vec<DatasetConfig>>> {
    let mut out: Vec<Vec<DatasetConfig>> = vec![Vec::new(); agents as usize];
    for set in sets {
        let text = std::fs::read_to_string(&set.path)
            .with_context(|| format!("--dataset {}: reading {}", set.name, set.path.display()))?;
        let data = Dataset::from_csv_str(&text, &set.label, None).with_context(|| {
            format!(
                "--dataset {}: {} (label column {:?})",
                set.name,
                set.path.display(),
                set.label
            )
        })?;
        let parts = parts(&data, agents as usize);
        for (i, idx) in parts.iter().enumerate() {
            if idx.is_empty() {
                anyhow::bail!(
                    "--dataset {}: {} rows are too few for {agents} agents",
                    set.name,
                    data.len()
                );
            }
            let agent_dir = dir.join("datasets").join(format!("agent-{}", i + 1));
            ambient_service::private::create_dir(&agent_dir)?;
            let path = agent_dir.join(format!("{}.csv", set.name));
            ambient_service::private::write_file(&path, data.select(idx).to_csv(&set.label))?;
            out[i].push(DatasetConfig {
                name: set.name.clone(),
                path,
                label: set.label.clone(),
                features: None,
            });
        }
    }
    Ok(out)
}

/// The row indices of each of `k` parts: each label's rows, in order, dealt in turn.
fn parts(data: &Dataset, k: usize) -> Vec<Vec<usize>> {
    let mut by_label: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, y) in data.y.iter().enumerate() {
        by_label.entry(y.to_bits()).or_default().push(i);
    }
    let mut parts = vec![Vec::new(); k];
    let mut next = 0;
    for rows in by_label.values() {
        for &row in rows {
            parts[next % k].push(row);
            next += 1;
        }
    }
    for p in &mut parts {
        p.sort_unstable();
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_read_as_written() {
        assert_eq!(
            parse_arg("fraud=data/tx.csv:is_fraud"),
            Ok(DatasetArg {
                name: "fraud".into(),
                path: "data/tx.csv".into(),
                label: "is_fraud".into()
            })
        );
        assert_eq!(parse_arg("d=/x/y.csv").unwrap().label, "target");
        assert_eq!(
            parse_arg("d=C:/x/y.csv").unwrap().path,
            PathBuf::from("C:/x/y.csv")
        );
        for bad in ["nofile", "=x.csv", "a b=x.csv", "d="] {
            assert!(parse_arg(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parts_are_stratified_even_and_cover_every_row_once() {
        let data = ambient_fl::data::breast_cancer();
        let parts = parts(&data, 3);
        let mut all: Vec<usize> = parts.concat();
        all.sort_unstable();
        assert_eq!(all, (0..data.len()).collect::<Vec<_>>());
        let sizes: Vec<usize> = parts.iter().map(Vec::len).collect();
        assert!(
            sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1,
            "{sizes:?}"
        );
        let share =
            |p: &[usize]| p.iter().filter(|&&i| data.y[i] == 1.0).count() as f64 / p.len() as f64;
        let whole = share(&(0..data.len()).collect::<Vec<_>>());
        for p in &parts {
            assert!((share(p) - whole).abs() < 0.01, "{} vs {whole}", share(p));
        }
    }

    #[test]
    fn split_writes_each_agent_its_part_only() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("bc.csv");
        std::fs::write(&csv, ambient_fl::data::BREAST_CANCER_CSV).unwrap();
        let arg = parse_arg(&format!("bc={}", csv.display())).unwrap();
        let configs = split(&[arg], 2, dir.path()).unwrap();
        let rows: Vec<usize> = configs
            .iter()
            .map(|c| {
                let text = std::fs::read_to_string(&c[0].path).unwrap();
                Dataset::from_csv_str(&text, "target", None).unwrap().len()
            })
            .collect();
        assert_eq!(rows, vec![285, 284]);
        let bad = DatasetArg {
            name: "bc".into(),
            path: csv,
            label: "nope".into(),
        };
        let e = split(&[bad], 2, dir.path()).unwrap_err();
        assert!(format!("{e:#}").contains("\"nope\""), "{e:#}");
    }
}
