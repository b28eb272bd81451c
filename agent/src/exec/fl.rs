//! Federated learning: this node's clients of `federated_learning` jobs, over the data sets its
//! operator declared (`[[datasets]]` in the config). Rows stay here: the coordinator gets only
//! the messages of [`ambient_fl::client::Client`] (statistics sums, clipped and noised updates,
//! masked under secure aggregation).
//!
//! Each job has one worker task that handles its messages in order; training runs on a
//! blocking thread. A model too large to travel inline arrives as a blob reference, which the
//! worker downloads ([`crate::blobs`]) before handing the round to the client.
//!
//! Clients sign the keys they advertise with the node's identity key, and refuse a roster whose
//! keys are not signed by the identities peers published on the broker ([`PeerKeys`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use ambient_fl::client::{Client, ClientIdentity};
use ambient_fl::data::Dataset;
use ambient_fl::wire::{ToClient, ToServer};
use ambient_protocol::wire::weights_from_blob;
use ambient_protocol::{DatasetInfo, NodeKey};
use ambient_service::Shutdown;
use tokio::sync::mpsc;
use tracing::{info, warn};
use uuid::Uuid;

use crate::PeerKeys;
use crate::blobs::Blobs;
use crate::config::DatasetConfig;

/// Where a client's answers go: the task and the message.
pub type Reply = Arc<dyn Fn(Uuid, ToServer) + Send + Sync>;

/// A coordinator message and, for a `Begin` whose model travels by reference, the blob.
type Delivery = (ToClient, Option<String>);

/// The node's data sets and its clients of running jobs.
pub struct FlClients {
    datasets: BTreeMap<String, Arc<Dataset>>,
    jobs: Mutex<HashMap<Uuid, mpsc::UnboundedSender<Delivery>>>,
    identity: ClientIdentity,
    blobs: Arc<Blobs>,
}

impl FlClients {
    /// Reads every declared data set (blocking: call at start, off the async workers). Clients
    /// sign with `key` as node `node`, and check peers against `peers`.
    pub fn load(
        cfgs: &[DatasetConfig],
        node: &str,
        key: &NodeKey,
        peers: PeerKeys,
        blobs: Arc<Blobs>,
    ) -> Result<FlClients, String> {
        let mut datasets = BTreeMap::new();
        for c in cfgs {
            let text = std::fs::read_to_string(&c.path)
                .map_err(|e| format!("dataset {}: {}: {e}", c.name, c.path.display()))?;
            let features: Option<Vec<&str>> = c
                .features
                .as_ref()
                .map(|f| f.iter().map(String::as_str).collect());
            let d = Dataset::from_csv_str(&text, &c.label, features.as_deref())
                .map_err(|e| format!("dataset {}: {}: {e}", c.name, c.path.display()))?;
            if d.is_empty() {
                return Err(format!(
                    "dataset {}: {} has no rows",
                    c.name,
                    c.path.display()
                ));
            }
            info!(dataset = %c.name, rows = d.len(), features = d.num_features(),
                  "Data set loaded for federated learning.");
            datasets.insert(c.name.clone(), Arc::new(d));
        }
        let identity = ClientIdentity {
            node: node.to_string(),
            key: key.signing_key().clone(),
            peers: Arc::new(move |n: &str| peers.get(n)),
        };
        Ok(FlClients {
            datasets,
            jobs: Mutex::new(HashMap::new()),
            identity,
            blobs,
        })
    }

    /// True when the node offers any data set (and so needs its peers' identities).
    pub fn any(&self) -> bool {
        !self.datasets.is_empty()
    }

    /// What health advertises: names and sizes, never rows.
    pub fn infos(&self) -> Vec<DatasetInfo> {
        self.datasets
            .iter()
            .map(|(name, d)| DatasetInfo {
                name: name.clone(),
                rows: d.len() as u64,
                features: d.num_features() as u32,
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, mpsc::UnboundedSender<Delivery>>> {
        self.jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Hands a coordinator message to the job's client, starting one on `Begin` of a job this
    /// node has not seen; `weights_blob` names the model of a `Begin` that travels by reference.
    /// Answers go to `reply`. The job's worker stops at `End`, or when `shutdown` is triggered (the
    /// agent stops).
    pub fn deliver(
        self: &Arc<Self>,
        task_id: Uuid,
        msg: ToClient,
        weights_blob: Option<String>,
        shutdown: &Shutdown,
        reply: Reply,
    ) {
        let mut jobs = self.lock();
        if let Some(tx) = jobs.get(&task_id)
            && tx.send((msg.clone(), weights_blob.clone())).is_ok()
        {
            return;
        }
        if matches!(msg, ToClient::End { .. }) {
            return; // nothing to end
        }
        let ToClient::Begin { round, dataset, .. } = &msg else {
            warn!(task_id = %task_id, "Federated message for a job this node is not in; ignored.");
            return;
        };
        let Some(data) = self.datasets.get(dataset).cloned() else {
            reply(
                task_id,
                ToServer::Failed {
                    round: *round,
                    reason: format!("this node has no data set {dataset:?}"),
                },
            );
            return;
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let _ = tx.send((msg, weights_blob));
        jobs.insert(task_id, tx);
        drop(jobs);
        let (me, token) = (self.clone(), shutdown.token().clone());
        shutdown.spawn(async move {
            let client = Arc::new(Mutex::new(Client::with_identity(
                (*data).clone(),
                me.identity.clone(),
            )));
            loop {
                let (mut msg, blob) = tokio::select! {
                    msg = rx.recv() => match msg {
                        Some(m) => m,
                        None => break,
                    },
                    _ = token.cancelled() => break,
                };
                let end = matches!(msg, ToClient::End { .. });
                let round = msg.round().unwrap_or_default();
                if let (Some(sha), ToClient::Begin { weights, .. }) = (blob, &mut msg) {
                    let fetched = tokio::select! {
                        w = me.fetch_weights(&sha) => w,
                        _ = token.cancelled() => break,
                    };
                    match fetched {
                        Ok(w) => *weights = w,
                        Err(reason) => {
                            warn!(task_id = %task_id, reason = %reason, "Could not get the model; leaving the job.");
                            reply(task_id, ToServer::Failed { round, reason });
                            break;
                        }
                    }
                }
                let c = client.clone();
                let answer = tokio::task::spawn_blocking(move || {
                    c.lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .handle(msg, &mut rand::rng())
                })
                .await;
                match answer {
                    Ok(Ok(Some(a))) => reply(task_id, a),
                    Ok(Ok(None)) => {}
                    Ok(Err(e)) => {
                        warn!(task_id = %task_id, error = %e, "Federated client refused a message.");
                        reply(
                            task_id,
                            ToServer::Failed {
                                round,
                                reason: e.to_string(),
                            },
                        );
                    }
                    Err(e) => warn!(task_id = %task_id, error = %e, "Federated client crashed."),
                }
                if end {
                    break;
                }
            }
            me.lock().remove(&task_id);
        });
    }

    async fn fetch_weights(&self, sha256: &str) -> Result<Vec<f32>, String> {
        let bytes = self.blobs.get(sha256).await.map_err(|e| e.to_string())?;
        weights_from_blob(&bytes).ok_or_else(|| format!("blob {sha256} is not a list of f32s"))
    }
}
