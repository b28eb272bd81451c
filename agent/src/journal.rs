//! The agent's journal: every assignment it received and where it stands, in SQLite (WAL) on one
//! named thread. An assignment is written before it runs and its result before it is published,
//! so after a crash the agent re-runs what was interrupted and re-sends what was not acknowledged.
//!
//! States: `received → running → result_pending → acknowledged`, or `cancelled`.
//!
//! The thread is an [`ambient_service::SqliteActor`]; the schema is versioned ([`MIGRATIONS`],
//! applied at open), and a journal written by a newer build is refused.

use std::path::Path;

use ambient_protocol::{Assignment, TaskResult};
use ambient_service::migrate::{Dialect, Migration};
use ambient_service::sqlite::{Closed, OpenError, SqliteActor};
use rusqlite::{Connection, OptionalExtension, params};
use uuid::Uuid;

/// A journal failure.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// SQLite refused.
    #[error("journal database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A row did not decode.
    #[error("corrupt journal row: {0}")]
    Corrupt(#[from] serde_json::Error),
    /// The journal thread is gone.
    #[error("journal closed")]
    Closed,
    /// The journal could not be opened: SQLite refused the file, its thread could not start,
    /// or its schema could not be brought up to date or is newer than this build.
    #[error("journal database: {0}")]
    Open(#[from] OpenError),
}

impl From<Closed> for JournalError {
    fn from(_: Closed) -> JournalError {
        JournalError::Closed
    }
}

/// The journal's schema, version by version. Never edit a released entry; append.
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "initial",
    sql: &[(Dialect::Sqlite, SCHEMA_V1)],
}];

/// Version 1: the schema as it was before versioning, so an unversioned journal is adopted as
/// version 1 unchanged.
const SCHEMA_V1: &str = "CREATE TABLE IF NOT EXISTS jobs (
                 task_id TEXT NOT NULL,
                 attempt INTEGER NOT NULL,
                 state TEXT NOT NULL,
                 assignment TEXT NOT NULL,
                 result TEXT,
                 updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
                 PRIMARY KEY (task_id, attempt)
             );
             CREATE TABLE IF NOT EXISTS artifacts (
                 sha256 TEXT PRIMARY KEY,
                 base64 TEXT NOT NULL
             );";

/// Where an assignment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Written, not started.
    Received,
    /// Executing (or was, when the agent stopped).
    Running,
    /// Finished; the result waits for the coordinator's ack.
    ResultPending,
    /// The coordinator has the result.
    Acknowledged,
    /// Cancelled by the coordinator.
    Cancelled,
}

impl JobState {
    fn as_str(self) -> &'static str {
        match self {
            JobState::Received => "received",
            JobState::Running => "running",
            JobState::ResultPending => "result_pending",
            JobState::Acknowledged => "acknowledged",
            JobState::Cancelled => "cancelled",
        }
    }

    fn parse(s: &str) -> JobState {
        match s {
            "received" => JobState::Received,
            "running" => JobState::Running,
            "result_pending" => JobState::ResultPending,
            "acknowledged" => JobState::Acknowledged,
            _ => JobState::Cancelled,
        }
    }
}

/// Handle to the journal thread.
#[derive(Clone)]
pub struct Journal {
    db: SqliteActor,
}

impl Journal {
    /// Opens (creating) the journal at `path` on its thread, with the settings of every
    /// service database ([`ambient_service::sqlite::configure`]), and migrates its schema to
    /// [`MIGRATIONS`]' last version there; a newer journal is refused with
    /// [`JournalError::Open`] ([`OpenError::Schema`],
    /// [`ambient_service::MigrateError::TooNew`]).
    pub async fn open(path: &Path) -> Result<Journal, JournalError> {
        let db = SqliteActor::open("agent-journal", path, MIGRATIONS).await?;
        Ok(Journal { db })
    }

    async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<R, JournalError> + Send + 'static,
    ) -> Result<R, JournalError> {
        self.db.call(f).await
    }

    /// Records a new assignment. Returns `None` if it is new, or its current state and result if
    /// it was already journaled (a redelivery).
    pub async fn receive(
        &self,
        a: &Assignment,
    ) -> Result<Option<(JobState, Option<TaskResult>)>, JournalError> {
        // Artifacts are kept once per sha256, not in every job row: 64 shards share one kernel.
        let mut slim = a.clone();
        let artifact = match (slim.artifact_base64.take(), &slim.artifact_sha256) {
            (Some(b64), Some(sha)) => Some((sha.clone(), b64)),
            (inline, _) => {
                slim.artifact_base64 = inline;
                None
            }
        };
        let json = serde_json::to_string(&slim)?;
        let (task, attempt) = (a.task_id.to_string(), a.attempt);
        self.call(move |conn| {
            let existing: Option<(String, Option<String>)> = conn
                .query_row(
                    "SELECT state, result FROM jobs WHERE task_id = ?1 AND attempt = ?2",
                    params![task, attempt],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            if let Some((state, result)) = existing {
                let result = result.map(|r| serde_json::from_str(&r)).transpose()?;
                return Ok(Some((JobState::parse(&state), result)));
            }
            let tx = conn.transaction()?;
            if let Some((sha, b64)) = artifact {
                tx.execute(
                    "INSERT OR IGNORE INTO artifacts (sha256, base64) VALUES (?1, ?2)",
                    params![sha, b64],
                )?;
            }
            tx.execute(
                "INSERT INTO jobs (task_id, attempt, state, assignment) VALUES (?1, ?2, 'received', ?3)",
                params![task, attempt, json],
            )?;
            tx.commit()?;
            Ok(None)
        })
        .await
    }

    /// Moves an assignment to `state`, unless it is already acknowledged or cancelled.
    pub async fn set_state(
        &self,
        task: Uuid,
        attempt: u32,
        state: JobState,
    ) -> Result<(), JournalError> {
        self.call(move |conn| {
            conn.execute(
                "UPDATE jobs SET state = ?3, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
                 WHERE task_id = ?1 AND attempt = ?2 AND state NOT IN ('acknowledged', 'cancelled')",
                params![task.to_string(), attempt, state.as_str()],
            )?;
            Ok(())
        })
        .await
    }

    /// Records a finished run's result (state `result_pending`).
    pub async fn finish(&self, result: &TaskResult) -> Result<(), JournalError> {
        let json = serde_json::to_string(result)?;
        let (task, attempt) = (result.task_id.to_string(), result.attempt);
        self.call(move |conn| {
            conn.execute(
                "UPDATE jobs SET state = 'result_pending', result = ?3,
                        updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
                 WHERE task_id = ?1 AND attempt = ?2 AND state != 'acknowledged'",
                params![task, attempt, json],
            )?;
            Ok(())
        })
        .await
    }

    /// Results the coordinator has not acknowledged.
    pub async fn pending_results(&self) -> Result<Vec<TaskResult>, JournalError> {
        self.call(|conn| {
            json_rows(
                conn,
                "SELECT result FROM jobs WHERE state = 'result_pending' ORDER BY updated_at",
            )
        })
        .await
    }

    /// Assignments that were received or running when the agent last stopped, with their
    /// artifacts.
    pub async fn interrupted(&self) -> Result<Vec<Assignment>, JournalError> {
        self.call(|conn| {
            let mut out: Vec<Assignment> = json_rows(
                conn,
                "SELECT assignment FROM jobs WHERE state IN ('received', 'running') ORDER BY updated_at",
            )?;
            for a in &mut out {
                if a.artifact_base64.is_none()
                    && let Some(sha) = &a.artifact_sha256
                {
                    a.artifact_base64 = conn
                        .query_row(
                            "SELECT base64 FROM artifacts WHERE sha256 = ?1",
                            [sha],
                            |r| r.get(0),
                        )
                        .optional()?;
                }
            }
            Ok(out)
        })
        .await
    }

    /// Counts of jobs per state, for status output.
    pub async fn count(&self, state: JobState) -> Result<u64, JournalError> {
        self.call(move |conn| {
            let n: i64 = conn.query_row(
                "SELECT COUNT(*) FROM jobs WHERE state = ?1",
                [state.as_str()],
                |r| r.get(0),
            )?;
            Ok(n as u64)
        })
        .await
    }
}

/// Decodes the one JSON column that `sql` selects, row by row.
fn json_rows<T: serde::de::DeserializeOwned>(
    conn: &Connection,
    sql: &str,
) -> Result<Vec<T>, JournalError> {
    let mut stmt = conn.prepare(sql)?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for r in rows {
        out.push(serde_json::from_str(&r?)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ambient_protocol::{Outcome, TaskType};
    use ambient_service::MigrateError;

    fn assignment() -> Assignment {
        Assignment {
            task_id: Uuid::new_v4(),
            attempt: 1,
            task_type: TaskType::WasmExecution,
            artifact_base64: Some("AGFzbQEAAAA=".into()),
            artifact_sha256: Some("aa".into()),
            inputs: serde_json::json!({}),
            require_proof: false,
            max_execution_time_sec: 5,
            lease_deadline: chrono::Utc::now(),
        }
    }

    #[tokio::test]
    async fn lifecycle_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.db");
        let a = assignment();
        let result = TaskResult {
            task_id: a.task_id,
            attempt: 1,
            outcome: Outcome::Success {
                output: serde_json::json!(1),
                output_sha256: "x".into(),
            },
            duration_ms: 1,
            fuel_consumed: Some(1),
            macs: None,
            engine: None,
        };
        {
            let j = Journal::open(&path).await.unwrap();
            assert!(j.receive(&a).await.unwrap().is_none());
            assert_eq!(
                j.receive(&a).await.unwrap(),
                Some((JobState::Received, None)),
                "redelivery is recognised"
            );
            j.set_state(a.task_id, 1, JobState::Running).await.unwrap();
            // The artifact comes back with the assignment, though it is stored once apart.
            assert_eq!(j.interrupted().await.unwrap(), vec![a.clone()]);
            let mut second = a.clone();
            second.attempt = 2;
            assert!(j.receive(&second).await.unwrap().is_none());
            j.set_state(a.task_id, 2, JobState::Cancelled)
                .await
                .unwrap();
            j.finish(&result).await.unwrap();
        }
        let j = Journal::open(&path).await.unwrap();
        assert!(j.interrupted().await.unwrap().is_empty());
        assert_eq!(j.pending_results().await.unwrap(), vec![result.clone()]);
        j.set_state(a.task_id, 1, JobState::Acknowledged)
            .await
            .unwrap();
        assert!(j.pending_results().await.unwrap().is_empty());
        // An ack is final: a late state change does not reopen it.
        j.set_state(a.task_id, 1, JobState::Running).await.unwrap();
        assert_eq!(j.count(JobState::Acknowledged).await.unwrap(), 1);
    }

    /// The journal exactly as the agent wrote it before versioning (`PRAGMA user_version` 0).
    const PRE_VERSIONING_SCHEMA: &str = "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             CREATE TABLE IF NOT EXISTS jobs (
                 task_id TEXT NOT NULL,
                 attempt INTEGER NOT NULL,
                 state TEXT NOT NULL,
                 assignment TEXT NOT NULL,
                 result TEXT,
                 updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
                 PRIMARY KEY (task_id, attempt)
             );
             CREATE TABLE IF NOT EXISTS artifacts (
                 sha256 TEXT PRIMARY KEY,
                 base64 TEXT NOT NULL
             );";

    #[tokio::test]
    async fn a_journal_from_before_versioning_opens_with_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.db");
        let a = assignment();
        let mut slim = a.clone();
        let b64 = slim.artifact_base64.take().unwrap();
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(PRE_VERSIONING_SCHEMA).unwrap();
            conn.execute(
                "INSERT OR IGNORE INTO artifacts (sha256, base64) VALUES (?1, ?2)",
                params![a.artifact_sha256.clone().unwrap(), b64],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO jobs (task_id, attempt, state, assignment) VALUES (?1, ?2, 'running', ?3)",
                params![
                    a.task_id.to_string(),
                    a.attempt,
                    serde_json::to_string(&slim).unwrap()
                ],
            )
            .unwrap();
        }
        let j = Journal::open(&path).await.unwrap();
        assert_eq!(j.interrupted().await.unwrap(), vec![a.clone()]);
        assert_eq!(
            j.receive(&a).await.unwrap(),
            Some((JobState::Running, None)),
            "the old row is the same job"
        );
        drop(j);
        let v: u32 = Connection::open(&path)
            .unwrap()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, MIGRATIONS.len() as u32);
    }

    #[tokio::test]
    async fn a_journal_from_a_newer_build_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.db");
        drop(Journal::open(&path).await.unwrap());
        let newer = MIGRATIONS.len() as u32 + 1;
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", newer)
            .unwrap();
        match Journal::open(&path).await {
            Err(JournalError::Open(OpenError::Schema(MigrateError::TooNew { found, known }))) => {
                assert_eq!((found, known), (newer, MIGRATIONS.len() as u32));
            }
            other => panic!("expected TooNew, got {:?}", other.err()),
        }
    }
}
