//! The SQLite backend: one file (WAL), owned by one named thread that takes commands over a
//! channel ([`ambient_service::SqliteActor`]), so no rusqlite call ever runs on an async worker.
//! Times are RFC 3339 text, ids text, records JSON text.

use std::path::Path;

use ambient_protocol::credits::{AccountLimits, LedgerEntry};
use ambient_protocol::{ReputationEventInfo, ReputationEventKind, TaskStatus};
use ambient_service::sqlite::SqliteActor;
use rusqlite::{Connection, OptionalExtension, params};
use uuid::Uuid;

use super::credits::{self, AccountRecord, AccountTotals, KeyRecord, LedgerFilter, SnapshotRows};
use super::{
    Batch, Enrolment, JoinRefused, MIGRATIONS, ProofRecord, StoreError, TERMINAL, TokenRecord,
    corrupt,
};
use crate::scheduler::{NodeRecord, TaskRecord};

/// Handle to the store thread.
#[derive(Clone)]
pub(super) struct Sqlite {
    db: SqliteActor,
}

/// Version 1: the schema as it was before versioning, so an unversioned database is adopted as
/// version 1 unchanged.
pub(super) const SCHEMA_V1: &str = "
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

/// Version 2: which blob holds each circuit's Groth16 keys. (The scheduler's leader lease is
/// PostgreSQL's alone: one coordinator uses a SQLite file.)
pub(super) const SCHEMA_V2: &str = "
CREATE TABLE zk_keys (
    circuit TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL
);
";

/// Version 3: enrolment tokens and enrolled nodes (times in Unix seconds).
pub(super) const SCHEMA_V3: &str = "
CREATE TABLE join_tokens (
    id TEXT PRIMARY KEY,
    secret_sha256 TEXT NOT NULL,
    uses INTEGER NOT NULL,
    used INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked INTEGER NOT NULL,
    note TEXT
);
CREATE TABLE enrolments (
    node TEXT PRIMARY KEY,
    ed25519 TEXT NOT NULL,
    token TEXT NOT NULL,
    password_sha256 TEXT NOT NULL,
    enrolled_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE INDEX enrolments_by_key ON enrolments (ed25519);
";

/// Version 4: accounts, API keys and the ledger ([`super::credits`]).
pub(super) const SCHEMA_V4: &str = "
CREATE TABLE accounts (
    name TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL,
    limits TEXT NOT NULL
);
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    key_sha256 TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    revoked INTEGER NOT NULL
);
CREATE TABLE ledger (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    txn TEXT NOT NULL,
    at INTEGER NOT NULL,
    account TEXT NOT NULL,
    amount INTEGER NOT NULL,
    kind TEXT NOT NULL,
    owner TEXT NOT NULL,
    task_id TEXT,
    memo TEXT NOT NULL,
    UNIQUE (txn, account, kind)
);
CREATE INDEX ledger_by_owner ON ledger (owner, seq);
CREATE INDEX ledger_by_account ON ledger (account, seq);
ALTER TABLE join_tokens ADD COLUMN operator TEXT;
";

const TOKEN_COLUMNS: &str =
    "id, secret_sha256, uses, used, created_at, expires_at, revoked, note, operator";
const ENROLMENT_COLUMNS: &str = "node, ed25519, token, password_sha256, enrolled_at, revoked_at";

fn token_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRecord> {
    Ok(TokenRecord {
        id: r.get(0)?,
        secret_sha256: r.get(1)?,
        uses: r.get(2)?,
        used: r.get(3)?,
        created_at: r.get(4)?,
        expires_at: r.get(5)?,
        revoked: r.get(6)?,
        note: r.get(7)?,
        operator: r.get(8)?,
    })
}

fn enrolment_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Enrolment> {
    Ok(Enrolment {
        node: r.get(0)?,
        ed25519: r.get(1)?,
        token: r.get(2)?,
        password_sha256: r.get(3)?,
        enrolled_at: r.get(4)?,
        revoked_at: r.get(5)?,
    })
}

impl Sqlite {
    /// Opens (creating if needed) the database at `path` on its thread, with the settings of
    /// every service database ([`ambient_service::sqlite::configure`]), and migrates its schema
    /// to [`MIGRATIONS`]' last version there; a newer database is refused with
    /// [`StoreError::Open`] ([`ambient_service::sqlite::OpenError::Schema`]).
    pub(super) async fn open(path: &Path) -> Result<Sqlite, StoreError> {
        let db = SqliteActor::open("coordinator-store", path, MIGRATIONS).await?;
        Ok(Sqlite { db })
    }

    /// Runs `f` on the store thread and returns its answer.
    async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        self.db.call(f).await
    }

    pub(super) async fn save(&self, batch: Batch) -> Result<(), StoreError> {
        // One coordinator writes a SQLite file: no fence to check.
        let Batch {
            tasks,
            nodes,
            events,
            checkpoints,
            postings,
            fence: _,
        } = batch;
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
                let mut put_posting = tx.prepare_cached(credits::PUT_POSTING)?;
                for p in &postings {
                    put_posting.execute(params![
                        p.txn,
                        p.at.timestamp_millis(),
                        p.account,
                        p.amount,
                        p.kind.as_str(),
                        p.owner,
                        p.task_id.map(|t| t.to_string()),
                        p.memo,
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

    pub(super) async fn fl_checkpoints(&self) -> Result<Vec<(Uuid, String)>, StoreError> {
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

    pub(super) async fn load_active(
        &self,
    ) -> Result<(Vec<TaskRecord>, Vec<NodeRecord>), StoreError> {
        self.call(|conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT record FROM tasks WHERE status NOT IN {TERMINAL} ORDER BY created_at"
            ))?;
            let tasks = decode_rows::<TaskRecord>(&mut stmt, [])?;
            let mut stmt = conn.prepare("SELECT record FROM nodes ORDER BY id")?;
            let nodes = decode_rows::<NodeRecord>(&mut stmt, [])?;
            Ok((tasks, nodes))
        })
        .await
    }

    pub(super) async fn task(&self, id: Uuid) -> Result<Option<TaskRecord>, StoreError> {
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

    pub(super) async fn tasks_of(
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

    pub(super) async fn put_blob(&self, sha256: String, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.call(move |conn| {
            conn.execute(
                "INSERT OR IGNORE INTO blobs (sha256, bytes) VALUES (?1, ?2)",
                params![sha256, bytes],
            )?;
            Ok(())
        })
        .await
    }

    pub(super) async fn delete_blob(&self, sha256: String) -> Result<(), StoreError> {
        self.call(move |conn| {
            conn.execute("DELETE FROM blobs WHERE sha256 = ?1", [sha256])?;
            Ok(())
        })
        .await
    }

    pub(super) async fn blob_size(&self, sha256: String) -> Result<Option<u64>, StoreError> {
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

    pub(super) async fn blob(&self, sha256: String) -> Result<Option<Vec<u8>>, StoreError> {
        self.call(move |conn| {
            Ok(conn
                .query_row("SELECT bytes FROM blobs WHERE sha256 = ?1", [sha256], |r| {
                    r.get(0)
                })
                .optional()?)
        })
        .await
    }

    pub(super) async fn put_proof(&self, p: ProofRecord) -> Result<(), StoreError> {
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

    pub(super) async fn reputation_history(
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
                out.push(ReputationEventInfo {
                    kind: ReputationEventKind::parse(&kind)
                        .ok_or_else(|| corrupt(format!("reputation event kind {kind:?}")))?,
                    task_id: parse_uuid(&task_id)?,
                    at: parse_time(&at)?,
                    score,
                });
            }
            out.reverse();
            Ok(out)
        })
        .await
    }

    pub(super) async fn zk_keys(&self, circuit: String) -> Result<Option<String>, StoreError> {
        self.call(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT sha256 FROM zk_keys WHERE circuit = ?1",
                    [circuit],
                    |r| r.get(0),
                )
                .optional()?)
        })
        .await
    }

    pub(super) async fn all_zk_keys(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.call(|conn| {
            let mut q = conn.prepare("SELECT circuit, sha256 FROM zk_keys ORDER BY circuit")?;
            let rows = q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    pub(super) async fn put_zk_keys(
        &self,
        circuit: String,
        sha256: String,
    ) -> Result<String, StoreError> {
        self.call(move |conn| {
            conn.execute(
                "INSERT OR IGNORE INTO zk_keys (circuit, sha256) VALUES (?1, ?2)",
                params![circuit, sha256],
            )?;
            Ok(conn.query_row(
                "SELECT sha256 FROM zk_keys WHERE circuit = ?1",
                [circuit],
                |r| r.get(0),
            )?)
        })
        .await
    }

    pub(super) async fn put_token(&self, t: TokenRecord) -> Result<(), StoreError> {
        self.call(move |conn| {
            conn.execute(
                &format!("INSERT INTO join_tokens ({TOKEN_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
                params![t.id, t.secret_sha256, t.uses, t.used, t.created_at, t.expires_at, t.revoked, t.note, t.operator],
            )?;
            Ok(())
        })
        .await
    }

    pub(super) async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.call(|conn| {
            let mut q = conn.prepare(&format!(
                "SELECT {TOKEN_COLUMNS} FROM join_tokens ORDER BY created_at DESC, id"
            ))?;
            let rows = q.query_map([], token_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    pub(super) async fn revoke_token(&self, id: String) -> Result<bool, StoreError> {
        self.call(move |conn| {
            Ok(conn.execute("UPDATE join_tokens SET revoked = 1 WHERE id = ?1", [id])? == 1)
        })
        .await
    }

    pub(super) async fn enrol(
        &self,
        secret_sha256: String,
        e: Enrolment,
    ) -> Result<Result<Enrolment, JoinRefused>, StoreError> {
        self.call(move |conn| {
            let tx = conn.transaction()?;
            let token = tx
                .query_row(
                    &format!("SELECT {TOKEN_COLUMNS} FROM join_tokens WHERE id = ?1"),
                    [&e.token],
                    token_row,
                )
                .optional()?;
            let Some(token) = token else {
                return Ok(Err(JoinRefused::Unknown));
            };
            if let Err(refused) = token.admits(&secret_sha256, e.enrolled_at) {
                return Ok(Err(refused));
            }
            let node: String = tx
                .query_row(
                    "SELECT node FROM enrolments WHERE ed25519 = ?1 AND revoked_at IS NULL",
                    [&e.ed25519],
                    |r| r.get(0),
                )
                .optional()?
                .unwrap_or(e.node);
            let e = Enrolment { node, ..e };
            tx.execute(
                &format!(
                    "INSERT INTO enrolments ({ENROLMENT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, NULL)
                     ON CONFLICT(node) DO UPDATE SET token = ?3, password_sha256 = ?4,
                     enrolled_at = ?5"
                ),
                params![e.node, e.ed25519, e.token, e.password_sha256, e.enrolled_at],
            )?;
            tx.execute(
                "UPDATE join_tokens SET used = used + 1 WHERE id = ?1",
                [&e.token],
            )?;
            tx.commit()?;
            Ok(Ok(e))
        })
        .await
    }

    pub(super) async fn enrolments(&self) -> Result<Vec<Enrolment>, StoreError> {
        self.call(|conn| {
            let mut q = conn.prepare(&format!(
                "SELECT {ENROLMENT_COLUMNS} FROM enrolments ORDER BY enrolled_at, node"
            ))?;
            let rows = q.query_map([], enrolment_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    pub(super) async fn revoke_node(&self, node: String, now: i64) -> Result<bool, StoreError> {
        self.call(move |conn| {
            Ok(conn.execute(
                "UPDATE enrolments SET revoked_at = COALESCE(revoked_at, ?2) WHERE node = ?1",
                params![node, now],
            )? == 1)
        })
        .await
    }

    pub(super) async fn credit_snapshot(&self) -> Result<SnapshotRows, StoreError> {
        self.call(|conn| {
            let pairs = |sql: &str| -> Result<Vec<(String, i64)>, StoreError> {
                let mut q = conn.prepare(sql)?;
                let rows = q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
                Ok(rows.collect::<Result<_, _>>()?)
            };
            let balances = pairs(credits::BALANCES)?;
            let spent = pairs(credits::SPENT)?;
            let mut q = conn.prepare(credits::OPEN_ESCROWS)?;
            let escrows = q
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect::<Result<_, _>>()?;
            let mut q = conn.prepare(credits::OPENED)?;
            let opened = q.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
            Ok(SnapshotRows {
                balances,
                spent,
                escrows,
                accounts: accounts(conn, None)?,
                opened,
            })
        })
        .await
    }

    pub(super) async fn account_totals(&self, name: String) -> Result<AccountTotals, StoreError> {
        self.call(move |conn| {
            let account = crate::credits::submitter_account(&name);
            let mut totals = conn.query_row(credits::TOTALS, params![account, name], |r| {
                Ok(AccountTotals {
                    balance: r.get(0)?,
                    reserved: r.get(1)?,
                    spent: r.get(2)?,
                    earned: r.get(3)?,
                    nodes: Vec::new(),
                })
            })?;
            let mut q = conn.prepare_cached(credits::OPERATED_NODES)?;
            totals.nodes = q
                .query_map([&name], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let operated: i64 = conn.query_row(credits::OPERATED_EARNED, [&name], |r| r.get(0))?;
            totals.earned += operated;
            Ok(totals)
        })
        .await
    }

    pub(super) async fn ledger(
        &self,
        filter: LedgerFilter,
        after: i64,
        limit: u32,
    ) -> Result<Vec<LedgerEntry>, StoreError> {
        self.call(move |conn| {
            let (owner, account) = filter.binds();
            let mut q = conn.prepare_cached(credits::PAGE)?;
            let rows = q.query_map(params![owner, account, after, limit], |r| {
                Ok(credits::entry(
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                ))
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    pub(super) async fn put_account(&self, a: AccountRecord) -> Result<bool, StoreError> {
        self.call(move |conn| {
            let limits = serde_json::to_string(&a.limits)?;
            Ok(conn.execute(
                "INSERT INTO accounts (name, created_at, limits) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO NOTHING",
                params![a.name, a.created_at, limits],
            )? == 1)
        })
        .await
    }

    pub(super) async fn set_limits(
        &self,
        name: String,
        limits: AccountLimits,
    ) -> Result<bool, StoreError> {
        self.call(move |conn| {
            let limits = serde_json::to_string(&limits)?;
            Ok(conn.execute(
                "UPDATE accounts SET limits = ?2 WHERE name = ?1",
                params![name, limits],
            )? == 1)
        })
        .await
    }

    pub(super) async fn accounts(
        &self,
        name: Option<String>,
    ) -> Result<Vec<AccountRecord>, StoreError> {
        self.call(move |conn| accounts(conn, name)).await
    }

    pub(super) async fn put_key(&self, k: KeyRecord) -> Result<(), StoreError> {
        self.call(move |conn| {
            conn.execute(
                "INSERT INTO api_keys (id, account, key_sha256, created_at, revoked)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![k.id, k.account, k.key_sha256, k.created_at, k.revoked],
            )?;
            Ok(())
        })
        .await
    }

    pub(super) async fn keys(&self, account: Option<String>) -> Result<Vec<KeyRecord>, StoreError> {
        self.call(move |conn| {
            let mut q = conn.prepare(
                "SELECT id, account, key_sha256, created_at, revoked FROM api_keys
                 WHERE (?1 IS NULL OR account = ?1) ORDER BY created_at, id",
            )?;
            let rows = q.query_map([account], |r| {
                Ok(KeyRecord {
                    id: r.get(0)?,
                    account: r.get(1)?,
                    key_sha256: r.get(2)?,
                    created_at: r.get(3)?,
                    revoked: r.get(4)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    pub(super) async fn revoke_key(&self, id: String) -> Result<bool, StoreError> {
        self.call(move |conn| {
            Ok(conn.execute("UPDATE api_keys SET revoked = 1 WHERE id = ?1", [id])? == 1)
        })
        .await
    }

    pub(super) async fn key_account(&self, sha256: String) -> Result<Option<String>, StoreError> {
        self.call(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT account FROM api_keys WHERE key_sha256 = ?1 AND revoked = 0",
                    [sha256],
                    |r| r.get(0),
                )
                .optional()?)
        })
        .await
    }

    pub(super) async fn proof(&self, id: Uuid) -> Result<Option<ProofRecord>, StoreError> {
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
            Ok(Some(ProofRecord {
                id,
                task_id: parse_uuid(&task_id)?,
                circuit,
                size: size as u64,
                public_inputs: serde_json::from_str(&public)?,
                proof,
                verified_at: parse_time(&at)?,
            }))
        })
        .await
    }
}

fn accounts(conn: &Connection, name: Option<String>) -> Result<Vec<AccountRecord>, StoreError> {
    let mut q = conn.prepare(
        "SELECT name, created_at, limits FROM accounts WHERE (?1 IS NULL OR name = ?1) ORDER BY name",
    )?;
    let rows = q.query_map([name], |r| {
        Ok((r.get::<_, String>(0)?, r.get(1)?, r.get::<_, String>(2)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (name, created_at, limits) = row?;
        out.push(AccountRecord {
            name,
            created_at,
            limits: serde_json::from_str(&limits)?,
        });
    }
    Ok(out)
}

fn parse_uuid(s: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(s).map_err(|_| corrupt(format!("{s:?} is not a uuid")))
}

fn parse_time(s: &str) -> Result<chrono::DateTime<chrono::Utc>, StoreError> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|_| corrupt(format!("{s:?} is not an RFC 3339 time")))
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
    use crate::store::{Location, Store};
    use ambient_protocol::{Requirements, TaskType};
    use ambient_service::MigrateError;
    use ambient_service::sqlite::OpenError;

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
        let store = Store::open(&Location::File(path.clone())).await.unwrap();
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
        let store = Store::open(&Location::File(path.clone())).await.unwrap();
        assert_eq!(store.task(t.id).await.unwrap(), Some(t));
    }

    #[tokio::test]
    async fn a_database_from_a_newer_build_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        drop(Store::open(&Location::File(path.clone())).await.unwrap());
        let newer = MIGRATIONS.len() as u32 + 1;
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", newer)
            .unwrap();
        match Store::open(&Location::File(path.clone())).await {
            Err(StoreError::Open(OpenError::Schema(MigrateError::TooNew { found, known }))) => {
                assert_eq!((found, known), (newer, MIGRATIONS.len() as u32));
            }
            other => panic!("expected TooNew, got {:?}", other.err()),
        }
    }
}
