//! Shutdown signalling: one sender (the server), any number of listeners.

use tokio::sync::watch;

/// Tells every holder that the server is shutting down.
pub struct ShutdownTrigger(watch::Sender<bool>);

/// Resolves [`wait`](Self::wait) once the server shuts down. Cheap to clone.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (sender, receiver) = watch::channel(false);
    (ShutdownTrigger(sender), Shutdown(receiver))
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }
}

impl Shutdown {
    pub async fn wait(&mut self) {
        // An error means the trigger is gone, which also means shutdown.
        let _ = self.0.wait_for(|stopping| *stopping).await;
    }
}
