//! Whether the event log still takes appends. After a failed append the shards' state holds
//! events the log may not: nothing may answer from that state again. The shards refuse every
//! command and read, the health routes answer 503, and the server exits so that a restart
//! rebuilds the state from what the log holds (crash-only: there is no repair in place).

use std::sync::Arc;

use tokio::sync::watch;

/// Shared by the shards (which report a failure) and the server (which stops on it).
#[derive(Clone, Debug)]
pub struct LogHealth(Arc<watch::Sender<Option<String>>>);

impl Default for LogHealth {
    fn default() -> Self {
        LogHealth(Arc::new(watch::Sender::new(None)))
    }
}

impl LogHealth {
    /// Records the first failure; later ones add nothing.
    pub fn fail(&self, reason: &str) {
        self.0.send_if_modified(|failure| {
            if failure.is_some() {
                return false;
            }
            tracing::error!(
                reason,
                "an append to the event log failed; this process must restart"
            );
            *failure = Some(reason.to_owned());
            true
        });
    }

    /// Why the log failed, if it did.
    pub fn failure(&self) -> Option<String> {
        self.0.borrow().clone()
    }

    pub fn is_failed(&self) -> bool {
        self.0.borrow().is_some()
    }

    /// Resolves with the reason once the log has failed.
    pub async fn failed(&self) -> String {
        let mut failures = self.0.subscribe();
        let failure = failures
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|failure| failure.clone());
        match failure {
            Some(reason) => reason,
            // The sender lives in `self`, so it cannot be gone while this waits.
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_failure_is_kept_and_wakes_waiters() {
        let health = LogHealth::default();
        assert!(!health.is_failed());
        let waiting = tokio::spawn({
            let health = health.clone();
            async move { health.failed().await }
        });
        health.fail("disk full");
        health.fail("a later failure");
        assert_eq!(waiting.await.unwrap(), "disk full");
        assert_eq!(health.failure().as_deref(), Some("disk full"));
    }
}
