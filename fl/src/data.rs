//! Tabular data: CSV parsing, shareable summary statistics and deterministic splits.
//!
//! Parsing takes the CSV *text* (the caller reads the file), so this module does no I/O.
//! Standardisation statistics are sums ([`FeatureStats`]: count, Σx, Σx²) precisely so that
//! clients can add them up through secure aggregation and never share rows.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

/// Errors from parsing or transforming data.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DataError {
    /// The CSV text had no header row.
    #[error("the CSV has no header row")]
    NoHeader,
    /// A requested column is not in the header.
    #[error("column {0:?} is not in the CSV header")]
    MissingColumn(String),
    /// A column name that appears twice.
    #[error("column {0:?} appears twice")]
    DuplicateColumn(String),
    /// A row has a different number of fields than the header.
    #[error("row {row} has {found} fields, the header has {expected}")]
    RowLength {
        /// 1-based line number in the CSV text.
        row: usize,
        /// Fields in the header.
        expected: usize,
        /// Fields in this row.
        found: usize,
    },
    /// A field is not a finite number.
    #[error("row {row}, column {column:?}: {value:?} is not a finite number")]
    NotANumber {
        /// 1-based line number in the CSV text.
        row: usize,
        /// Column name.
        column: String,
        /// The offending text.
        value: String,
    },
    /// Vectors or data sets whose dimensions do not agree.
    #[error("dimension mismatch: expected {expected}, found {found}")]
    Dimension {
        /// What was expected.
        expected: usize,
        /// What was found.
        found: usize,
    },
    /// A split or statistic that needs rows was given none, or an invalid parameter.
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
}

/// A supervised data set: one feature row per example and one label per example.
///
/// Labels are `f32` so that binary (0/1) and regression targets share one type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Dataset {
    /// Feature rows, all of the same length.
    pub x: Vec<Vec<f32>>,
    /// Labels, one per row of `x`.
    pub y: Vec<f32>,
    /// The feature columns' names, in the order of a row of `x` (from the CSV header); empty
    /// for a data set built in code, whose columns are known only by position. A job matches
    /// the clients' columns to its evaluation set's by these names ([`Dataset::with_columns`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<String>,
}

fn split_fields(line: &str) -> Vec<&str> {
    line.split(',')
        .map(|f| {
            let f = f.trim();
            f.strip_prefix('"')
                .and_then(|g| g.strip_suffix('"'))
                .unwrap_or(f)
        })
        .collect()
}

/// The Wisconsin breast cancer diagnostic data set as scikit-learn ships it: 569 rows, 30
/// features, label column `target` (1 = benign). Source and licence: `tests/data/README.md`.
pub const BREAST_CANCER_CSV: &str = include_str!("../tests/data/breast_cancer.csv");

/// [`BREAST_CANCER_CSV`], parsed.
pub fn breast_cancer() -> Dataset {
    Dataset::from_csv_str(BREAST_CANCER_CSV, "target", None)
        .expect("the bundled breast cancer CSV parses")
}

impl Dataset {
    /// CSV text with a header row: the feature columns (their [`Dataset::columns`] names, or
    /// `f0`, `f1`, … when they have none) then the label column `label`.
    pub fn to_csv(&self, label: &str) -> String {
        let header: Vec<String> = if self.columns.len() == self.num_features() {
            self.columns.clone()
        } else {
            (0..self.num_features()).map(|i| format!("f{i}")).collect()
        };
        let mut out = format!("{},{label}\n", header.join(","));
        for (x, y) in self.x.iter().zip(&self.y) {
            let row: Vec<String> = x.iter().map(f32::to_string).collect();
            out.push_str(&format!("{},{y}\n", row.join(",")));
        }
        out
    }

    /// Parses CSV text with a header row.
    ///
    /// `label` names the label column; `features` names the feature columns in the order wanted,
    /// or `None` for every column except the label, in file order. Fields are separated by commas
    /// and may be wrapped in double quotes (embedded commas are not supported: this is for numeric
    /// tables). Blank lines are skipped.
    pub fn from_csv_str(
        text: &str,
        label: &str,
        features: Option<&[&str]>,
    ) -> Result<Self, DataError> {
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let (_, header) = lines.next().ok_or(DataError::NoHeader)?;
        let header = split_fields(header);
        let find = |name: &str| {
            header
                .iter()
                .position(|h| *h == name)
                .ok_or_else(|| DataError::MissingColumn(name.to_string()))
        };
        let label_idx = find(label)?;
        let feature_idx: Vec<usize> = match features {
            Some(names) => names.iter().map(|n| find(n)).collect::<Result<_, _>>()?,
            None => (0..header.len()).filter(|&i| i != label_idx).collect(),
        };
        let mut data = Dataset {
            columns: feature_idx.iter().map(|&i| header[i].to_string()).collect(),
            ..Dataset::default()
        };
        for (line_no, line) in lines {
            let row = line_no + 1;
            let fields = split_fields(line);
            if fields.len() != header.len() {
                return Err(DataError::RowLength {
                    row,
                    expected: header.len(),
                    found: fields.len(),
                });
            }
            let parse = |i: usize| -> Result<f32, DataError> {
                fields[i]
                    .parse::<f32>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| DataError::NotANumber {
                        row,
                        column: header[i].to_string(),
                        value: fields[i].to_string(),
                    })
            };
            let x = feature_idx
                .iter()
                .map(|&i| parse(i))
                .collect::<Result<Vec<_>, _>>()?;
            data.x.push(x);
            data.y.push(parse(label_idx)?);
        }
        Ok(data)
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.y.len()
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }

    /// Number of features (0 for an empty data set).
    pub fn num_features(&self) -> usize {
        self.x.first().map_or(0, Vec::len)
    }

    /// The sub-data-set at the given row indices, in that order.
    pub fn select(&self, idx: &[usize]) -> Dataset {
        Dataset {
            x: idx.iter().map(|&i| self.x[i].clone()).collect(),
            y: idx.iter().map(|&i| self.y[i]).collect(),
            columns: self.columns.clone(),
        }
    }

    /// The same rows with the feature columns `names`, in that order, picked by name.
    ///
    /// Refuses a name this data set lacks, a name given twice, or a different number of
    /// columns (a job trains on all of a data set's features). A data set whose columns have no
    /// names (built in code) can only be matched by position: it is returned as it is when the
    /// counts agree.
    pub fn with_columns(&self, names: &[String]) -> Result<Dataset, DataError> {
        if names.len() != self.num_features() && !self.is_empty() {
            return Err(DataError::Dimension {
                expected: self.num_features(),
                found: names.len(),
            });
        }
        if self.columns.is_empty() {
            return Ok(self.clone());
        }
        let mut idx = Vec::with_capacity(names.len());
        for (k, name) in names.iter().enumerate() {
            if names[..k].contains(name) {
                return Err(DataError::DuplicateColumn(name.clone()));
            }
            let i = self
                .columns
                .iter()
                .position(|c| c == name)
                .ok_or_else(|| DataError::MissingColumn(name.clone()))?;
            idx.push(i);
        }
        Ok(Dataset {
            x: self
                .x
                .iter()
                .map(|row| idx.iter().map(|&i| row[i]).collect())
                .collect(),
            y: self.y.clone(),
            columns: names.to_vec(),
        })
    }

    /// Fraction of labels equal to 1 (NaN for an empty set).
    pub fn positive_fraction(&self) -> f64 {
        self.y.iter().filter(|&&y| y == 1.0).count() as f64 / self.len() as f64
    }

    /// Standardises in place: `x[j] = (x[j] − mean[j]) / std[j]`.
    ///
    /// A `std[j]` of 0 (a constant feature) is treated as 1 so the feature becomes 0.
    pub fn standardize(&mut self, mean: &[f32], std: &[f32]) -> Result<(), DataError> {
        let d = self.num_features();
        for v in [mean.len(), std.len()] {
            if v != d {
                return Err(DataError::Dimension {
                    expected: d,
                    found: v,
                });
            }
        }
        for row in &mut self.x {
            for ((v, m), s) in row.iter_mut().zip(mean).zip(std) {
                let s = if *s > 0.0 { *s } else { 1.0 };
                *v = (*v - m) / s;
            }
        }
        Ok(())
    }
}

/// Per-feature sums that clients add up (through secure aggregation) to standardise globally.
///
/// Only sums leave a client, never rows. [`FeatureStats::to_vec`] / [`FeatureStats::from_vec`]
/// flatten them as `[count, Σx_0..Σx_{d−1}, Σx²_0..Σx²_{d−1}]` for the masked sum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureStats {
    /// Number of rows summed.
    pub count: f64,
    /// Σx per feature.
    pub sum: Vec<f64>,
    /// Σx² per feature.
    pub sum_sq: Vec<f64>,
}

impl FeatureStats {
    /// The sums over one data set.
    pub fn from_dataset(data: &Dataset) -> Self {
        let d = data.num_features();
        let mut s = FeatureStats {
            count: data.len() as f64,
            sum: vec![0.0; d],
            sum_sq: vec![0.0; d],
        };
        for row in &data.x {
            for (j, &v) in row.iter().enumerate() {
                let v = f64::from(v);
                s.sum[j] += v;
                s.sum_sq[j] += v * v;
            }
        }
        s
    }

    /// Adds another client's sums into these.
    pub fn merge(&mut self, other: &FeatureStats) -> Result<(), DataError> {
        if other.sum.len() != self.sum.len() {
            return Err(DataError::Dimension {
                expected: self.sum.len(),
                found: other.sum.len(),
            });
        }
        self.count += other.count;
        for j in 0..self.sum.len() {
            self.sum[j] += other.sum[j];
            self.sum_sq[j] += other.sum_sq[j];
        }
        Ok(())
    }

    /// Flattens to `[count, Σx.., Σx²..]` (length `1 + 2d`).
    pub fn to_vec(&self) -> Vec<f64> {
        let mut v = Vec::with_capacity(1 + 2 * self.sum.len());
        v.push(self.count);
        v.extend_from_slice(&self.sum);
        v.extend_from_slice(&self.sum_sq);
        v
    }

    /// Inverse of [`FeatureStats::to_vec`].
    pub fn from_vec(v: &[f64]) -> Result<Self, DataError> {
        if v.is_empty() || !(v.len() - 1).is_multiple_of(2) {
            return Err(DataError::Invalid("stats vector must have length 1 + 2d"));
        }
        let d = (v.len() - 1) / 2;
        Ok(FeatureStats {
            count: v[0],
            sum: v[1..1 + d].to_vec(),
            sum_sq: v[1 + d..].to_vec(),
        })
    }

    /// Mean and population standard deviation per feature.
    pub fn mean_std(&self) -> Result<(Vec<f32>, Vec<f32>), DataError> {
        if self.count < 1.0 {
            return Err(DataError::Invalid("no rows in the statistics"));
        }
        let n = self.count;
        let mean: Vec<f64> = self.sum.iter().map(|s| s / n).collect();
        let std = self
            .sum_sq
            .iter()
            .zip(&mean)
            .map(|(sq, m)| ((sq / n - m * m).max(0.0)).sqrt() as f32)
            .collect();
        Ok((mean.into_iter().map(|m| m as f32).collect(), std))
    }
}

/// Splits off a stratified test set: within each label value, a seeded shuffle puts
/// `round(test_fraction × class size)` rows into the test set. Returns `(train, test)`.
pub fn stratified_split(
    data: &Dataset,
    test_fraction: f64,
    seed: u64,
) -> Result<(Dataset, Dataset), DataError> {
    if !(0.0..=1.0).contains(&test_fraction) {
        return Err(DataError::Invalid("test_fraction must be in [0, 1]"));
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut labels: Vec<f32> = data.y.clone();
    labels.sort_by(f32::total_cmp);
    labels.dedup();
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for label in labels {
        let mut idx: Vec<usize> = (0..data.len()).filter(|&i| data.y[i] == label).collect();
        idx.shuffle(&mut rng);
        let k = (test_fraction * idx.len() as f64).round() as usize;
        test.extend_from_slice(&idx[..k]);
        train.extend_from_slice(&idx[k..]);
    }
    train.sort_unstable();
    test.sort_unstable();
    Ok((data.select(&train), data.select(&test)))
}

/// A deterministic non-IID split into `k` parts with different class balance, for tests.
///
/// Rows are sorted by `(label, feature[sort_feature])` and that order is cut into `k`
/// contiguous parts of (nearly) equal size, so early parts hold mostly label 0 and late parts
/// mostly label 1, and neighbouring parts also differ in the sort feature. To soften the skew, a
/// fraction `iid_fraction` of each class (every `1/iid_fraction`-th row in sorted order) is
/// instead dealt round-robin to all parts. `iid_fraction = 0` is the hardest split (parts of a
/// single class where sizes allow), `1` is close to IID.
pub fn non_iid_split(
    data: &Dataset,
    k: usize,
    sort_feature: usize,
    iid_fraction: f64,
) -> Result<Vec<Dataset>, DataError> {
    if k == 0 || data.len() < k {
        return Err(DataError::Invalid("need at least one row per part"));
    }
    if sort_feature >= data.num_features() {
        return Err(DataError::Invalid("sort_feature out of range"));
    }
    if !(0.0..=1.0).contains(&iid_fraction) {
        return Err(DataError::Invalid("iid_fraction must be in [0, 1]"));
    }
    let mut order: Vec<usize> = (0..data.len()).collect();
    order.sort_by(|&a, &b| {
        data.y[a]
            .total_cmp(&data.y[b])
            .then(data.x[a][sort_feature].total_cmp(&data.x[b][sort_feature]))
            .then(a.cmp(&b))
    });
    let mut shared = Vec::new();
    let mut skewed = Vec::new();
    let mut acc = 0.0;
    for &i in &order {
        acc += iid_fraction;
        if acc >= 1.0 - 1e-9 {
            acc -= 1.0;
            shared.push(i);
        } else {
            skewed.push(i);
        }
    }
    let mut parts: Vec<Vec<usize>> = vec![Vec::new(); k];
    let n = skewed.len();
    for (pos, &i) in skewed.iter().enumerate() {
        parts[pos * k / n.max(1)].push(i);
    }
    for (pos, &i) in shared.iter().enumerate() {
        parts[pos % k].push(i);
    }
    Ok(parts
        .into_iter()
        .map(|mut p| {
            p.sort_unstable();
            data.select(&p)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: &str = "a,b,label,c\n1,2,0,3\n4,5,1,6\n\n7,8,1,9\n";

    #[test]
    fn parses_selected_and_default_columns() {
        let d = Dataset::from_csv_str(CSV, "label", Some(&["c", "a"])).unwrap();
        assert_eq!(d.x, vec![vec![3.0, 1.0], vec![6.0, 4.0], vec![9.0, 7.0]]);
        assert_eq!(d.y, vec![0.0, 1.0, 1.0]);
        let d = Dataset::from_csv_str(CSV, "label", None).unwrap();
        assert_eq!(d.x[0], vec![1.0, 2.0, 3.0]);
    }

    #[test]
    fn parse_errors_are_typed() {
        assert_eq!(
            Dataset::from_csv_str(CSV, "nope", None),
            Err(DataError::MissingColumn("nope".into()))
        );
        assert!(matches!(
            Dataset::from_csv_str("a,b\n1\n", "a", None),
            Err(DataError::RowLength { row: 2, .. })
        ));
        assert!(matches!(
            Dataset::from_csv_str("a,b\n1,x\n", "a", None),
            Err(DataError::NotANumber { row: 2, .. })
        ));
        assert_eq!(
            Dataset::from_csv_str("", "a", None),
            Err(DataError::NoHeader)
        );
    }

    #[test]
    fn merged_stats_equal_global_stats() {
        let d = Dataset::from_csv_str(CSV, "label", None).unwrap();
        let global = FeatureStats::from_dataset(&d);
        let mut merged = FeatureStats::from_dataset(&d.select(&[0]));
        merged
            .merge(&FeatureStats::from_dataset(&d.select(&[1, 2])))
            .unwrap();
        assert_eq!(merged, global);
        assert_eq!(FeatureStats::from_vec(&global.to_vec()).unwrap(), global);
        let (mean, std) = global.mean_std().unwrap();
        assert_eq!(mean, vec![4.0, 5.0, 6.0]);
        assert!((std[0] - 6.0f32.sqrt()).abs() < 1e-5);
        let mut s = d.clone();
        s.standardize(&mean, &std).unwrap();
        let (m2, s2) = FeatureStats::from_dataset(&s).mean_std().unwrap();
        assert!(m2.iter().all(|m| m.abs() < 1e-6));
        assert!(s2.iter().all(|s| (s - 1.0).abs() < 1e-5));
    }

    fn toy(n: usize) -> Dataset {
        Dataset {
            x: (0..n).map(|i| vec![i as f32, (n - i) as f32]).collect(),
            y: (0..n).map(|i| if i % 3 == 0 { 0.0 } else { 1.0 }).collect(),
            columns: Vec::new(),
        }
    }

    #[test]
    fn columns_are_picked_by_name() {
        let d = Dataset::from_csv_str("a,label,b\n1,0,2\n3,1,4\n", "label", None).unwrap();
        assert_eq!(d.columns, ["a", "b"]);
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let swapped = d.with_columns(&names(&["b", "a"])).unwrap();
        assert_eq!(swapped.x, vec![vec![2.0, 1.0], vec![4.0, 3.0]]);
        assert_eq!(swapped.y, d.y);
        assert_eq!(swapped.to_csv("label"), "b,a,label\n2,1,0\n4,3,1\n");
        assert_eq!(
            d.with_columns(&names(&["a", "c"])),
            Err(DataError::MissingColumn("c".into()))
        );
        assert_eq!(
            d.with_columns(&names(&["a", "a"])),
            Err(DataError::DuplicateColumn("a".into()))
        );
        assert!(matches!(
            d.with_columns(&names(&["a"])),
            Err(DataError::Dimension { .. })
        ));
        // Without names, by position.
        let t = toy(3);
        assert_eq!(t.with_columns(&names(&["p", "q"])).unwrap(), t);
    }

    #[test]
    fn stratified_split_keeps_class_balance() {
        let d = toy(300);
        let (train, test) = stratified_split(&d, 0.2, 7).unwrap();
        assert_eq!(train.len() + test.len(), 300);
        assert_eq!(test.len(), 60);
        assert!((test.positive_fraction() - d.positive_fraction()).abs() < 0.01);
        assert_eq!(stratified_split(&d, 0.2, 7).unwrap().1, test);
    }

    #[test]
    fn non_iid_split_is_skewed_and_complete() {
        let d = toy(300);
        let parts = non_iid_split(&d, 5, 0, 0.0).unwrap();
        assert_eq!(parts.iter().map(Dataset::len).sum::<usize>(), 300);
        let fr: Vec<f64> = parts.iter().map(Dataset::positive_fraction).collect();
        assert_eq!(fr[0], 0.0);
        assert_eq!(fr[4], 1.0);
        let soft = non_iid_split(&d, 5, 0, 0.5).unwrap();
        assert!(soft[0].positive_fraction() > 0.2);
        assert!(soft[4].positive_fraction() < 1.0);
        assert_eq!(non_iid_split(&d, 5, 0, 0.5).unwrap(), soft);
    }
}
