//! `<data_dir>/settings.json`: the owner's settings (the contribution policy's input), read at
//! start and written atomically by the control API.

use std::path::{Path, PathBuf};

use crate::StartError;
use crate::policy::{Rules, Settings};

/// `<data_dir>/settings.json`.
pub fn settings_path(data_dir: &Path) -> PathBuf {
    data_dir.join("settings.json")
}

/// Reads the owner's settings; defaults when the file does not exist yet.
pub(crate) fn load(path: &Path) -> Result<Rules, StartError> {
    let bad = |why: String| StartError::Settings {
        path: path.to_owned(),
        why,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Rules::default()),
        Err(e) => return Err(bad(e.to_string())),
    };
    let settings: Settings = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    settings.compile().map_err(|e| bad(e.to_string()))
}

/// Writes the settings atomically (a temporary file renamed over the old one).
pub(crate) fn save(path: &Path, s: &Settings) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(s).unwrap_or_default())?;
    std::fs::rename(&tmp, path)
}
