//! Blobs by reference: large artifacts (federated models, proving keys, modules) that the
//! coordinator names by sha256 instead of sending inline. The agent downloads them from the
//! coordinator's REST API (`GET /api/v1/blobs/{sha256}`), signing each request with its identity
//! key ([`ambient_protocol::identity::blob_request_message`]), checks the bytes against the hash,
//! and caches them under `<data_dir>/blobs/` by hash, up to `execution.blob_cache_mib`: past it,
//! the blobs used least recently go first.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ambient_protocol::{NodeKey, identity, sha256_hex};
use tracing::debug;

/// Why a blob could not be had.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The agent has no `coordinator_url`.
    #[error(
        "this work needs blob {0} from the coordinator, and this node has no coordinator_url \
         configured"
    )]
    NoUrl(String),
    /// Not a sha256.
    #[error("{0:?} is not a sha256")]
    BadName(String),
    /// The request failed.
    #[error("downloading blob {sha256}: {message}")]
    Http {
        /// The blob.
        sha256: String,
        /// What happened.
        message: String,
    },
    /// Over the size limit.
    #[error("blob {sha256} is larger than {max} bytes")]
    TooLarge {
        /// The blob.
        sha256: String,
        /// The limit.
        max: u64,
    },
    /// The bytes are not the blob asked for.
    #[error("downloaded bytes hash to {got}, not the requested {want}")]
    HashMismatch {
        /// Asked for.
        want: String,
        /// Received.
        got: String,
    },
}

/// Largest blob the agent downloads.
pub const MAX_BLOB_BYTES: u64 = 1 << 30;

/// Downloads and caches blobs.
pub struct Blobs {
    base: Option<String>,
    node: String,
    key: Arc<NodeKey>,
    dir: PathBuf,
    max_cache_bytes: u64,
    http: reqwest::Client,
}

impl Blobs {
    /// A fetcher for `node` against the coordinator at `base` (`http://host:port`), caching up
    /// to `max_cache_bytes`.
    pub fn new(
        base: Option<String>,
        node: String,
        key: Arc<NodeKey>,
        data_dir: &std::path::Path,
        max_cache_bytes: u64,
    ) -> Blobs {
        Blobs {
            base: base.map(|b| b.trim_end_matches('/').to_string()),
            node,
            key,
            dir: data_dir.join("blobs"),
            max_cache_bytes,
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .timeout(Duration::from_secs(600))
                .build()
                .unwrap_or_default(),
        }
    }

    /// The blob's bytes, from the cache or the coordinator.
    pub async fn get(&self, sha256: &str) -> Result<Vec<u8>, BlobError> {
        if !ambient_protocol::is_sha256_hex(sha256) {
            return Err(BlobError::BadName(sha256.to_string()));
        }
        let path = self.dir.join(sha256);
        if let Ok(bytes) = tokio::fs::read(&path).await {
            let (bytes, got) = hash(bytes).await;
            if got == sha256 {
                // Used now: the last to be evicted.
                if let Ok(f) = std::fs::File::options().append(true).open(&path) {
                    let _ = f.set_modified(std::time::SystemTime::now());
                }
                return Ok(bytes);
            }
            debug!(sha256, "Cached blob is corrupt; downloading it again.");
        }
        let bytes = self.download(sha256).await?;
        // Cache by write-then-rename, so neither a crash nor a concurrent download of the same
        // blob leaves a half file under the hash.
        let tmp = self
            .dir
            .join(format!("{sha256}.{}.part", uuid::Uuid::new_v4().simple()));
        let cached = async {
            tokio::fs::create_dir_all(&self.dir).await?;
            tokio::fs::write(&tmp, &bytes).await?;
            tokio::fs::rename(&tmp, &path).await
        }
        .await;
        if let Err(e) = cached {
            debug!(sha256, error = %e, "Could not cache a blob.");
        }
        let (dir, keep, max) = (self.dir.clone(), sha256.to_string(), self.max_cache_bytes);
        match tokio::task::spawn_blocking(move || evict(&dir, &keep, max)).await {
            Ok(Ok(0)) | Err(_) => {}
            Ok(Ok(freed)) => debug!(freed, "Evicted blobs from the cache."),
            Ok(Err(e)) => debug!(error = %e, "Could not trim the blob cache."),
        }
        Ok(bytes)
    }

    async fn download(&self, sha256: &str) -> Result<Vec<u8>, BlobError> {
        let base = self
            .base
            .as_ref()
            .ok_or_else(|| BlobError::NoUrl(sha256.to_string()))?;
        let http = |message: String| BlobError::Http {
            sha256: sha256.to_string(),
            message,
        };
        let (time, nonce) = (chrono::Utc::now().timestamp(), identity::nonce());
        let sig = self.key.sign(&identity::blob_request_message(
            &self.node, sha256, time, &nonce,
        ));
        let mut resp = self
            .http
            .get(format!("{base}/api/v1/blobs/{sha256}"))
            .header(identity::HEADER_NODE, &self.node)
            .header(identity::HEADER_TIME, time.to_string())
            .header(identity::HEADER_NONCE, nonce)
            .header(identity::HEADER_SIGNATURE, hex::encode(sig))
            .send()
            .await
            .map_err(|e| http(e.to_string()))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            return Err(http(format!("{status}: {body}")));
        }
        let too_large = || BlobError::TooLarge {
            sha256: sha256.to_string(),
            max: MAX_BLOB_BYTES,
        };
        if resp.content_length().is_some_and(|n| n > MAX_BLOB_BYTES) {
            return Err(too_large());
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| http(e.to_string()))? {
            if bytes.len() as u64 + chunk.len() as u64 > MAX_BLOB_BYTES {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        let (bytes, got) = hash(bytes).await;
        if got != sha256 {
            return Err(BlobError::HashMismatch {
                want: sha256.to_string(),
                got,
            });
        }
        Ok(bytes)
    }
}

/// The bytes and their sha256, hashed off the async workers (a blob may be a gigabyte).
async fn hash(bytes: Vec<u8>) -> (Vec<u8>, String) {
    tokio::task::spawn_blocking(move || {
        let h = sha256_hex(&bytes);
        (bytes, h)
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// Deletes the least recently used blobs in `dir` (never `keep`, nor downloads in progress)
/// until the rest fit in `max` bytes; returns the bytes freed. Blocking.
fn evict(dir: &std::path::Path, keep: &str, max: u64) -> std::io::Result<u64> {
    let mut files = Vec::new();
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(meta) = entry.metadata() else {
            continue; // gone meanwhile
        };
        if meta.is_file() && ambient_protocol::is_sha256_hex(&entry.file_name().to_string_lossy()) {
            total += meta.len();
            files.push((meta.modified()?, meta.len(), entry.path()));
        }
    }
    files.sort();
    let mut freed = 0;
    for (_, len, path) in files {
        if total - freed <= max {
            break;
        }
        if path.file_name().is_some_and(|n| n == keep) {
            continue;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => freed += len,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => freed += len, // another evictor
            Err(e) => return Err(e),
        }
    }
    Ok(freed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    #[test]
    fn eviction_keeps_the_newest_within_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = SystemTime::now() - Duration::from_secs(100);
        let name = |s: &str| ambient_protocol::sha256_hex(s.as_bytes());
        // A download in progress is never counted or evicted.
        std::fs::write(
            dir.path().join(format!("{}.x.part", name("old"))),
            [0u8; 500],
        )
        .unwrap();
        for (i, label) in ["old", "mid", "new", "keep"].iter().enumerate() {
            let path = dir.path().join(name(label));
            std::fs::write(&path, vec![0u8; 100]).unwrap();
            // "keep" is the oldest of all, and must stay anyway.
            let age = if *label == "keep" { 0 } else { i as u64 + 1 };
            std::fs::File::options()
                .append(true)
                .open(&path)
                .unwrap()
                .set_modified(t0 + Duration::from_secs(age * 10))
                .unwrap();
        }
        assert_eq!(evict(dir.path(), &name("keep"), 250).unwrap(), 200);
        let left = |l: &str| dir.path().join(name(l)).exists();
        assert!(left("keep") && left("new") && !left("mid") && !left("old"));
        assert!(dir.path().join(format!("{}.x.part", name("old"))).exists());
        assert_eq!(evict(dir.path(), &name("keep"), 1000).unwrap(), 0);
    }
}
