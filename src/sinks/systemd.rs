//! The systemd sink (`sd_notify`): `READY=1` once the server takes traffic, a `STATUS=` line kept
//! current, `WATCHDOG=1` at half of `WATCHDOG_USEC` while the health check passes, and
//! `STOPPING=1` on shutdown. Started only when `NOTIFY_SOCKET` is set.
//!
//! The watchdog ping is sent from a timer on the runtime, and only while every worker answered
//! its last probe in time: a hung worker or a stalled runtime both stop the pings, and systemd
//! restarts the service.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio::sync::mpsc;
use tokio::time::{interval, MissedTickBehavior};
use tracing::warn;

use crate::bus::{Envelope, Event};
use crate::health::Health;

/// STATUS= is sent at most this often.
const STATUS_PERIOD: Duration = Duration::from_secs(1);

pub fn enabled() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

#[derive(Default)]
struct Counts {
    rooms: i64,
    peers: i64,
}

/// One line of a notification (owned, to cross into the blocking thread).
enum Note {
    Ready,
    Stopping,
    Watchdog,
    Status(String),
}

/// Sends the notes from a blocking thread: a socket nobody reads blocks the sender, and that
/// must stall only this sink.
async fn notify(notes: Vec<Note>) {
    let sent = tokio::task::spawn_blocking(move || {
        let states: Vec<NotifyState> = notes
            .iter()
            .map(|note| match note {
                Note::Ready => NotifyState::Ready,
                Note::Stopping => NotifyState::Stopping,
                Note::Watchdog => NotifyState::Watchdog,
                Note::Status(status) => NotifyState::Status(status),
            })
            .collect();
        sd_notify::notify(&states)
    })
    .await;
    if let Ok(Err(error)) = sent {
        warn!(%error, "could not notify systemd (NOTIFY_SOCKET)");
    }
}

pub async fn run(mut events: mpsc::Receiver<Envelope>, health: Health, workers: usize) {
    let watchdog = sd_notify::watchdog_enabled();
    let mut ping = interval(watchdog.map_or(Duration::from_secs(3600), |usec| usec / 2));
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut status_tick = interval(STATUS_PERIOD);
    status_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);

    let mut counts = Counts::default();
    let mut ready = false;
    let mut status_dirty = false;
    let status = |counts: &Counts| {
        Note::Status(format!(
            "{} rooms, {} peers, {}/{} workers alive",
            counts.rooms,
            counts.peers,
            health.alive_count(),
            workers
        ))
    };
    loop {
        tokio::select! {
            envelope = events.recv() => {
                let Some(envelope) = envelope else { return };
                match envelope.event.as_ref() {
                    Event::ServerReady(_) => {
                        ready = true;
                        notify(vec![Note::Ready, status(&counts)]).await;
                    }
                    Event::ServerStopping(_) => {
                        notify(vec![Note::Stopping, Note::Status("shutting down".into())]).await;
                    }
                    Event::ServerStopped(_) => return,
                    Event::RoomOpened(_) => { counts.rooms += 1; status_dirty = true; }
                    Event::RoomClosed(_) => { counts.rooms -= 1; status_dirty = true; }
                    Event::SocketOpened(_) => { counts.peers += 1; status_dirty = true; }
                    Event::PeerLeft(_) => { counts.peers -= 1; status_dirty = true; }
                    Event::WorkerDied(_) => status_dirty = true,
                    _ => {}
                }
            }
            _ = status_tick.tick(), if ready && status_dirty => {
                status_dirty = false;
                notify(vec![status(&counts)]).await;
            }
            _ = ping.tick(), if watchdog.is_some() => {
                if health.is_ready() {
                    notify(vec![Note::Watchdog]).await;
                }
            }
        }
    }
}
