//! The signals that stop a service: Ctrl-C (SIGINT) and SIGTERM, which systemd, Docker and
//! Kubernetes send.

/// Completes on Ctrl-C or, on Unix, SIGTERM, so both stop the service cleanly. Where SIGTERM
/// cannot be watched it falls back to Ctrl-C alone.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
