//! One shutdown pattern for every service: a [`CancellationToken`] that says "stop" and a
//! [`TaskTracker`] that knows who has not stopped yet.
//!
//! This is the shape of mini-redis's `Shutdown` and Vector's `ShutdownSignal`, on tokio-util's
//! primitives: every long-lived task is spawned through [`Shutdown::spawn`] and `select!`s
//! between its work and [`Shutdown::cancelled`]; the owner calls [`Shutdown::trigger`], then
//! [`Shutdown::drain`], which waits for every tracked task with a deadline. Clones share the
//! token and the tracker, so a clone is what a task keeps.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tokio_util::task::TaskTracker;

/// Tracked tasks were still running when [`Shutdown::drain`]'s deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{still_running} task(s) still running after {waited:?}")]
pub struct DrainTimeout {
    /// How many tracked tasks had not finished.
    pub still_running: usize,
    /// How long `drain` waited.
    pub waited: Duration,
}

/// A service's stop signal and the set of tasks that must finish before it exits. Cheap to
/// clone; clones share both.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Shutdown {
    /// A fresh, untriggered shutdown with no tasks.
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// A shutdown that triggers when `token` is cancelled (or by [`Shutdown::trigger`], which
    /// cancels `token` too), with its own empty task set. For a `start(cfg, token)` entry point
    /// whose caller holds the token.
    pub fn with_token(token: CancellationToken) -> Shutdown {
        Shutdown {
            token,
            tracker: TaskTracker::new(),
        }
    }

    /// A shutdown for a subsystem: triggered when this one is, or on its own by its
    /// [`Shutdown::trigger`] (which does not stop the parent). Its tasks are tracked apart.
    pub fn child(&self) -> Shutdown {
        Shutdown::with_token(self.token.child_token())
    }

    /// The token, for APIs that take one (e.g. axum's graceful shutdown via `cancelled_owned`).
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// The tracker, for APIs that take one.
    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    /// Spawns `task` on the current runtime as a tracked task: [`Shutdown::drain`] waits for it.
    /// The task itself must watch [`Shutdown::cancelled`] to stop.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(task)
    }

    /// Runs blocking `f` on tokio's blocking pool as a tracked task.
    pub fn spawn_blocking<F, T>(&self, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.tracker.spawn_blocking(f)
    }

    /// Tells every task to stop. Idempotent.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// Whether [`Shutdown::trigger`] was called (here, on a clone or on a parent).
    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Completes once the shutdown is triggered (at once if it already was). Cancel-safe, so it
    /// belongs in a `select!` beside the task's work.
    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.token.cancelled()
    }

    /// Waits for `signal`, then triggers. Returns early, without waiting further, if the
    /// shutdown is triggered some other way first.
    pub async fn trigger_on(&self, signal: impl Future<Output = ()>) {
        tokio::select! {
            _ = signal => self.trigger(),
            _ = self.cancelled() => {}
        }
    }

    /// Stops accepting new tracked tasks and waits up to `timeout` for the running ones to
    /// finish. It does not trigger: call [`Shutdown::trigger`] first, or tasks that watch the
    /// token never end. Tasks still running at the deadline keep running; the error counts them.
    pub async fn drain(&self, timeout: Duration) -> Result<(), DrainTimeout> {
        self.tracker.close();
        match tokio::time::timeout(timeout, self.tracker.wait()).await {
            Ok(()) => Ok(()),
            Err(_) => Err(DrainTimeout {
                still_running: self.tracker.len(),
                waited: timeout,
            }),
        }
    }

    /// Stops accepting new tracked tasks and waits, without a deadline, for the running ones.
    pub async fn wait(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn clones_share_the_token_and_the_tracker() {
        let a = Shutdown::new();
        let b = a.clone();
        let task = b.clone();
        b.spawn(async move { task.cancelled().await });
        assert_eq!(a.tracker().len(), 1);
        assert!(!b.is_triggered());
        a.trigger();
        assert!(b.is_triggered());
        a.drain(Duration::from_secs(5)).await.unwrap();
        assert!(a.tracker().is_empty());
    }

    #[tokio::test]
    async fn a_child_stops_with_its_parent_but_not_the_reverse() {
        let parent = Shutdown::new();
        let child = parent.child();
        child.trigger();
        assert!(!parent.is_triggered());
        let other = parent.child();
        parent.trigger();
        assert!(other.is_triggered());
    }

    #[tokio::test(start_paused = true)]
    async fn drain_reports_tasks_that_ignore_the_token() {
        let s = Shutdown::new();
        s.spawn(std::future::pending::<()>());
        s.trigger();
        let err = s.drain(Duration::from_secs(3)).await.unwrap_err();
        assert_eq!(
            err,
            DrainTimeout {
                still_running: 1,
                waited: Duration::from_secs(3)
            }
        );
    }
}
