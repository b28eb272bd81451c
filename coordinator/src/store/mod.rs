//! Persistence: the coordinator's state behind one interface, [`Store`], with two backends.
//!
//! - [`sqlite`] (the default, for `ambient demo`, `ambient up` and a single coordinator): one
//!   SQLite file (WAL) in the data directory, owned by one named thread that takes commands over
//!   a channel ([`ambient_service::SqliteActor`]), so no rusqlite call runs on an async worker.
//! - [`postgres`] (production; `store = "postgres://…"` in the configuration, or
//!   `AMBIENT_DATABASE_URL`): a pool of tokio-postgres connections, so that any number of
//!   coordinator processes can share one database.
//!
//! Both keep the same tables, versioned by one list, [`MIGRATIONS`], with each version's SQL
//! written once per dialect; a database written by a newer build is refused by both.
//!
//! Tables:
//! - `tasks`: one row per task, the whole [`TaskRecord`] (assignments and results included) as
//!   JSON, with the columns the API filters by (shards of a computation have a `parent`);
//! - `nodes`: one row per node, its [`NodeRecord`] as JSON (with its folded reputation);
//! - `reputation_events`: every judgement of a node's work, append-only;
//! - `blobs`: content-addressed artifacts (wasm modules, ONNX models, Groth16 proving keys),
//!   keyed by sha256. Their bytes live in the database in both backends (SQLite `BLOB`,
//!   PostgreSQL `bytea`): every coordinator serves `GET /api/v1/blobs/{sha256}`, and the database
//!   is the one place all of them share, so no shared file system is needed. Blobs are capped by
//!   the submission limits (8 MiB models, 4 MiB modules by default; proving keys are a few MiB),
//!   well inside what `bytea` handles;
//! - `proofs`: every verified `zk_proof` proof, with the public inputs it was checked against;
//! - `fl_checkpoints`: the running federated jobs' state, one row per job;
//! - `join_tokens` and `enrolments`: enrolment tokens and the nodes that joined with them
//!   ([`enrolment`]);
//! - `accounts`, `api_keys` and `ledger`: submitter accounts made at run time, their API keys
//!   (sha256 only) and the double-entry ledger of credits ([`credits`]).

pub mod credits;
pub mod enrolment;
mod postgres;
mod sqlite;

use std::path::PathBuf;

use ambient_protocol::{ReputationEventInfo, TaskStatus};
use ambient_service::migrate::{Dialect, Migration};
use ambient_service::sqlite::{Closed, OpenError};
use uuid::Uuid;

use crate::scheduler::{NodeRecord, TaskRecord};
pub use credits::{AccountRecord, AccountTotals, KeyRecord, LedgerFilter};
pub use enrolment::{Enrolment, JoinRefused, TokenRecord};

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL refused, or the connection to it failed.
    #[error("database error: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// No PostgreSQL connection could be had from the pool.
    #[error("database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// A row did not decode.
    #[error("corrupt record: {0}")]
    Corrupt(#[from] serde_json::Error),
    /// The store thread is gone (the coordinator is shutting down).
    #[error("store closed")]
    Closed,
    /// A blob that should be there is not.
    #[error("blob {0} is missing")]
    Missing(String),
    /// The database could not be opened: SQLite refused the file, its thread could not start,
    /// or its schema could not be brought up to date or is newer than this build.
    #[error("coordinator database: {0}")]
    Open(#[from] OpenError),
    /// The PostgreSQL schema could not be brought up to date, or is newer than this build.
    #[error("coordinator database: {0}")]
    Schema(#[from] ambient_service::MigrateError),
    /// Another coordinator was granted the scheduler since this write's [`Fence`]: nothing was
    /// written.
    #[error("deposed: another coordinator leads now")]
    Deposed,
    /// The PostgreSQL address asks for something this build cannot do.
    #[error("not supported: {0}")]
    Unsupported(String),
}

impl From<Closed> for StoreError {
    fn from(_: Closed) -> StoreError {
        StoreError::Closed
    }
}

/// Where the coordinator's state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A SQLite file (created if missing).
    File(PathBuf),
    /// A PostgreSQL database, as a `postgres://user:password@host:port/database` URL (or a
    /// libpq key=value string). The database must exist; its tables are created at open.
    Postgres(String),
}

/// Handle to the store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Sqlite(sqlite::Sqlite),
    Postgres(postgres::Postgres),
}

/// Calls the same method, with the same arguments, on whichever backend the store has.
macro_rules! dispatch {
    ($self:ident.$method:ident($($arg:expr),*)) => {
        match &$self.backend {
            Backend::Sqlite(db) => db.$method($($arg),*).await,
            Backend::Postgres(db) => db.$method($($arg),*).await,
        }
    };
}

/// The coordinator database's schema, version by version. Never edit a released entry; append.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: &[
            (Dialect::Sqlite, sqlite::SCHEMA_V1),
            (Dialect::Postgres, postgres::SCHEMA_V1),
        ],
    },
    Migration {
        version: 2,
        name: "zk_keys_and_leader",
        sql: &[
            (Dialect::Sqlite, sqlite::SCHEMA_V2),
            (Dialect::Postgres, postgres::SCHEMA_V2),
        ],
    },
    Migration {
        version: 3,
        name: "enrolment",
        sql: &[
            (Dialect::Sqlite, sqlite::SCHEMA_V3),
            (Dialect::Postgres, postgres::SCHEMA_V3),
        ],
    },
    Migration {
        version: 4,
        name: "credits",
        sql: &[
            (Dialect::Sqlite, sqlite::SCHEMA_V4),
            (Dialect::Postgres, postgres::SCHEMA_V4),
        ],
    },
    Migration {
        version: 5,
        name: "leader_intake_secret",
        sql: &[
            // SQLite has one coordinator and no leader table.
            (
                Dialect::Sqlite,
                "-- nothing: the leader table is PostgreSQL's",
            ),
            (Dialect::Postgres, postgres::SCHEMA_V5),
        ],
    },
];

/// A coordinator's hold on the scheduler: who holds it, and the epoch it was granted in. Every
/// [`Store::save`] of the scheduler's state carries it, and PostgreSQL refuses the write when a
/// newer epoch has been granted since ([`StoreError::Deposed`]), so a coordinator that lost the
/// lease without noticing (paused, cut off) can change nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The holder's instance id.
    pub holder: String,
    /// Grants so far, this one included.
    pub epoch: i64,
}

/// Who leads, as the database says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderInfo {
    /// Its instance id.
    pub holder: String,
    /// Its REST API, where other coordinators forward what needs the scheduler.
    pub url: String,
    /// Whether its lease is still running.
    pub live: bool,
    /// The credential its internal intake route asks of the other coordinators
    /// ([`crate::api::INTAKE_SECRET`]): random per leader, readable only by whoever can read
    /// the database.
    pub secret: String,
}

/// A verified proof of a `zk_proof` task.
#[derive(Debug, Clone, PartialEq)]
pub struct ProofRecord {
    /// The proof's id.
    pub id: Uuid,
    /// The task it proves.
    pub task_id: Uuid,
    /// Circuit name, e.g. `hash_chain`.
    pub circuit: String,
    /// Circuit size (`n` or `L`).
    pub size: u64,
    /// The public inputs it verified against, decimal, in circuit order.
    pub public_inputs: Vec<String>,
    /// The compressed proof.
    pub proof: Vec<u8>,
    /// When the coordinator verified it.
    pub verified_at: chrono::DateTime<chrono::Utc>,
}

/// What one [`Store::save`] writes, in one transaction.
#[derive(Debug, Default)]
pub struct Batch {
    /// Task records to insert or replace.
    pub tasks: Vec<TaskRecord>,
    /// Node records to insert or replace.
    pub nodes: Vec<NodeRecord>,
    /// Reputation events to append.
    pub events: Vec<crate::reputation::Event>,
    /// Federated jobs' checkpoints to write, or (`None`) delete.
    pub checkpoints: Vec<(Uuid, Option<String>)>,
    /// Ledger postings to append (a transaction written before is skipped).
    pub postings: Vec<crate::credits::Posting>,
    /// The writer's hold on the scheduler; `None` for a writer that needs none (tests).
    pub fence: Option<Fence>,
}

impl Batch {
    /// Whether it writes nothing.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
            && self.nodes.is_empty()
            && self.events.is_empty()
            && self.checkpoints.is_empty()
            && self.postings.is_empty()
    }
}

impl Store {
    /// Opens the store at `location`, creating its tables or migrating them to [`MIGRATIONS`]'
    /// last version; a database written by a newer build is refused
    /// ([`ambient_service::MigrateError::TooNew`]).
    pub async fn open(location: &Location) -> Result<Store, StoreError> {
        let backend = match location {
            Location::File(path) => Backend::Sqlite(sqlite::Sqlite::open(path).await?),
            Location::Postgres(url) => Backend::Postgres(postgres::Postgres::open(url).await?),
        };
        Ok(Store { backend })
    }

    /// Writes task and node records, appends reputation events, and writes or deletes
    /// federated jobs' checkpoints, all in one transaction.
    pub async fn save(&self, batch: Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        dispatch!(self.save(batch))
    }

    /// The checkpoints of federated jobs that were running (JSON of
    /// `ambient_fl::server::Checkpoint`), by task.
    pub async fn fl_checkpoints(&self) -> Result<Vec<(Uuid, String)>, StoreError> {
        dispatch!(self.fl_checkpoints())
    }

    /// Every task not yet terminal, oldest first, and every node: what the scheduler restarts
    /// from.
    pub async fn load_active(&self) -> Result<(Vec<TaskRecord>, Vec<NodeRecord>), StoreError> {
        dispatch!(self.load_active())
    }

    /// One task by id.
    pub async fn task(&self, id: Uuid) -> Result<Option<TaskRecord>, StoreError> {
        dispatch!(self.task(id))
    }

    /// A submitter's top-level tasks (not shards), newest first, optionally of one status.
    pub async fn tasks_of(
        &self,
        submitter: String,
        status: Option<TaskStatus>,
        limit: u32,
    ) -> Result<Vec<TaskRecord>, StoreError> {
        dispatch!(self.tasks_of(submitter, status, limit))
    }

    /// Stores a blob under its sha256 (idempotent).
    pub async fn put_blob(&self, sha256: String, bytes: Vec<u8>) -> Result<(), StoreError> {
        dispatch!(self.put_blob(sha256, bytes))
    }

    /// Deletes a blob.
    pub async fn delete_blob(&self, sha256: String) -> Result<(), StoreError> {
        dispatch!(self.delete_blob(sha256))
    }

    /// The size of blob `sha256`, `None` when the store lacks it.
    pub async fn blob_size(&self, sha256: String) -> Result<Option<u64>, StoreError> {
        dispatch!(self.blob_size(sha256))
    }

    /// Reads a blob.
    pub async fn blob(&self, sha256: String) -> Result<Option<Vec<u8>>, StoreError> {
        dispatch!(self.blob(sha256))
    }

    /// Records a verified proof (idempotent by proof id).
    pub async fn put_proof(&self, p: ProofRecord) -> Result<(), StoreError> {
        dispatch!(self.put_proof(p))
    }

    /// The `limit` most recent reputation events of a node, oldest first.
    pub async fn reputation_history(
        &self,
        node: String,
        limit: u32,
    ) -> Result<Vec<ReputationEventInfo>, StoreError> {
        dispatch!(self.reputation_history(node, limit))
    }

    /// One proof by id.
    pub async fn proof(&self, id: Uuid) -> Result<Option<ProofRecord>, StoreError> {
        dispatch!(self.proof(id))
    }

    /// The blob holding the Groth16 keys of `circuit` (e.g. `hash_chain-64`), if any.
    pub async fn zk_keys(&self, circuit: String) -> Result<Option<String>, StoreError> {
        dispatch!(self.zk_keys(circuit))
    }

    /// Every circuit instance the store names keys for, as `(circuit, sha256)` (e.g.
    /// `("hash_chain-64", …)`), by name.
    pub async fn all_zk_keys(&self) -> Result<Vec<(String, String)>, StoreError> {
        dispatch!(self.all_zk_keys())
    }

    /// Names blob `sha256` as `circuit`'s keys, unless another coordinator named its own first;
    /// returns the keys that stand.
    pub async fn put_zk_keys(&self, circuit: String, sha256: String) -> Result<String, StoreError> {
        dispatch!(self.put_zk_keys(circuit, sha256))
    }

    /// Stores a new enrolment token.
    pub async fn put_token(&self, token: TokenRecord) -> Result<(), StoreError> {
        dispatch!(self.put_token(token))
    }

    /// Every enrolment token, newest first.
    pub async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        dispatch!(self.tokens())
    }

    /// Revokes a token; false when there is none with this id.
    pub async fn revoke_token(&self, id: String) -> Result<bool, StoreError> {
        dispatch!(self.revoke_token(id))
    }

    /// Redeems token `token` with `secret_sha256` for `enrolment`, in one transaction: the token
    /// must admit it ([`TokenRecord`]'s rule), one of its uses is spent, and the node is
    /// recorded. A key enrolled already (and not revoked) keeps its node id and gets the new
    /// password: a node whose first answer was lost can join again. Returns the enrolment as
    /// stored.
    pub async fn enrol(
        &self,
        secret_sha256: String,
        enrolment: Enrolment,
    ) -> Result<Result<Enrolment, JoinRefused>, StoreError> {
        dispatch!(self.enrol(secret_sha256, enrolment))
    }

    /// Every enrolled node, revoked ones included.
    pub async fn enrolments(&self) -> Result<Vec<Enrolment>, StoreError> {
        dispatch!(self.enrolments())
    }

    /// Marks an enrolled node revoked at `now`; false when no such node is enrolled.
    pub async fn revoke_node(&self, node: String, now: i64) -> Result<bool, StoreError> {
        dispatch!(self.revoke_node(node, now))
    }

    /// What the scheduler's [`crate::credits::Book`] restarts from.
    pub async fn credit_snapshot(&self) -> Result<crate::credits::Snapshot, StoreError> {
        dispatch!(self.credit_snapshot())?.snapshot()
    }

    /// A submitter's balance, reserved, spent and earned credits.
    pub async fn account_totals(&self, name: String) -> Result<AccountTotals, StoreError> {
        dispatch!(self.account_totals(name))
    }

    /// Up to `limit` postings after `after` (a `seq`), oldest first.
    pub async fn ledger(
        &self,
        filter: LedgerFilter,
        after: i64,
        limit: u32,
    ) -> Result<Vec<ambient_protocol::credits::LedgerEntry>, StoreError> {
        dispatch!(self.ledger(filter, after, limit))
    }

    /// Creates an account; false when one has this name.
    pub async fn put_account(&self, account: AccountRecord) -> Result<bool, StoreError> {
        dispatch!(self.put_account(account))
    }

    /// Sets an account's limits; false when there is no such account.
    pub async fn set_limits(
        &self,
        name: String,
        limits: ambient_protocol::credits::AccountLimits,
    ) -> Result<bool, StoreError> {
        dispatch!(self.set_limits(name, limits))
    }

    /// Accounts made at run time (`name`: only that one), by name.
    pub async fn accounts(&self, name: Option<String>) -> Result<Vec<AccountRecord>, StoreError> {
        dispatch!(self.accounts(name))
    }

    /// Stores a new API key.
    pub async fn put_key(&self, key: KeyRecord) -> Result<(), StoreError> {
        dispatch!(self.put_key(key))
    }

    /// API keys (`account`: only its own), oldest first.
    pub async fn keys(&self, account: Option<String>) -> Result<Vec<KeyRecord>, StoreError> {
        dispatch!(self.keys(account))
    }

    /// Revokes an API key; false when there is none with this id.
    pub async fn revoke_key(&self, id: String) -> Result<bool, StoreError> {
        dispatch!(self.revoke_key(id))
    }

    /// The account an unrevoked API key with this sha256 acts for.
    pub async fn key_account(&self, sha256: String) -> Result<Option<String>, StoreError> {
        dispatch!(self.key_account(sha256))
    }

    /// Whether several coordinators can share this store (PostgreSQL), so that one of them must
    /// be elected to run the scheduler.
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// Takes the scheduler for `lease` when nobody holds it or its holder's lease ran out, and
    /// returns the grant; `secret` is what the others must show on the leader's intake route.
    /// A SQLite store has one coordinator, which always leads (epoch 0).
    pub async fn lead(
        &self,
        holder: &str,
        url: &str,
        secret: &str,
        lease: std::time::Duration,
    ) -> Result<Option<Fence>, StoreError> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(Some(Fence {
                holder: holder.into(),
                epoch: 0,
            })),
            Backend::Postgres(db) => db.lead(holder, url, secret, lease).await,
        }
    }

    /// Extends the lease of `fence`; `false` when it was taken over.
    pub async fn renew(
        &self,
        fence: &Fence,
        lease: std::time::Duration,
    ) -> Result<bool, StoreError> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(true),
            Backend::Postgres(db) => db.renew(fence, lease).await,
        }
    }

    /// Ends the lease of `fence` now, so another coordinator can lead at once.
    pub async fn resign(&self, fence: &Fence) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(()),
            Backend::Postgres(db) => db.resign(fence).await,
        }
    }

    /// Who leads, if anyone ever did (always `None` on SQLite).
    pub async fn leader(&self) -> Result<Option<LeaderInfo>, StoreError> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(None),
            Backend::Postgres(db) => db.leader().await,
        }
    }
}

/// The statuses after which a task never changes, as an SQL list both dialects read.
const TERMINAL: &str = "('completed', 'failed', 'expired', 'cancelled')";

/// A [`StoreError::Corrupt`] for a column that holds what it should not.
fn corrupt(what: String) -> StoreError {
    StoreError::Corrupt(serde::de::Error::custom(what))
}
