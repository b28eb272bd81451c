//! `GET /api/v1/events`: the caller's task changes as server-sent events (`text/event-stream`).
//!
//! # Why the store is polled
//! Several coordinators can serve REST from one PostgreSQL store, and only the leader runs the
//! engine that changes tasks ([`crate::leader`]); a follower has no in-process feed of changes.
//! The store is what every coordinator shares, so each stream looks at it: every [`POLL`] it
//! reads the caller's newest [`WINDOW`] top-level tasks (the query behind `GET /api/v1/tasks`)
//! and sends only what changed since its last look ([`Changes`]). The stream therefore works the
//! same on any coordinator, the leader included, and survives a change of leader.
//!
//! # What it costs, and its bounds
//! One indexed query of at most [`WINDOW`] rows per open stream per [`POLL`], and the last
//! summary sent of each task in the window (a few hundred bytes each) per stream. No task is
//! spawned: the poll runs inside the response body, so it stops when the client goes away.
//! A coordinator holds at most [`MAX_STREAMS`] streams, [`MAX_STREAMS_PER_SUBMITTER`] per
//! submitter (`429 too_many_streams` past either), and ends each after [`MAX_LIFETIME`], so
//! that a revoked key stops streaming and clients spread again over the coordinators when they
//! reconnect; every stream ends when the coordinator shuts down. A comment line goes out every
//! [`KEEP_ALIVE`] so that proxies keep an idle stream open.
//!
//! # Events
//! - `snapshot` (first): a JSON array of [`TaskChange`], newest first: the window as it is.
//! - `task`: one [`TaskChange`], for a task that is new or changed since the last look, oldest
//!   first within one look.
//! - `error`: an `ApiError` (`{error, message}`) when the store could not be read; the stream
//!   ends after it, and the client reconnects.
//!
//! Node changes are not streamed: nodes live in the leader's engine, which a follower reaches
//! only by forwarding a request, so the console reads `GET /api/v1/nodes` when its nodes page is
//! open.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ambient_protocol::{ApiError, Progress, TaskCost, TaskInfo, TaskStatus, TaskType};
use axum::http::{HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::api::Failure;
use crate::store::Store;

/// How often a stream looks at the store.
pub const POLL: Duration = Duration::from_secs(1);
/// How many of the caller's newest top-level tasks a stream watches.
pub const WINDOW: u32 = 50;
/// Most streams one coordinator holds open at once.
pub const MAX_STREAMS: usize = 256;
/// Most streams one submitter holds open on one coordinator.
pub const MAX_STREAMS_PER_SUBMITTER: usize = 8;
/// How long a stream lasts before the server ends it (the client reconnects).
pub const MAX_LIFETIME: Duration = Duration::from_secs(300);
/// How often an idle stream sends a comment line.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// What the stream says about a task: [`TaskInfo`] without its result, which can be large and
/// which the console reads once, with `GET /api/v1/tasks/{id}`, when it shows the task.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskChange {
    /// The task's id.
    pub task_id: Uuid,
    /// Its kind.
    pub task_type: TaskType,
    /// Where it is in its lifecycle.
    pub status: TaskStatus,
    /// Shards (or rounds) done of total, for sharded and federated tasks.
    pub progress: Option<Progress>,
    /// Why a pending task waits.
    pub status_reason: Option<String>,
    /// Why it failed or expired.
    pub error: Option<String>,
    /// Assignments made so far.
    pub attempts: u32,
    /// The proof behind its result, for a `zk_proof` task.
    pub proof_id: Option<String>,
    /// What it costs, in µcredits.
    pub cost: Option<TaskCost>,
    /// When it was accepted.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<TaskInfo> for TaskChange {
    fn from(t: TaskInfo) -> TaskChange {
        TaskChange {
            task_id: t.task_id,
            task_type: t.task_type,
            status: t.status,
            progress: t.progress,
            status_reason: t.status_reason,
            error: t.error,
            attempts: t.attempts,
            proof_id: t.proof_id,
            cost: t.cost,
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }
}

/// What one stream last sent of each task in its window: the pure part of a stream.
#[derive(Debug, Default)]
pub struct Changes {
    last: HashMap<Uuid, TaskChange>,
}

impl Changes {
    /// Takes one look (`now`, newest first) and returns the tasks that are new or differ from
    /// what was sent last, oldest first. Only the tasks of `now` are remembered, so the memory is
    /// bounded by the window.
    pub fn update(&mut self, now: Vec<TaskChange>) -> Vec<TaskChange> {
        let changed = now
            .iter()
            .rev()
            .filter(|c| self.last.get(&c.task_id) != Some(c))
            .cloned()
            .collect();
        self.last = now.into_iter().map(|c| (c.task_id, c)).collect();
        changed
    }
}

/// The open streams of one coordinator, counted to enforce [`MAX_STREAMS`] and
/// [`MAX_STREAMS_PER_SUBMITTER`].
#[derive(Debug, Default)]
pub struct Streams {
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_submitter: HashMap<String, usize>,
}

/// Why a stream was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StreamRefused {
    /// The coordinator holds [`MAX_STREAMS`] already.
    #[error("this coordinator has {MAX_STREAMS} event streams open, its most; retry later")]
    Coordinator,
    /// The submitter holds [`MAX_STREAMS_PER_SUBMITTER`] already.
    #[error(
        "this account has {MAX_STREAMS_PER_SUBMITTER} event streams open on this coordinator, \
         its most; close a console tab or retry later"
    )]
    Submitter,
}

impl Streams {
    /// Counts a new stream of `submitter`, or refuses it. The stream is counted until the
    /// returned [`Admission`] drops.
    pub fn admit(self: &Arc<Self>, submitter: &str) -> Result<Admission, StreamRefused> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.total >= MAX_STREAMS {
            return Err(StreamRefused::Coordinator);
        }
        let mine = open.by_submitter.entry(submitter.to_string()).or_default();
        if *mine >= MAX_STREAMS_PER_SUBMITTER {
            return Err(StreamRefused::Submitter);
        }
        *mine += 1;
        open.total += 1;
        Ok(Admission {
            streams: self.clone(),
            submitter: submitter.to_string(),
        })
    }

    /// Streams open now.
    pub fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

/// One counted stream; dropping it uncounts it.
#[derive(Debug)]
pub struct Admission {
    streams: Arc<Streams>,
    submitter: String,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut open = self.streams.open.lock().unwrap_or_else(|e| e.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_submitter.get_mut(&self.submitter) {
            *n -= 1;
            if *n == 0 {
                open.by_submitter.remove(&self.submitter);
            }
        }
    }
}

/// One stream's state between two events.
struct Watch {
    store: Store,
    submitter: String,
    changes: Changes,
    first: bool,
    ticks: Interval,
    ends: Instant,
    shutdown: CancellationToken,
    queue: VecDeque<Event>,
    done: bool,
    _admission: Admission,
}

impl Watch {
    /// The next event: one queued, or the next look's, or `None` when the stream ends.
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Watch)> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Some((Ok(event), self));
            }
            if self.done {
                return None;
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return None,
                _ = tokio::time::sleep_until(self.ends) => return None,
                _ = self.ticks.tick() => {}
            }
            self.look().await;
        }
    }

    /// Reads the window and queues what changed.
    async fn look(&mut self) {
        let now = match self
            .store
            .tasks_of(self.submitter.clone(), None, WINDOW)
            .await
        {
            Ok(tasks) => tasks
                .iter()
                .map(|t| TaskChange::from(t.info()))
                .collect::<Vec<_>>(),
            Err(e) => {
                tracing::warn!(error = %e, submitter = %self.submitter, "Event stream could not read tasks; ending it.");
                let error = ApiError::new("internal", format!("could not read tasks: {e}"));
                self.queue.extend(json_event("error", &error));
                self.done = true;
                return;
            }
        };
        if std::mem::take(&mut self.first) {
            self.queue.extend(json_event("snapshot", &now));
            self.changes.update(now);
        } else {
            let changed = self.changes.update(now);
            self.queue
                .extend(changed.iter().filter_map(|c| json_event("task", c)));
        }
    }
}

fn json_event(name: &str, data: &impl Serialize) -> Option<Event> {
    match Event::default().event(name).json_data(data) {
        Ok(event) => Some(event),
        Err(e) => {
            tracing::error!(error = %e, "Could not encode an event.");
            None
        }
    }
}

/// The response to `GET /api/v1/events` of an authenticated `submitter`: a stream, or
/// `429 too_many_streams`.
pub(crate) fn respond(
    store: Store,
    streams: &Arc<Streams>,
    shutdown: CancellationToken,
    submitter: String,
) -> Result<Response, Failure> {
    let admission = streams.admit(&submitter).map_err(|e| {
        Failure::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_streams",
            e.to_string(),
        )
    })?;
    let mut ticks = tokio::time::interval(POLL);
    // A slow look delays the next one instead of bunching them up.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let watch = Watch {
        store,
        submitter,
        changes: Changes::default(),
        first: true,
        ticks,
        ends: Instant::now() + MAX_LIFETIME,
        shutdown,
        queue: VecDeque::new(),
        done: false,
        _admission: admission,
    };
    let stream = futures_util::stream::unfold(watch, Watch::next);
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response();
    // nginx and similar proxies would otherwise buffer the stream.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(id: u128, status: TaskStatus, done: u32) -> TaskChange {
        let at = DateTime::<Utc>::from_timestamp(1_700_000_000 + id as i64, 0).unwrap();
        TaskChange {
            task_id: Uuid::from_u128(id),
            task_type: TaskType::Computation,
            status,
            progress: Some(Progress { done, total: 4 }),
            status_reason: None,
            error: None,
            attempts: 0,
            proof_id: None,
            cost: None,
            created_at: at,
            updated_at: at,
        }
    }

    /// The first look reports everything; later looks only what is new or changed, oldest
    /// first; a task that left the window is forgotten.
    #[test]
    fn only_changes_are_reported() {
        let mut c = Changes::default();
        let first = c.update(vec![
            change(2, TaskStatus::Pending, 0),
            change(1, TaskStatus::Running, 1),
        ]);
        assert_eq!(
            first.iter().map(|t| t.task_id).collect::<Vec<_>>(),
            [Uuid::from_u128(1), Uuid::from_u128(2)]
        );
        assert!(
            c.update(vec![
                change(2, TaskStatus::Pending, 0),
                change(1, TaskStatus::Running, 1),
            ])
            .is_empty()
        );
        // Progress alone is a change; a new task is one.
        let next = c.update(vec![
            change(3, TaskStatus::Pending, 0),
            change(2, TaskStatus::Pending, 0),
            change(1, TaskStatus::Running, 2),
        ]);
        assert_eq!(
            next,
            vec![
                change(1, TaskStatus::Running, 2),
                change(3, TaskStatus::Pending, 0)
            ]
        );
        // Task 1 leaves the window: it is forgotten, and reported again if it comes back.
        assert!(
            c.update(vec![
                change(3, TaskStatus::Pending, 0),
                change(2, TaskStatus::Pending, 0)
            ])
            .is_empty()
        );
        assert_eq!(c.last.len(), 2);
        assert_eq!(
            c.update(vec![change(1, TaskStatus::Completed, 4)]),
            vec![change(1, TaskStatus::Completed, 4)]
        );
    }

    /// Streams are counted per coordinator and per submitter, and uncounted when dropped.
    #[test]
    fn streams_are_bounded_per_submitter() {
        let streams = Arc::new(Streams::default());
        let held: Vec<Admission> = (0..MAX_STREAMS_PER_SUBMITTER)
            .map(|_| streams.admit("alice").expect("under the limit"))
            .collect();
        assert_eq!(
            streams.admit("alice").unwrap_err(),
            StreamRefused::Submitter
        );
        let bob = streams.admit("bob").expect("another submitter");
        assert_eq!(streams.open(), MAX_STREAMS_PER_SUBMITTER + 1);
        drop(held);
        drop(bob);
        assert_eq!(streams.open(), 0);
        assert!(streams.open.lock().unwrap().by_submitter.is_empty());
        assert!(streams.admit("alice").is_ok());
    }

    /// The coordinator's bound holds across submitters.
    #[test]
    fn streams_are_bounded_per_coordinator() {
        let streams = Arc::new(Streams::default());
        let held: Vec<Admission> = (0..MAX_STREAMS)
            .map(|i| streams.admit(&format!("s{i}")).expect("under the limit"))
            .collect();
        assert_eq!(
            streams.admit("late").unwrap_err(),
            StreamRefused::Coordinator
        );
        drop(held);
        assert!(streams.admit("late").is_ok());
    }
}
