use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ambient_service::Shutdown;

#[tokio::test(start_paused = true)]
async fn every_tracked_loop_stops_and_is_drained() {
    let shutdown = Shutdown::new();
    let ticks = Arc::new(AtomicUsize::new(0));
    let stopped = Arc::new(AtomicUsize::new(0));
    for _ in 0..3 {
        let (s, ticks, stopped) = (shutdown.clone(), ticks.clone(), stopped.clone());
        shutdown.spawn(async move {
            loop {
                tokio::select! {
                    _ = s.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {
                        ticks.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
            // Work after cancellation (a flush) still counts as part of the task.
            tokio::time::sleep(Duration::from_millis(50)).await;
            stopped.fetch_add(1, Ordering::SeqCst);
        });
    }
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(ticks.load(Ordering::SeqCst) >= 3);
    shutdown
        .trigger_on(tokio::time::sleep(Duration::from_millis(10)))
        .await;
    assert!(shutdown.is_triggered());
    shutdown.drain(Duration::from_secs(5)).await.unwrap();
    assert_eq!(stopped.load(Ordering::SeqCst), 3);
    assert!(shutdown.tracker().is_empty());
}

#[tokio::test]
async fn with_token_follows_the_callers_token() {
    let token = tokio_util::sync::CancellationToken::new();
    let shutdown = Shutdown::with_token(token.clone());
    let s = shutdown.clone();
    let task = shutdown.spawn(async move { s.cancelled().await });
    let blocking = shutdown.clone();
    let spun = shutdown.spawn_blocking(move || {
        while !blocking.is_triggered() {
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    token.cancel();
    task.await.unwrap();
    spun.await.unwrap();
    shutdown.wait().await;
    // And the other way: triggering cancels the caller's token.
    let theirs = tokio_util::sync::CancellationToken::new();
    Shutdown::with_token(theirs.clone()).trigger();
    assert!(theirs.is_cancelled());
}
