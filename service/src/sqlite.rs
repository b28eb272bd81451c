//! One thread owns a SQLite connection; async code sends it closures.
//!
//! rusqlite calls block, so they never run on an async worker (the mini-redis `db.rs` and
//! rumqttd-router shape): [`SqliteActor::spawn`] moves a `Connection` onto a named thread, and
//! [`SqliteActor::call`] sends a closure over an unbounded channel and awaits its answer on a
//! oneshot. Closures run one at a time, in the order sent, so a closure is a transaction
//! boundary the caller controls. The thread ends, closing the connection, when the last handle
//! is dropped and the queue is empty.

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

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
    /// Starts a thread named `thread_name` that owns `conn` (open it, set its pragmas and
    /// migrate it first: see [`crate::migrate`]).
    pub fn spawn(thread_name: &str, mut conn: Connection) -> std::io::Result<SqliteActor> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        std::thread::Builder::new()
            .name(thread_name.to_owned())
            .spawn(move || {
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
