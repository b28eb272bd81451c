//! Artifacts in the blob store: storing what a submission carries, inlining small artifacts into
//! assignments, and counting the users of temporary blobs (federated models) so that the last
//! one to let go deletes them.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use tracing::{error, warn};

use crate::store::{Store, StoreError};
use crate::submission::{Accepted, SubmitError};

/// Puts an accepted submission's inline artifact in the blob store, or checks that the one it
/// references is there. Part of [`crate::submission::submit`], which both the REST and the MQTT
/// intake call.
pub async fn store_submitted(store: &Store, accepted: &Accepted) -> Result<(), SubmitError> {
    if let Some((sha, bytes)) = &accepted.artifact {
        store
            .put_blob(sha.clone(), bytes.clone())
            .await
            .map_err(|e| SubmitError::Unavailable(e.to_string()))?;
    }
    if let Some(sha) = &accepted.artifact_ref {
        let known = store
            .blob_size(sha.clone())
            .await
            .map_err(|e| SubmitError::Unavailable(e.to_string()))?;
        if known.is_none() {
            return Err(SubmitError::UnknownModel(sha.clone()));
        }
    }
    Ok(())
}

/// A change to the temporary blobs, queued by the federated driver and applied by the engine:
/// stores and adoptions before the messages that name the blob go out, releases after.
#[derive(Debug, Clone, PartialEq)]
pub enum BlobChange {
    /// Store a blob that the messages after it refer to (a federated model too large to send
    /// inline), and count one more user.
    Store {
        /// Its content address.
        sha256: String,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// A blob a federated job stored before a restart is its again: count it, so that it goes
    /// when the job lets it go.
    Adopt {
        /// Its content address.
        sha256: String,
    },
    /// One user no longer needs the blob: delete it when no other uses it.
    Release {
        /// Its content address.
        sha256: String,
    },
}

/// The engine's view of the blob store.
pub struct Artifacts {
    store: Store,
    /// Base64 of inline artifacts by sha256, so one is read and encoded once, not per replica.
    inline: HashMap<String, Arc<str>>,
    /// Larger artifacts go to agents by reference.
    inline_limit: usize,
    /// Blobs stored for federated rounds, with how many rounds use each (jobs with the same
    /// model and seed share their first), deleted when the last is over. A job resumed after a
    /// restart adopts the blob of its checkpoint's model.
    temporary: HashMap<String, u32>,
}

impl Artifacts {
    /// Artifacts up to `inline_limit` bytes travel inside assignments.
    pub fn new(store: Store, inline_limit: usize) -> Artifacts {
        Artifacts {
            store,
            inline: HashMap::new(),
            inline_limit,
            temporary: HashMap::new(),
        }
    }

    /// The artifact's base64 when it is small enough to travel inline, `None` when it goes by
    /// reference.
    pub async fn inline(&mut self, sha: &str) -> Result<Option<Arc<str>>, StoreError> {
        if let Some(m) = self.inline.get(sha) {
            return Ok(Some(m.clone()));
        }
        let size = self
            .store
            .blob_size(sha.to_string())
            .await?
            .ok_or_else(|| StoreError::Missing(sha.to_string()))?;
        if size > self.inline_limit as u64 {
            return Ok(None);
        }
        let bytes = self
            .store
            .blob(sha.to_string())
            .await?
            .ok_or_else(|| StoreError::Missing(sha.to_string()))?;
        let b64: Arc<str> = base64::engine::general_purpose::STANDARD
            .encode(bytes)
            .into();
        if self.inline.len() >= 64 {
            self.inline.clear();
        }
        self.inline.insert(sha.to_string(), b64.clone());
        Ok(Some(b64))
    }

    /// Applies one change to the temporary blobs.
    pub async fn apply(&mut self, change: BlobChange) {
        match change {
            BlobChange::Store { sha256, bytes } => {
                // The same bytes stored by someone else (an upload): use them, never delete them.
                if !self.temporary.contains_key(&sha256)
                    && matches!(self.store.blob_size(sha256.clone()).await, Ok(Some(_)))
                {
                    return;
                }
                match self.store.put_blob(sha256.clone(), bytes).await {
                    Ok(()) => *self.temporary.entry(sha256).or_default() += 1,
                    // The clients fail to fetch it and leave; the round fails with that reason.
                    Err(e) => {
                        error!(blob = %sha256, error = %e, "Could not store a federated model blob.")
                    }
                }
            }
            BlobChange::Adopt { sha256 } => {
                if matches!(self.store.blob_size(sha256.clone()).await, Ok(Some(_))) {
                    *self.temporary.entry(sha256).or_default() += 1;
                }
            }
            BlobChange::Release { sha256 } => {
                let Some(users) = self.temporary.get_mut(&sha256) else {
                    return;
                };
                *users -= 1;
                if *users == 0 {
                    self.temporary.remove(&sha256);
                    if let Err(e) = self.store.delete_blob(sha256.clone()).await {
                        warn!(blob = %sha256, error = %e, "Could not delete a federated model blob.");
                    }
                }
            }
        }
    }
}
