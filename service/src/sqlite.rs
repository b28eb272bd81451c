//! One thread owns a SQLite connection; async code sends it closures.
//!
//! rusqlite calls block, so they never run on an async worker (the mini-redis `db.rs` and
//! rumqttd-router shape): [`SqliteActor::open`] starts a named thread that opens the database,
//! sets it up ([`configure`]) and migrates it, all on that thread, and
//! [`SqliteActor::call`] sends a closure over an unbounded channel and awaits its answer on a
//! oneshot. Closures run one at a time, in the order sent, so a closure is a transaction
//! boundary the caller controls. The thread ends, closing the connection, when the last handle
//! is dropped and the queue is empty.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use crate::migrate::{self, MigrateError, Migration};
use crate::private;

/// The settings of every service database, set at each open: write-ahead logging (readers do
/// not block the writer), `synchronous = NORMAL` (safe under WAL: a power loss may undo the last
/// commits but never corrupts the file) and enforced foreign keys. Set outside the migrations: SQLite cannot
/// switch to WAL inside a transaction.
pub const PRAGMAS: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
PRAGMA foreign_keys = ON;
";

/// How long a statement waits for a lock another connection holds (another process on the same
/// file, an operator's `sqlite3`, a migration at start) before it fails with `SQLITE_BUSY`.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Sets up a freshly opened connection: [`PRAGMAS`] and [`BUSY_TIMEOUT`]. The one place both
/// services' databases get their settings.
pub fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.execute_batch(PRAGMAS)
}

/// Why [`SqliteActor::open`] failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// SQLite could not open or set up the file.
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The schema could not be brought up to date, or is newer than this build.
    #[error("{0}")]
    Schema(#[from] MigrateError),
    /// The file could not be created or made private to its owner ([`crate::private`]).
    #[error(
        "cannot create {} or make it readable by its owner only: {source}",
        path.display()
    )]
    Private {
        /// The database file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The thread could not start.
    #[error("cannot start the SQLite thread: {0}")]
    Spawn(#[from] std::io::Error),
    /// The thread stopped while opening (it panicked).
    #[error("{0}")]
    Closed(#[from] Closed),
}

/// The actor's thread has stopped (its service is shutting down, or a closure panicked).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the SQLite thread has stopped")]
pub struct Closed;

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// Handle to the thread that owns a connection. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SqliteActor {
    tx: mpsc::UnboundedSender<Job>,
}

impl SqliteActor {
    /// Starts a thread named `thread_name` that opens (creating if needed, readable by its owner
    /// only: [`private::restrict_database`]) the database at `path`, sets it up with [`configure`], brings its schema to the end of `migrations`
    /// ([`migrate::migrate`]) and then serves [`SqliteActor::call`]s. Answers once the database
    /// is open and migrated, so no file I/O or migration runs on the caller's async worker.
    pub async fn open(
        thread_name: &str,
        path: &Path,
        migrations: &'static [Migration],
    ) -> Result<SqliteActor, OpenError> {
        let path = path.to_owned();
        let (opened, rx_opened) = oneshot::channel();
        let actor = SqliteActor::start(thread_name, move || {
            let conn = private::restrict_database(&path)
                .map_err(|source| OpenError::Private {
                    path: path.clone(),
                    source,
                })
                .and_then(|()| Ok(Connection::open(&path)?))
                .and_then(|mut conn| {
                    configure(&conn)?;
                    migrate::migrate(&mut conn, migrations)?;
                    Ok(conn)
                });
            match conn {
                Ok(conn) => {
                    let _ = opened.send(Ok(()));
                    Some(conn)
                }
                Err(e) => {
                    let _ = opened.send(Err(e));
                    None
                }
            }
        })?;
        rx_opened.await.map_err(|_| Closed)??;
        Ok(actor)
    }

    /// Starts a thread named `thread_name` that owns `conn`, already opened, set up and
    /// migrated by the caller. Prefer [`SqliteActor::open`], which does all that on the thread.
    pub fn spawn(thread_name: &str, conn: Connection) -> std::io::Result<SqliteActor> {
        SqliteActor::start(thread_name, move || Some(conn))
    }

    /// Starts the thread: `open` makes its connection there (`None`: nothing to serve, the
    /// thread ends), then it runs the jobs sent until every handle is gone.
    fn start(
        thread_name: &str,
        open: impl FnOnce() -> Option<Connection> + Send + 'static,
    ) -> std::io::Result<SqliteActor> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        std::thread::Builder::new()
            .name(thread_name.to_owned())
            .spawn(move || {
                let Some(mut conn) = open() else {
                    return;
                };
                while let Some(job) = rx.blocking_recv() {
                    job(&mut conn);
                }
            })?;
        Ok(SqliteActor { tx })
    }

    /// Runs `f` on the connection's thread and returns its answer. The error type is the
    /// caller's, which says what a stopped thread means to it through `From<Closed>`.
    pub async fn call<R, E>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<R, E> + Send + 'static,
    ) -> Result<R, E>
    where
        R: Send + 'static,
        E: From<Closed> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Box::new(move |conn| {
                let _ = reply.send(f(conn));
            }))
            .map_err(|_| Closed)?;
        rx.await.map_err(|_| Closed)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    enum E {
        Sql,
        Closed,
    }
    impl From<Closed> for E {
        fn from(_: Closed) -> E {
            E::Closed
        }
    }

    #[tokio::test]
    async fn closures_run_in_order_on_the_named_thread() {
        let actor =
            SqliteActor::spawn("sqlite-test", Connection::open_in_memory().unwrap()).unwrap();
        actor
            .call(|c| {
                c.execute_batch("CREATE TABLE t (x INTEGER)")
                    .map_err(|_| E::Sql)
            })
            .await
            .unwrap();
        for i in 0..3 {
            actor
                .call(move |c| {
                    c.execute("INSERT INTO t VALUES (?1)", [i])
                        .map_err(|_| E::Sql)
                })
                .await
                .unwrap();
        }
        let (name, xs) = actor
            .call(|c| {
                let name = std::thread::current().name().map(str::to_owned);
                let mut stmt = c
                    .prepare("SELECT x FROM t ORDER BY rowid")
                    .map_err(|_| E::Sql)?;
                let xs = stmt
                    .query_map([], |r| r.get::<_, i64>(0))
                    .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                    .map_err(|_| E::Sql)?;
                Ok::<_, E>((name, xs))
            })
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("sqlite-test"));
        assert_eq!(xs, vec![0, 1, 2]);
    }

    const NOTES: &[Migration] = &[Migration {
        version: 1,
        name: "notes",
        sql: &[(
            crate::Dialect::Sqlite,
            "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL);",
        )],
    }];

    #[tokio::test]
    async fn open_sets_up_and_migrates_on_the_thread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.db");
        let actor = SqliteActor::open("sqlite-open", &path, NOTES)
            .await
            .unwrap();
        let got = actor
            .call(|c| {
                let name = std::thread::current().name().map(str::to_owned);
                let mode: String = c.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
                let n = |p: &str| c.pragma_query_value(None, p, |r| r.get::<_, i64>(0));
                let pragmas = (
                    mode,
                    [
                        n("synchronous")?,
                        n("foreign_keys")?,
                        n("busy_timeout")?,
                        n("user_version")?,
                    ],
                );
                c.execute("INSERT INTO notes (body) VALUES ('x')", [])?;
                Ok::<_, OpenError>((name, pragmas))
            })
            .await
            .unwrap();
        assert_eq!(got.0.as_deref(), Some("sqlite-open"));
        // synchronous = NORMAL is 1; the busy timeout is in milliseconds.
        let ms = BUSY_TIMEOUT.as_millis() as i64;
        assert_eq!(got.1, ("wal".to_string(), [1, 1, ms, 1]));
    }

    #[tokio::test]
    async fn open_refuses_a_newer_schema_and_a_bad_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.db");
        drop(
            SqliteActor::open("sqlite-open", &path, NOTES)
                .await
                .unwrap(),
        );
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 2)
            .unwrap();
        let r = SqliteActor::open("sqlite-open", &path, NOTES).await;
        assert!(
            matches!(
                r,
                Err(OpenError::Schema(MigrateError::TooNew {
                    found: 2,
                    known: 1
                }))
            ),
            "{r:?}"
        );
        let r = SqliteActor::open("sqlite-open", &dir.path().join("no/such/dir.db"), NOTES).await;
        assert!(matches!(r, Err(OpenError::Private { .. })), "{r:?}");
    }

    #[tokio::test]
    async fn a_dead_thread_answers_closed() {
        let actor =
            SqliteActor::spawn("sqlite-panic", Connection::open_in_memory().unwrap()).unwrap();
        let r: Result<(), E> = actor.call(|_| panic!("boom")).await;
        assert!(matches!(r, Err(E::Closed)), "{r:?}");
        let r: Result<(), E> = actor.call(|_| Ok(())).await;
        assert!(matches!(r, Err(E::Closed)), "{r:?}");
    }
}
