//! Persistence: one SQLite file (WAL), owned by one named thread that takes commands over a
//! channel ([`ambient_service::SqliteActor`]), so no rusqlite call ever runs on an async worker.
//! The schema is versioned ([`MIGRATIONS`], applied at open by [`ambient_service::migrate`]);
//! a database written by a newer build is refused.
//!
//! Tables:
//! - `tasks`: one row per task, the whole [`TaskRecord`] (assignments and results included) as
//!   JSON, with the columns the API filters by (shards of a computation have a `parent`);
//! - `nodes`: one row per node, its [`NodeRecord`] as JSON (with its folded reputation);
//! - `reputation_events`: every judgement of a node's work, append-only;
//! - `blobs`: content-addressed artifacts (wasm modules, ONNX models, Groth16 proving keys),
//!   keyed by sha256;
//! - `proofs`: every verified `zk_proof` proof, with the public inputs it was checked against.

use std::path::Path;

use ambient_protocol::{ReputationEventInfo, TaskStatus};
use ambient_service::migrate::{Dialect, Migration};
use ambient_service::sqlite::{Closed, OpenError, SqliteActor};
use rusqlite::{Connection, OptionalExtension, params};
use uuid::Uuid;

use crate::scheduler::{NodeRecord, TaskRecord};

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
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
}

impl From<Closed> for StoreError {
    fn from(_: Closed) -> StoreError {
        StoreError::Closed
    }
}

/// Handle to the store thread. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: SqliteActor,
}

/// The coordinator database's schema, version by version. Never edit a released entry; append.
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "initial",
    sql: &[(Dialect::Sqlite, SCHEMA_V1)],
}];

/// Version 1: the schema as it was before versioning, so an unversioned database is adopted as
/// version 1 unchanged.
const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    submitter TEXT NOT NULL,
    status TEXT NOT NULL,
    parent TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_by_submitter ON tasks(submitter, created_at);
CREATE INDEX IF NOT EXISTS tasks_by_status ON tasks(status);
CREATE TABLE IF NOT EXISTS nodes (
    id TEXT PRIMARY KEY,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS reputation_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    node TEXT NOT NULL,
    kind TEXT NOT NULL,
    task_id TEXT NOT NULL,
    at TEXT NOT NULL,
    score REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS reputation_by_node ON reputation_events(node, seq);
CREATE TABLE IF NOT EXISTS blobs (
    sha256 TEXT PRIMARY KEY,
    bytes BLOB NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE TABLE IF NOT EXISTS proofs (
    id TEXT PRIMARY KEY,
    task_id TEXT NOT NULL,
    circuit TEXT NOT NULL,
    size INTEGER NOT NULL,
    public_inputs TEXT NOT NULL,
    proof BLOB NOT NULL,
    verified_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS proofs_by_task ON proofs(task_id);
CREATE TABLE IF NOT EXISTS fl_checkpoints (
    task_id TEXT PRIMARY KEY,
    checkpoint TEXT NOT NULL
);
";

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

impl Store {
    /// Opens (creating if needed) the database at `path` on its thread, with the settings of
    /// every service database ([`ambient_service::sqlite::configure`]), and migrates its schema
    /// to [`MIGRATIONS`]' last version there; a newer database is refused with
    /// [`StoreError::Open`] ([`OpenError::Schema`],
    /// [`ambient_service::MigrateError::TooNew`]).
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        let db = SqliteActor::open("coordinator-store", path, MIGRATIONS).await?;
        Ok(Store { db })
    }

    /// Runs `f` on the store thread and returns its answer.
    async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        self.db.call(f).await
    }

    /// Writes task and node records, appends reputation events, and writes (or, for `None`,
    /// deletes) federated jobs' checkpoints, in one transaction.
    pub async fn save(
        &self,
        tasks: Vec<TaskRecord>,
        nodes: Vec<NodeRecord>,
        events: Vec<crate::reputation::Event>,
        checkpoints: Vec<(Uuid, Option<String>)>,
    ) -> Result<(), StoreError> {
        if tasks.is_empty() && nodes.is_empty() && events.is_empty() && checkpoints.is_empty() {
            return Ok(());
        }
        self.call(move |conn| {
            let tx = conn.transaction()?;
            {
                let mut put_task = tx.prepare_cached(
                    "INSERT INTO tasks (id, submitter, status, created_at, updated_at, record, parent)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT(id) DO UPDATE SET status = ?3, updated_at = ?5, record = ?6",
                )?;
                for t in &tasks {
                    put_task.execute(params![
                        t.id.to_string(),
                        t.submitter,
                        t.status.as_str(),
                        t.created_at.to_rfc3339(),
                        t.updated_at.to_rfc3339(),
                        serde_json::to_string(t)?,
                        t.parent.map(|p| p.to_string()),
                    ])?;
                }
                let mut put_node = tx.prepare_cached(
                    "INSERT INTO nodes (id, record) VALUES (?1, ?2)
                     ON CONFLICT(id) DO UPDATE SET record = ?2",
                )?;
                for n in &nodes {
                    put_node.execute(params![n.id, serde_json::to_string(n)?])?;
                }
                let mut put_event = tx.prepare_cached(
                    "INSERT INTO reputation_events (node, kind, task_id, at, score)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?;
                for e in &events {
                    put_event.execute(params![
                        e.node,
                        e.kind.as_str(),
                        e.task_id.to_string(),
                        e.at.to_rfc3339(),
                        e.score
                    ])?;
                }
                for (id, cp) in &checkpoints {
                    match cp {
                        Some(cp) => tx.execute(
                            "INSERT INTO fl_checkpoints (task_id, checkpoint) VALUES (?1, ?2)
                             ON CONFLICT(task_id) DO UPDATE SET checkpoint = ?2",
                            params![id.to_string(), cp],
                        )?,
                        None => tx.execute(
                            "DELETE FROM fl_checkpoints WHERE task_id = ?1",
                            params![id.to_string()],
                        )?,
                    };
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// The checkpoints of federated jobs that were running (JSON of
    /// `ambient_fl::server::Checkpoint`), by task.
    pub async fn fl_checkpoints(&self) -> Result<Vec<(Uuid, String)>, StoreError> {
        self.call(|conn| {
            let mut stmt = conn.prepare("SELECT task_id, checkpoint FROM fl_checkpoints")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get(1)?)))?;
            let mut out = Vec::new();
            for row in rows {
                let (id, cp) = row?;
                if let Ok(id) = Uuid::parse_str(&id) {
                    out.push((id, cp));
                }
            }
            Ok(out)
        })
        .await
    }

    /// Every task not yet terminal, and every node: what the scheduler restarts from.
    pub async fn load_active(&self) -> Result<(Vec<TaskRecord>, Vec<NodeRecord>), StoreError> {
        self.call(|conn| {
            let mut stmt = conn.prepare(
                "SELECT record FROM tasks
                 WHERE status NOT IN ('completed', 'failed', 'expired', 'cancelled')
                 ORDER BY created_at",
            )?;
            let tasks = decode_rows::<TaskRecord>(&mut stmt, [])?;
            let mut stmt = conn.prepare("SELECT record FROM nodes ORDER BY id")?;
            let nodes = decode_rows::<NodeRecord>(&mut stmt, [])?;
            Ok((tasks, nodes))
        })
        .await
    }

    /// One task by id.
    pub async fn task(&self, id: Uuid) -> Result<Option<TaskRecord>, StoreError> {
        self.call(move |conn| {
            let row: Option<String> = conn
                .query_row(
                    "SELECT record FROM tasks WHERE id = ?1",
                    [id.to_string()],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(row.map(|s| serde_json::from_str(&s)).transpose()?)
        })
        .await
    }

    /// A submitter's tasks, newest first, optionally of one status.
    pub async fn tasks_of(
        &self,
        submitter: String,
        status: Option<TaskStatus>,
        limit: u32,
    ) -> Result<Vec<TaskRecord>, StoreError> {
        self.call(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT record FROM tasks
                 WHERE submitter = ?1 AND parent IS NULL AND (?2 IS NULL OR status = ?2)
                 ORDER BY created_at DESC LIMIT ?3",
            )?;
            decode_rows(
                &mut stmt,
                params![submitter, status.map(|s| s.as_str()), limit],
            )
        })
        .await
    }

    /// Stores a blob under its sha256 (idempotent).
    pub async fn put_blob(&self, sha256: String, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.call(move |conn| {
            conn.execute(
                "INSERT OR IGNORE INTO blobs (sha256, bytes) VALUES (?1, ?2)",
                params![sha256, bytes],
            )?;
            Ok(())
        })
        .await
    }

    /// Deletes a blob.
    pub async fn delete_blob(&self, sha256: String) -> Result<(), StoreError> {
        self.call(move |conn| {
            conn.execute("DELETE FROM blobs WHERE sha256 = ?1", [sha256])?;
            Ok(())
        })
        .await
    }

    /// The size of blob `sha256`, `None` when the store lacks it.
    pub async fn blob_size(&self, sha256: String) -> Result<Option<u64>, StoreError> {
        self.call(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT length(bytes) FROM blobs WHERE sha256 = ?1",
                    [sha256],
                    |r| r.get::<_, i64>(0).map(|n| n as u64),
                )
                .optional()?)
        })
        .await
    }

    /// Reads a blob.
    pub async fn blob(&self, sha256: String) -> Result<Option<Vec<u8>>, StoreError> {
        self.call(move |conn| {
            Ok(conn
                .query_row("SELECT bytes FROM blobs WHERE sha256 = ?1", [sha256], |r| {
                    r.get(0)
                })
                .optional()?)
        })
        .await
    }
}

impl Store {
    /// Records a verified proof.
    pub async fn put_proof(&self, p: ProofRecord) -> Result<(), StoreError> {
        self.call(move |conn| {
            conn.execute(
                "INSERT OR IGNORE INTO proofs (id, task_id, circuit, size, public_inputs, proof, verified_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    p.id.to_string(),
                    p.task_id.to_string(),
                    p.circuit,
                    p.size as i64,
                    serde_json::to_string(&p.public_inputs)?,
                    p.proof,
                    p.verified_at.to_rfc3339(),
                ],
            )?;
            Ok(())
        })
        .await
    }

    /// The `limit` most recent reputation events of a node, oldest first.
    pub async fn reputation_history(
        &self,
        node: String,
        limit: u32,
    ) -> Result<Vec<ReputationEventInfo>, StoreError> {
        self.call(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT kind, task_id, at, score FROM reputation_events
                 WHERE node = ?1 ORDER BY seq DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![node, limit], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, f64>(3)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (kind, task_id, at, score) = row?;
                let event = serde_json::json!({"kind": kind, "task_id": task_id, "at": at,
                                               "score": score});
                out.push(serde_json::from_value(event)?);
            }
            out.reverse();
            Ok(out)
        })
        .await
    }

    /// One proof by id.
    pub async fn proof(&self, id: Uuid) -> Result<Option<ProofRecord>, StoreError> {
        self.call(move |conn| {
            let row = conn
                .query_row(
                    "SELECT task_id, circuit, size, public_inputs, proof, verified_at
                     FROM proofs WHERE id = ?1",
                    [id.to_string()],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, String>(3)?,
                            r.get::<_, Vec<u8>>(4)?,
                            r.get::<_, String>(5)?,
                        ))
                    },
                )
                .optional()?;
            let Some((task_id, circuit, size, public, proof, at)) = row else {
                return Ok(None);
            };
            let bad = |what: &str| {
                StoreError::Corrupt(serde::de::Error::custom(format!("proof {id}: bad {what}")))
            };
            Ok(Some(ProofRecord {
                id,
                task_id: Uuid::parse_str(&task_id).map_err(|_| bad("task_id"))?,
                circuit,
                size: size as u64,
                public_inputs: serde_json::from_str(&public)?,
                proof,
                verified_at: chrono::DateTime::parse_from_rfc3339(&at)
                    .map_err(|_| bad("verified_at"))?
                    .with_timezone(&chrono::Utc),
            }))
        })
        .await
    }
}

fn decode_rows<T: serde::de::DeserializeOwned>(
    stmt: &mut rusqlite::Statement<'_>,
    params: impl rusqlite::Params,
) -> Result<Vec<T>, StoreError> {
    let rows = stmt.query_map(params, |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for row in rows {
        out.push(serde_json::from_str(&row?)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ambient_protocol::{Requirements, TaskType};
    use ambient_service::MigrateError;

    #[tokio::test]
    async fn records_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let now = chrono::Utc::now();
        let mut t = TaskRecord::new(
            Uuid::new_v4(),
            "acme".into(),
            TaskType::WasmExecution,
            serde_json::json!({"a": 1}),
            Requirements::default(),
            None,
            now,
        );
        {
            let store = Store::open(&path).await.unwrap();
            store
                .save(vec![t.clone()], vec![], vec![], vec![])
                .await
                .unwrap();
            t.status = TaskStatus::Completed;
            store
                .save(vec![t.clone()], vec![], vec![], vec![])
                .await
                .unwrap();
            store.put_blob("aa".into(), vec![1, 2, 3]).await.unwrap();
            store.put_blob("aa".into(), vec![1, 2, 3]).await.unwrap();
            store.put_blob("bb".into(), vec![4]).await.unwrap();
            store.delete_blob("bb".into()).await.unwrap();
            // A federated job's checkpoint is written, replaced, and another one deleted.
            let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
            let cps = vec![(a, Some("1".into())), (b, Some("2".into()))];
            store.save(vec![], vec![], vec![], cps).await.unwrap();
            let cps = vec![(a, Some("3".into())), (b, None)];
            store.save(vec![], vec![], vec![], cps).await.unwrap();
            assert_eq!(
                store.fl_checkpoints().await.unwrap(),
                vec![(a, "3".to_string())]
            );
        }
        let store = Store::open(&path).await.unwrap();
        assert_eq!(store.blob_size("bb".into()).await.unwrap(), None);
        assert_eq!(store.blob_size("aa".into()).await.unwrap(), Some(3));
        assert_eq!(store.task(t.id).await.unwrap(), Some(t.clone()));
        let (active, _) = store.load_active().await.unwrap();
        assert!(active.is_empty(), "completed tasks are not reloaded");
        let mine = store
            .tasks_of("acme".into(), Some(TaskStatus::Completed), 10)
            .await
            .unwrap();
        assert_eq!(mine.len(), 1);
        assert!(
            store
                .tasks_of("other".into(), None, 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(store.blob("aa".into()).await.unwrap(), Some(vec![1, 2, 3]));
        let p = ProofRecord {
            id: Uuid::new_v4(),
            task_id: t.id,
            circuit: "hash_chain".into(),
            size: 64,
            public_inputs: vec!["1".into(), "2".into(), "3".into()],
            proof: vec![9; 128],
            verified_at: chrono::DateTime::parse_from_rfc3339("2025-01-02T03:04:05Z")
                .unwrap()
                .with_timezone(&chrono::Utc),
        };
        store.put_proof(p.clone()).await.unwrap();
        assert_eq!(store.proof(p.id).await.unwrap(), Some(p));
        assert_eq!(store.proof(Uuid::new_v4()).await.unwrap(), None);
    }

    /// The schema exactly as the coordinator wrote it before versioning (`PRAGMA user_version`
    /// 0), pragmas included.
    const PRE_VERSIONING_SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
PRAGMA foreign_keys = ON;
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    submitter TEXT NOT NULL,
    status TEXT NOT NULL,
    parent TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_by_submitter ON tasks(submitter, created_at);
CREATE INDEX IF NOT EXISTS tasks_by_status ON tasks(status);
CREATE TABLE IF NOT EXISTS nodes (
    id TEXT PRIMARY KEY,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS reputation_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    node TEXT NOT NULL,
    kind TEXT NOT NULL,
    task_id TEXT NOT NULL,
    at TEXT NOT NULL,
    score REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS reputation_by_node ON reputation_events(node, seq);
CREATE TABLE IF NOT EXISTS blobs (
    sha256 TEXT PRIMARY KEY,
    bytes BLOB NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE TABLE IF NOT EXISTS proofs (
    id TEXT PRIMARY KEY,
    task_id TEXT NOT NULL,
    circuit TEXT NOT NULL,
    size INTEGER NOT NULL,
    public_inputs TEXT NOT NULL,
    proof BLOB NOT NULL,
    verified_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS proofs_by_task ON proofs(task_id);
CREATE TABLE IF NOT EXISTS fl_checkpoints (
    task_id TEXT PRIMARY KEY,
    checkpoint TEXT NOT NULL
);
";

    #[tokio::test]
    async fn a_database_from_before_versioning_opens_with_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let t = TaskRecord::new(
            Uuid::new_v4(),
            "acme".into(),
            TaskType::WasmExecution,
            serde_json::json!({"a": 1}),
            Requirements::default(),
            None,
            chrono::Utc::now(),
        );
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(PRE_VERSIONING_SCHEMA).unwrap();
            conn.execute(
                "INSERT INTO tasks (id, submitter, status, created_at, updated_at, record, parent)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    t.id.to_string(),
                    t.submitter,
                    t.status.as_str(),
                    t.created_at.to_rfc3339(),
                    t.updated_at.to_rfc3339(),
                    serde_json::to_string(&t).unwrap(),
                    None::<String>,
                ],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO blobs (sha256, bytes) VALUES ('aa', x'010203')",
                [],
            )
            .unwrap();
            let v: u32 = conn
                .pragma_query_value(None, "user_version", |r| r.get(0))
                .unwrap();
            assert_eq!(v, 0, "the old code never set a version");
        }
        let store = Store::open(&path).await.unwrap();
        assert_eq!(store.task(t.id).await.unwrap(), Some(t.clone()));
        assert_eq!(store.load_active().await.unwrap().0, vec![t.clone()]);
        assert_eq!(store.blob("aa".into()).await.unwrap(), Some(vec![1, 2, 3]));
        drop(store);
        let v: u32 = Connection::open(&path)
            .unwrap()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, MIGRATIONS.len() as u32);
        // Reopening a current database changes nothing.
        let store = Store::open(&path).await.unwrap();
        assert_eq!(store.task(t.id).await.unwrap(), Some(t));
    }

    #[tokio::test]
    async fn a_database_from_a_newer_build_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        drop(Store::open(&path).await.unwrap());
        let newer = MIGRATIONS.len() as u32 + 1;
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", newer)
            .unwrap();
        match Store::open(&path).await {
            Err(StoreError::Open(OpenError::Schema(MigrateError::TooNew { found, known }))) => {
                assert_eq!((found, known), (newer, MIGRATIONS.len() as u32));
            }
            other => panic!("expected TooNew, got {:?}", other.err()),
        }
    }
}
