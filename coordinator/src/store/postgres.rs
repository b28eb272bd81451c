//! The PostgreSQL backend: a pool of tokio-postgres connections (deadpool), shared by every task
//! of one coordinator, and one database shared by any number of coordinators.
//!
//! Ids are `uuid`, times `timestamptz`, records `json` (the exact text serde wrote: records are
//! read whole and never queried inside, and `json`, unlike `jsonb`, keeps any string a submitter
//! sent, `\u0000` included). The schema version is the one row of `schema_version`; migrations
//! run in one transaction under an advisory lock, so coordinators starting together migrate once.
//!
//! TLS is not built in: a URL with `sslmode=require` is refused at open. Reach the database over
//! loopback, a Unix socket or a private network.

use std::str::FromStr;
use std::time::Duration;

use ambient_protocol::credits::{AccountLimits, LedgerEntry};
use ambient_protocol::{ReputationEventInfo, ReputationEventKind, TaskStatus};
use ambient_service::migrate::{self, Dialect, MigrateError};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;
use tokio_postgres::config::SslMode;
use tokio_postgres::types::{Json, ToSql};
use uuid::Uuid;

use super::credits::{self, AccountRecord, AccountTotals, KeyRecord, LedgerFilter, SnapshotRows};
use super::{
    Batch, Enrolment, Fence, JoinRefused, LeaderInfo, MIGRATIONS, ProofRecord, StoreError,
    TERMINAL, TokenRecord, corrupt,
};
use crate::scheduler::{NodeRecord, TaskRecord};

/// Connections one coordinator keeps open at most. The store's callers are the REST handlers and
/// the engine's writer; PostgreSQL's default `max_connections` (100) then fits several
/// coordinators.
const POOL_SIZE: usize = 16;
/// How long a caller waits for a free connection, or for a new one to open, before the request
/// fails with [`StoreError::Pool`] instead of hanging.
const POOL_WAIT: Duration = Duration::from_secs(30);
/// The advisory lock that serialises schema migrations across coordinators (any constant that
/// no other application on the database uses: "AMBIENT\0" as a big-endian integer).
const SCHEMA_LOCK: i64 = 0x414D_4249_454E_5400;

/// Version 1: the same tables as SQLite's, in PostgreSQL's types.
pub(super) const SCHEMA_V1: &str = "
CREATE TABLE tasks (
    id UUID PRIMARY KEY,
    submitter TEXT NOT NULL,
    status TEXT NOT NULL,
    parent UUID,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    record JSON NOT NULL
);
CREATE INDEX tasks_by_submitter ON tasks(submitter, created_at);
CREATE INDEX tasks_by_status ON tasks(status);
CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    record JSON NOT NULL
);
CREATE TABLE reputation_events (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    node TEXT NOT NULL,
    kind TEXT NOT NULL,
    task_id UUID NOT NULL,
    at TIMESTAMPTZ NOT NULL,
    score DOUBLE PRECISION NOT NULL
);
CREATE INDEX reputation_by_node ON reputation_events(node, seq);
CREATE TABLE blobs (
    sha256 TEXT PRIMARY KEY,
    bytes BYTEA NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE proofs (
    id UUID PRIMARY KEY,
    task_id UUID NOT NULL,
    circuit TEXT NOT NULL,
    size BIGINT NOT NULL,
    public_inputs JSON NOT NULL,
    proof BYTEA NOT NULL,
    verified_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX proofs_by_task ON proofs(task_id);
CREATE TABLE fl_checkpoints (
    task_id UUID PRIMARY KEY,
    checkpoint TEXT NOT NULL
);
";

/// Version 2: which blob holds each circuit's Groth16 keys, and the scheduler's lease: one row,
/// the coordinator that runs the scheduler, the epoch of its grant (the fence every write of the
/// scheduler's state is checked against) and when its lease runs out, by the database's clock.
pub(super) const SCHEMA_V2: &str = "
CREATE TABLE zk_keys (
    circuit TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL
);
CREATE TABLE leader (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    holder TEXT NOT NULL,
    url TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
";

/// Version 3: enrolment tokens and enrolled nodes (times in Unix seconds, as on SQLite).
pub(super) const SCHEMA_V3: &str = "
CREATE TABLE join_tokens (
    id TEXT PRIMARY KEY,
    secret_sha256 TEXT NOT NULL,
    uses BIGINT NOT NULL,
    used BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked BOOLEAN NOT NULL,
    note TEXT
);
CREATE TABLE enrolments (
    node TEXT PRIMARY KEY,
    ed25519 TEXT NOT NULL,
    token TEXT NOT NULL,
    password_sha256 TEXT NOT NULL,
    enrolled_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX enrolments_by_key ON enrolments (ed25519);
";

/// Version 4: accounts, API keys and the ledger ([`super::credits`]).
/// The leader's intake secret ([`LeaderInfo::secret`]).
pub(super) const SCHEMA_V5: &str = "ALTER TABLE leader ADD COLUMN secret TEXT NOT NULL DEFAULT '';";

pub(super) const SCHEMA_V4: &str = "
CREATE TABLE accounts (
    name TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL,
    limits TEXT NOT NULL
);
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    key_sha256 TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked BOOLEAN NOT NULL
);
CREATE TABLE ledger (
    seq BIGSERIAL PRIMARY KEY,
    txn TEXT NOT NULL,
    at BIGINT NOT NULL,
    account TEXT NOT NULL,
    amount BIGINT NOT NULL,
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

fn token_row(r: &tokio_postgres::Row) -> Result<TokenRecord, StoreError> {
    let count = |i: usize| -> Result<u32, StoreError> {
        u32::try_from(r.try_get::<_, i64>(i)?)
            .map_err(|_| corrupt("a token count is out of range".into()))
    };
    Ok(TokenRecord {
        id: r.try_get(0)?,
        secret_sha256: r.try_get(1)?,
        uses: count(2)?,
        used: count(3)?,
        created_at: r.try_get(4)?,
        expires_at: r.try_get(5)?,
        revoked: r.try_get(6)?,
        note: r.try_get(7)?,
        operator: r.try_get(8)?,
    })
}

fn enrolment_row(r: &tokio_postgres::Row) -> Result<Enrolment, StoreError> {
    Ok(Enrolment {
        node: r.try_get(0)?,
        ed25519: r.try_get(1)?,
        token: r.try_get(2)?,
        password_sha256: r.try_get(3)?,
        enrolled_at: r.try_get(4)?,
        revoked_at: r.try_get(5)?,
    })
}

/// Handle to the pool.
#[derive(Clone)]
pub(super) struct Postgres {
    pool: Pool,
}

/// Runs statements as one pipeline: tokio-postgres sends the query of every future polled
/// together before it reads the first answer, so `n` statements cost one round trip, not `n`.
/// They still run in order, in the transaction they were made in.
async fn pipelined<F>(statements: impl IntoIterator<Item = F>) -> Result<(), StoreError>
where
    F: std::future::Future<Output = Result<u64, tokio_postgres::Error>>,
{
    futures_util::future::try_join_all(statements).await?;
    Ok(())
}

impl Postgres {
    /// Connects to `url` and migrates the schema to [`MIGRATIONS`]' last version.
    pub(super) async fn open(url: &str) -> Result<Postgres, StoreError> {
        let config = tokio_postgres::Config::from_str(url)?;
        if config.get_ssl_mode() == SslMode::Require {
            return Err(StoreError::Unsupported(
                "sslmode=require: this build talks to PostgreSQL without TLS; reach it over \
                 loopback, a Unix socket or a private network"
                    .into(),
            ));
        }
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(POOL_WAIT))
            .build()
            .expect("the pool has a runtime for its timeouts");
        let db = Postgres { pool };
        db.migrate().await?;
        Ok(db)
    }

    /// Brings the schema up to date in one transaction, holding [`SCHEMA_LOCK`] so that
    /// coordinators starting together take turns; the second finds nothing to do.
    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
            .await?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            .await?;
        let current = match tx
            .query_opt("SELECT version FROM schema_version", &[])
            .await?
        {
            Some(row) => u32::try_from(row.try_get::<_, i32>(0)?)
                .map_err(|_| corrupt("schema_version is negative".into()))?,
            None => 0,
        };
        let plan = migrate::plan(MIGRATIONS, Dialect::Postgres, current)?;
        if plan.steps.is_empty() {
            return Ok(());
        }
        for (m, sql) in &plan.steps {
            tx.batch_execute(sql)
                .await
                .map_err(|e| MigrateError::Failed {
                    version: m.version,
                    name: m.name,
                    source: Box::new(e),
                })?;
        }
        tx.execute("DELETE FROM schema_version", &[]).await?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[&(plan.to as i32)],
        )
        .await?;
        tx.commit().await?;
        tracing::info!(from = plan.from, to = plan.to, "Database schema migrated.");
        Ok(())
    }

    pub(super) async fn save(&self, batch: Batch) -> Result<(), StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        if let Some(fence) = &batch.fence {
            // FOR SHARE holds a takeover (an UPDATE of this row) until this transaction ends, so
            // a write that passes this check commits before any newer grant.
            let held = tx
                .query_opt(
                    "SELECT 1 FROM leader WHERE id = 1 AND holder = $1 AND epoch = $2 FOR SHARE",
                    &[&fence.holder, &fence.epoch],
                )
                .await?;
            if held.is_none() {
                return Err(StoreError::Deposed);
            }
        }
        // Each kind of row goes as one pipeline (see `pipelined`): a flush of many messages
        // costs a round trip per kind of row, not one per row.
        if !batch.tasks.is_empty() {
            let put = tx
                .prepare_cached(
                    "INSERT INTO tasks (id, submitter, status, created_at, updated_at, record, parent)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (id) DO UPDATE
                     SET status = $3, updated_at = $5, record = $6",
                )
                .await?;
            let rows: Vec<_> = batch
                .tasks
                .iter()
                .map(|t| (t, t.status.as_str(), Json(t)))
                .collect();
            pipelined(rows.iter().map(|(t, status, record)| {
                tx.execute_raw::<&(dyn ToSql + Sync), _, _>(
                    &put,
                    [
                        &t.id as _,
                        &t.submitter as _,
                        status as _,
                        &t.created_at as _,
                        &t.updated_at as _,
                        record as _,
                        &t.parent as _,
                    ],
                )
            }))
            .await?;
        }
        if !batch.nodes.is_empty() {
            let put = tx
                .prepare_cached(
                    "INSERT INTO nodes (id, record) VALUES ($1, $2)
                     ON CONFLICT (id) DO UPDATE SET record = $2",
                )
                .await?;
            let rows: Vec<_> = batch.nodes.iter().map(|n| (&n.id, Json(n))).collect();
            pipelined(rows.iter().map(|(id, record)| {
                tx.execute_raw::<&(dyn ToSql + Sync), _, _>(&put, [id as _, record as _])
            }))
            .await?;
        }
        if !batch.events.is_empty() {
            let put = tx
                .prepare_cached(
                    "INSERT INTO reputation_events (node, kind, task_id, at, score)
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .await?;
            let rows: Vec<_> = batch.events.iter().map(|e| (e, e.kind.as_str())).collect();
            pipelined(rows.iter().map(|(e, kind)| {
                tx.execute_raw::<&(dyn ToSql + Sync), _, _>(
                    &put,
                    [
                        &e.node as _,
                        kind as _,
                        &e.task_id as _,
                        &e.at as _,
                        &e.score as _,
                    ],
                )
            }))
            .await?;
        }
        if !batch.postings.is_empty() {
            let put = tx.prepare_cached(credits::PUT_POSTING).await?;
            let rows: Vec<_> = batch
                .postings
                .iter()
                .map(|p| {
                    (
                        p,
                        p.at.timestamp_millis(),
                        p.kind.as_str(),
                        p.task_id.map(|t| t.to_string()),
                    )
                })
                .collect();
            pipelined(rows.iter().map(|(p, at, kind, task_id)| {
                tx.execute_raw::<&(dyn ToSql + Sync), _, _>(
                    &put,
                    [
                        &p.txn as _,
                        at as _,
                        &p.account as _,
                        &p.amount as _,
                        kind as _,
                        &p.owner as _,
                        task_id as _,
                        &p.memo as _,
                    ],
                )
            }))
            .await?;
        }
        for (id, cp) in &batch.checkpoints {
            match cp {
                Some(cp) => {
                    tx.execute(
                        "INSERT INTO fl_checkpoints (task_id, checkpoint) VALUES ($1, $2)
                         ON CONFLICT (task_id) DO UPDATE SET checkpoint = $2",
                        &[id, cp],
                    )
                    .await?
                }
                None => {
                    tx.execute("DELETE FROM fl_checkpoints WHERE task_id = $1", &[id])
                        .await?
                }
            };
        }
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn fl_checkpoints(&self) -> Result<Vec<(Uuid, String)>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query("SELECT task_id, checkpoint FROM fl_checkpoints", &[])
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    pub(super) async fn load_active(
        &self,
    ) -> Result<(Vec<TaskRecord>, Vec<NodeRecord>), StoreError> {
        let client = self.pool.get().await?;
        let tasks = client
            .query(
                &format!(
                    "SELECT record FROM tasks WHERE status NOT IN {TERMINAL} ORDER BY created_at"
                ),
                &[],
            )
            .await?;
        let nodes = client
            .query("SELECT record FROM nodes ORDER BY id", &[])
            .await?;
        Ok((records(&tasks)?, records(&nodes)?))
    }

    pub(super) async fn task(&self, id: Uuid) -> Result<Option<TaskRecord>, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt("SELECT record FROM tasks WHERE id = $1", &[&id])
            .await?;
        Ok(row
            .map(|r| r.try_get::<_, Json<TaskRecord>>(0))
            .transpose()?
            .map(|Json(t)| t))
    }

    pub(super) async fn tasks_of(
        &self,
        submitter: String,
        status: Option<TaskStatus>,
        limit: u32,
    ) -> Result<Vec<TaskRecord>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT record FROM tasks
                 WHERE submitter = $1 AND parent IS NULL AND ($2::TEXT IS NULL OR status = $2)
                 ORDER BY created_at DESC LIMIT $3",
                &[&submitter, &status.map(|s| s.as_str()), &i64::from(limit)],
            )
            .await?;
        records(&rows)
    }

    pub(super) async fn put_blob(&self, sha256: String, bytes: Vec<u8>) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "INSERT INTO blobs (sha256, bytes) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&sha256, &bytes],
            )
            .await?;
        Ok(())
    }

    pub(super) async fn delete_blob(&self, sha256: String) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client
            .execute("DELETE FROM blobs WHERE sha256 = $1", &[&sha256])
            .await?;
        Ok(())
    }

    pub(super) async fn blob_size(&self, sha256: String) -> Result<Option<u64>, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT octet_length(bytes)::BIGINT FROM blobs WHERE sha256 = $1",
                &[&sha256],
            )
            .await?;
        Ok(row
            .map(|r| r.try_get::<_, i64>(0))
            .transpose()?
            .map(|n| n as u64))
    }

    pub(super) async fn blob(&self, sha256: String) -> Result<Option<Vec<u8>>, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt("SELECT bytes FROM blobs WHERE sha256 = $1", &[&sha256])
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    pub(super) async fn put_proof(&self, p: ProofRecord) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "INSERT INTO proofs (id, task_id, circuit, size, public_inputs, proof, verified_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                &[
                    &p.id,
                    &p.task_id,
                    &p.circuit,
                    &(p.size as i64),
                    &Json(&p.public_inputs),
                    &p.proof,
                    &p.verified_at,
                ],
            )
            .await?;
        Ok(())
    }

    pub(super) async fn reputation_history(
        &self,
        node: String,
        limit: u32,
    ) -> Result<Vec<ReputationEventInfo>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT kind, task_id, at, score FROM reputation_events
                 WHERE node = $1 ORDER BY seq DESC LIMIT $2",
                &[&node, &i64::from(limit)],
            )
            .await?;
        let mut out = rows
            .iter()
            .map(|r| {
                let kind: &str = r.try_get(0)?;
                Ok(ReputationEventInfo {
                    kind: ReputationEventKind::parse(kind)
                        .ok_or_else(|| corrupt(format!("reputation event kind {kind:?}")))?,
                    task_id: r.try_get(1)?,
                    at: r.try_get(2)?,
                    score: r.try_get(3)?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        out.reverse();
        Ok(out)
    }

    pub(super) async fn zk_keys(&self, circuit: String) -> Result<Option<String>, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt("SELECT sha256 FROM zk_keys WHERE circuit = $1", &[&circuit])
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    pub(super) async fn all_zk_keys(&self) -> Result<Vec<(String, String)>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query("SELECT circuit, sha256 FROM zk_keys ORDER BY circuit", &[])
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    pub(super) async fn put_zk_keys(
        &self,
        circuit: String,
        sha256: String,
    ) -> Result<String, StoreError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "INSERT INTO zk_keys (circuit, sha256) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&circuit, &sha256],
            )
            .await?;
        let row = client
            .query_one("SELECT sha256 FROM zk_keys WHERE circuit = $1", &[&circuit])
            .await?;
        Ok(row.try_get(0)?)
    }

    pub(super) async fn put_token(&self, t: TokenRecord) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client
            .execute(
                &format!(
                    "INSERT INTO join_tokens ({TOKEN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                ),
                &[
                    &t.id,
                    &t.secret_sha256,
                    &i64::from(t.uses),
                    &i64::from(t.used),
                    &t.created_at,
                    &t.expires_at,
                    &t.revoked,
                    &t.note,
                    &t.operator,
                ],
            )
            .await?;
        Ok(())
    }

    pub(super) async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                &format!("SELECT {TOKEN_COLUMNS} FROM join_tokens ORDER BY created_at DESC, id"),
                &[],
            )
            .await?;
        rows.iter().map(token_row).collect()
    }

    pub(super) async fn revoke_token(&self, id: String) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        let n = client
            .execute(
                "UPDATE join_tokens SET revoked = TRUE WHERE id = $1",
                &[&id],
            )
            .await?;
        Ok(n == 1)
    }

    pub(super) async fn enrol(
        &self,
        secret_sha256: String,
        e: Enrolment,
    ) -> Result<Result<Enrolment, JoinRefused>, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        // FOR UPDATE: two nodes redeeming the last use of a token take turns.
        let row = tx
            .query_opt(
                &format!("SELECT {TOKEN_COLUMNS} FROM join_tokens WHERE id = $1 FOR UPDATE"),
                &[&e.token],
            )
            .await?;
        let Some(row) = row else {
            return Ok(Err(JoinRefused::Unknown));
        };
        if let Err(refused) = token_row(&row)?.admits(&secret_sha256, e.enrolled_at) {
            return Ok(Err(refused));
        }
        let node = match tx
            .query_opt(
                "SELECT node FROM enrolments WHERE ed25519 = $1 AND revoked_at IS NULL",
                &[&e.ed25519],
            )
            .await?
        {
            Some(r) => r.try_get(0)?,
            None => e.node,
        };
        let e = Enrolment { node, ..e };
        tx.execute(
            &format!(
                "INSERT INTO enrolments ({ENROLMENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, NULL)
                 ON CONFLICT (node) DO UPDATE SET token = $3, password_sha256 = $4,
                 enrolled_at = $5"
            ),
            &[
                &e.node,
                &e.ed25519,
                &e.token,
                &e.password_sha256,
                &e.enrolled_at,
            ],
        )
        .await?;
        tx.execute(
            "UPDATE join_tokens SET used = used + 1 WHERE id = $1",
            &[&e.token],
        )
        .await?;
        tx.commit().await?;
        Ok(Ok(e))
    }

    pub(super) async fn enrolments(&self) -> Result<Vec<Enrolment>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                &format!("SELECT {ENROLMENT_COLUMNS} FROM enrolments ORDER BY enrolled_at, node"),
                &[],
            )
            .await?;
        rows.iter().map(enrolment_row).collect()
    }

    pub(super) async fn revoke_node(&self, node: String, now: i64) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        let n = client
            .execute(
                "UPDATE enrolments SET revoked_at = COALESCE(revoked_at, $2) WHERE node = $1",
                &[&node, &now],
            )
            .await?;
        Ok(n == 1)
    }

    pub(super) async fn lead(
        &self,
        holder: &str,
        url: &str,
        secret: &str,
        lease: Duration,
    ) -> Result<Option<Fence>, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "INSERT INTO leader (id, holder, url, epoch, expires_at, secret)
                 VALUES (1, $1, $2, 1, now() + make_interval(secs => $3), $4)
                 ON CONFLICT (id) DO UPDATE
                 SET holder = $1, url = $2, epoch = leader.epoch + 1,
                     expires_at = now() + make_interval(secs => $3), secret = $4
                 WHERE leader.expires_at < now()
                 RETURNING epoch",
                &[&holder, &url, &lease.as_secs_f64(), &secret],
            )
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?.map(|epoch| Fence {
            holder: holder.into(),
            epoch,
        }))
    }

    pub(super) async fn renew(&self, fence: &Fence, lease: Duration) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        let n = client
            .execute(
                "UPDATE leader SET expires_at = now() + make_interval(secs => $3)
                 WHERE id = 1 AND holder = $1 AND epoch = $2",
                &[&fence.holder, &fence.epoch, &lease.as_secs_f64()],
            )
            .await?;
        Ok(n == 1)
    }

    pub(super) async fn resign(&self, fence: &Fence) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "UPDATE leader SET expires_at = now() - interval '1 second'
                 WHERE id = 1 AND holder = $1 AND epoch = $2",
                &[&fence.holder, &fence.epoch],
            )
            .await?;
        Ok(())
    }

    pub(super) async fn leader(&self) -> Result<Option<LeaderInfo>, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT holder, url, expires_at > now(), secret FROM leader WHERE id = 1",
                &[],
            )
            .await?;
        row.map(|r| {
            Ok(LeaderInfo {
                holder: r.try_get(0)?,
                url: r.try_get(1)?,
                live: r.try_get(2)?,
                secret: r.try_get(3)?,
            })
        })
        .transpose()
    }

    pub(super) async fn credit_snapshot(&self) -> Result<SnapshotRows, StoreError> {
        let client = self.pool.get().await?;
        let pairs = |rows: Vec<tokio_postgres::Row>| -> Result<Vec<(String, i64)>, StoreError> {
            rows.iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect()
        };
        let balances = pairs(client.query(credits::BALANCES, &[]).await?)?;
        let spent = pairs(client.query(credits::SPENT, &[]).await?)?;
        let escrows = client
            .query(credits::OPEN_ESCROWS, &[])
            .await?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)))
            .collect::<Result<_, StoreError>>()?;
        let opened = client
            .query(credits::OPENED, &[])
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        drop(client);
        Ok(SnapshotRows {
            balances,
            spent,
            escrows,
            accounts: self.accounts(None).await?,
            opened,
        })
    }

    pub(super) async fn account_totals(&self, name: String) -> Result<AccountTotals, StoreError> {
        let client = self.pool.get().await?;
        let account = crate::credits::submitter_account(&name);
        let r = client
            .query_one(credits::TOTALS, &[&account, &name])
            .await?;
        let nodes = client
            .query(credits::OPERATED_NODES, &[&name])
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        let operated: i64 = client
            .query_one(credits::OPERATED_EARNED, &[&name])
            .await?
            .try_get(0)?;
        Ok(AccountTotals {
            balance: r.try_get(0)?,
            reserved: r.try_get(1)?,
            spent: r.try_get(2)?,
            earned: r.try_get::<_, i64>(3)? + operated,
            nodes,
        })
    }

    pub(super) async fn ledger(
        &self,
        filter: LedgerFilter,
        after: i64,
        limit: u32,
    ) -> Result<Vec<LedgerEntry>, StoreError> {
        let client = self.pool.get().await?;
        let (owner, account) = filter.binds();
        let rows = client
            .query(
                credits::PAGE,
                &[&owner, &account, &after, &i64::from(limit)],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(credits::entry(
                    r.try_get(0)?,
                    r.try_get(1)?,
                    r.try_get(2)?,
                    r.try_get(3)?,
                    r.try_get(4)?,
                    r.try_get(5)?,
                    r.try_get(6)?,
                    r.try_get(7)?,
                ))
            })
            .collect()
    }

    pub(super) async fn put_account(&self, a: AccountRecord) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        let limits = serde_json::to_string(&a.limits)?;
        let n = client
            .execute(
                "INSERT INTO accounts (name, created_at, limits) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO NOTHING",
                &[&a.name, &a.created_at, &limits],
            )
            .await?;
        Ok(n == 1)
    }

    pub(super) async fn set_limits(
        &self,
        name: String,
        limits: AccountLimits,
    ) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        let limits = serde_json::to_string(&limits)?;
        let n = client
            .execute(
                "UPDATE accounts SET limits = $2 WHERE name = $1",
                &[&name, &limits],
            )
            .await?;
        Ok(n == 1)
    }

    pub(super) async fn accounts(
        &self,
        name: Option<String>,
    ) -> Result<Vec<AccountRecord>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT name, created_at, limits FROM accounts
                 WHERE ($1::TEXT IS NULL OR name = $1) ORDER BY name",
                &[&name],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(AccountRecord {
                    name: r.try_get(0)?,
                    created_at: r.try_get(1)?,
                    limits: serde_json::from_str(r.try_get(2)?)?,
                })
            })
            .collect()
    }

    pub(super) async fn put_key(&self, k: KeyRecord) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "INSERT INTO api_keys (id, account, key_sha256, created_at, revoked)
                 VALUES ($1, $2, $3, $4, $5)",
                &[&k.id, &k.account, &k.key_sha256, &k.created_at, &k.revoked],
            )
            .await?;
        Ok(())
    }

    pub(super) async fn keys(&self, account: Option<String>) -> Result<Vec<KeyRecord>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT id, account, key_sha256, created_at, revoked FROM api_keys
                 WHERE ($1::TEXT IS NULL OR account = $1) ORDER BY created_at, id",
                &[&account],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(KeyRecord {
                    id: r.try_get(0)?,
                    account: r.try_get(1)?,
                    key_sha256: r.try_get(2)?,
                    created_at: r.try_get(3)?,
                    revoked: r.try_get(4)?,
                })
            })
            .collect()
    }

    pub(super) async fn revoke_key(&self, id: String) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        let n = client
            .execute("UPDATE api_keys SET revoked = TRUE WHERE id = $1", &[&id])
            .await?;
        Ok(n == 1)
    }

    pub(super) async fn key_account(&self, sha256: String) -> Result<Option<String>, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT account FROM api_keys WHERE key_sha256 = $1 AND NOT revoked",
                &[&sha256],
            )
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    pub(super) async fn proof(&self, id: Uuid) -> Result<Option<ProofRecord>, StoreError> {
        let client = self.pool.get().await?;
        let Some(r) = client
            .query_opt(
                "SELECT task_id, circuit, size, public_inputs, proof, verified_at
                 FROM proofs WHERE id = $1",
                &[&id],
            )
            .await?
        else {
            return Ok(None);
        };
        let Json(public_inputs) = r.try_get(3)?;
        Ok(Some(ProofRecord {
            id,
            task_id: r.try_get(0)?,
            circuit: r.try_get(1)?,
            size: r.try_get::<_, i64>(2)? as u64,
            public_inputs,
            proof: r.try_get(4)?,
            verified_at: r.try_get(5)?,
        }))
    }
}

/// Decodes the JSON `record` column (the first) of each row.
fn records<T: serde::de::DeserializeOwned>(
    rows: &[tokio_postgres::Row],
) -> Result<Vec<T>, StoreError> {
    rows.iter()
        .map(|r| Ok(r.try_get::<_, Json<T>>(0)?.0))
        .collect()
}
