//! The shutdown signal: once the server starts draining, long-polls answer at once (graceful
//! shutdown waits for in-flight requests, and a long-poll would otherwise hold it for 30 s).

use tokio::sync::watch;

/// Turns true once, when the server starts shutting down.
#[derive(Debug)]
pub struct Drain(watch::Sender<bool>);

impl Default for Drain {
    fn default() -> Self {
        Self(watch::Sender::new(false))
    }
}

impl Drain {
    /// Marks the server as shutting down, ending every long-poll now.
    pub fn start(&self) {
        self.0.send_replace(true);
    }

    /// A receiver that turns true when the server starts shutting down.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.0.subscribe()
    }
}
