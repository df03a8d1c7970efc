//! Rooms and the peers in them. A room exists while it has peers: its router is created on the
//! least-loaded worker when the first peer arrives and closed when the last one leaves.
//!
//! The map of rooms is locked only for lookups and updates, never across a worker request: the
//! first joiner of a room puts an "opening" entry in the map and creates the router outside the
//! lock; whoever joins the same room meanwhile waits for that entry to resolve, and joiners of
//! other rooms are not held up at all (the getOrCreateRoom pattern of LiveKit).

mod codecs;
mod peer;
mod room;
pub mod stats;
mod transport;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use mediasoup::prelude::*;
use tokio::sync::watch;
use tracing::{info_span, Span};

pub use codecs::media_codecs;
pub use peer::{Peer, PeerError};
pub use room::{Announcement, CloseSignal, Liveness, PeerCommand, PeerLink, Room};
pub use transport::{listen_info, MediaPort, TransportSettings};

use crate::bus::{Bus, PeerId, RefusalReason, RoomName, RoomOpened, RouterClosed, RouterCreated};
use crate::config::Limits;
use crate::recording::Recorder;
use crate::workers::{NoWorkerAlive, WorkerPool, REQUEST_DEADLINE};

#[derive(Debug, thiserror::Error)]
pub enum OpenRoomError {
    #[error(transparent)]
    NoWorker(#[from] NoWorkerAlive),
    #[error("could not create a router for the room: {0}")]
    Router(#[from] mediasoup::worker::CreateRouterError),
    #[error("worker {0} did not create the room's router within {1:?}: try again later")]
    WorkerHung(usize, std::time::Duration),
    #[error("router creation was interrupted: {0}")]
    Interrupted(#[from] tokio::task::JoinError),
    #[error("the room is full ({0} peers): try again later")]
    Full(usize),
    #[error("the server has its maximum of {0} rooms open: try again later")]
    TooManyRooms(usize),
}

impl OpenRoomError {
    /// The limit this is, when it is one rather than a failure.
    pub fn refusal(&self) -> Option<RefusalReason> {
        match self {
            OpenRoomError::Full(_) => Some(RefusalReason::RoomFull),
            OpenRoomError::TooManyRooms(_) => Some(RefusalReason::Rooms),
            _ => None,
        }
    }
}

/// One name in the map of rooms.
enum Entry {
    /// The first joiner is creating the router; the sender side closes when it is done, either
    /// way, and the joiners waiting here look again.
    Opening(watch::Receiver<()>),
    Open(Arc<Room>),
}

pub struct Rooms {
    rooms: Mutex<HashMap<RoomName, Entry>>,
    workers: Arc<WorkerPool>,
    bus: Bus,
    /// Its `max_rooms` and `max_peers_per_room` apply here.
    limits: Limits,
    pub transport_settings: TransportSettings,
    /// Records the rooms configured for it; `None`: recording is off.
    recorder: Option<Arc<Recorder>>,
}

/// Held by the joiner opening a room: on drop (the room opened, opening failed, or the joiner
/// was cancelled) it takes a still-unresolved entry out of the map and wakes the waiters.
struct OpeningSlot<'a> {
    rooms: &'a Rooms,
    name: RoomName,
    _done: watch::Sender<()>,
}

impl Drop for OpeningSlot<'_> {
    fn drop(&mut self) {
        let mut rooms = self.rooms.rooms();
        // Only this joiner turns an opening entry of this name into anything else.
        if matches!(rooms.get(&self.name), Some(Entry::Opening(_))) {
            rooms.remove(&self.name);
        }
    }
}

impl Rooms {
    pub fn new(
        workers: Arc<WorkerPool>,
        bus: Bus,
        limits: Limits,
        transport_settings: TransportSettings,
        recorder: Option<Arc<Recorder>>,
    ) -> Self {
        Rooms {
            rooms: Mutex::new(HashMap::new()),
            workers,
            bus,
            limits,
            transport_settings,
            recorder,
        }
    }

    fn rooms(&self) -> MutexGuard<'_, HashMap<RoomName, Entry>> {
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts `peer` into the room `name`, opening the room if needed. Membership is added under
    /// the map's lock, so a room found open cannot be closing: [`leave`](Self::leave) removes
    /// an empty room under the same lock.
    pub async fn join(
        &self,
        name: RoomName,
        peer: PeerId,
        link: PeerLink,
    ) -> Result<Arc<Room>, OpenRoomError> {
        loop {
            let (done, mut opening) = {
                let mut rooms = self.rooms();
                match rooms.get(&name) {
                    Some(Entry::Open(room)) => {
                        let max = self.limits.max_peers_per_room;
                        if room.member_count() >= max {
                            return Err(OpenRoomError::Full(max));
                        }
                        room.add_member(peer, link);
                        return Ok(Arc::clone(room));
                    }
                    Some(Entry::Opening(opening)) => (None, opening.clone()),
                    None if rooms.len() >= self.limits.max_rooms => {
                        return Err(OpenRoomError::TooManyRooms(self.limits.max_rooms));
                    }
                    None => {
                        let (done, opening) = watch::channel(());
                        rooms.insert(name.clone(), Entry::Opening(opening.clone()));
                        (Some(done), opening)
                    }
                }
            };
            let Some(done) = done else {
                // Resolves when the opener is done, whatever the outcome: look again.
                let _ = opening.changed().await;
                continue;
            };
            let slot = OpeningSlot {
                rooms: self,
                name: name.clone(),
                _done: done,
            };
            let room = Arc::new(self.open(name.clone()).await?);
            let mut rooms = self.rooms();
            rooms.insert(name, Entry::Open(Arc::clone(&room)));
            room.add_member(peer, link);
            drop(rooms);
            drop(slot);
            return Ok(room);
        }
    }

    async fn open(&self, name: RoomName) -> Result<Room, OpenRoomError> {
        let placement = self.workers.place_room()?;
        let worker = placement.worker().index;
        // Its own task, so that a router the worker creates after the deadline is dropped
        // (closed) there instead of lingering in the worker.
        let creating = {
            let worker = placement.worker().worker.clone();
            tokio::spawn(async move {
                worker
                    .create_router(RouterOptions::new(media_codecs()))
                    .await
            })
        };
        let router = tokio::time::timeout(REQUEST_DEADLINE, creating)
            .await
            .map_err(|_| OpenRoomError::WorkerHung(worker, REQUEST_DEADLINE))???;
        let span = info_span!(parent: None, "room", room = %name, worker);
        let router_id = router.id();
        self.bus.emit(
            &span,
            RouterCreated {
                worker,
                router: router_id,
            },
        );
        let (bus, router_span) = (self.bus.clone(), span.clone());
        router
            .on_close(move || {
                bus.emit(
                    &router_span,
                    RouterClosed {
                        worker,
                        router: router_id,
                    },
                );
            })
            .detach();
        self.bus.emit(
            &span,
            RoomOpened {
                room: name.clone(),
                worker,
                router: router.id(),
            },
        );
        let recording = match &self.recorder {
            Some(recorder) => recorder.open_room(&name, &router, &span).await,
            None => None,
        };
        Ok(Room::new(
            name,
            router,
            placement,
            span,
            self.bus.clone(),
            recording,
        ))
    }

    /// Takes `peer` out of its room and closes the room when it was the last one.
    pub fn leave(&self, room: &Arc<Room>, peer: PeerId) {
        room.remove_member(peer);
        let mut rooms = self.rooms();
        let current =
            matches!(rooms.get(&room.name), Some(Entry::Open(open)) if Arc::ptr_eq(open, room));
        let closed = (current && room.is_empty()).then(|| rooms.remove(&room.name));
        drop(rooms);
        drop(closed);
    }

    /// Asks every peer of the room `name` to leave (the room closes when the last one has).
    pub fn close_room(&self, name: &str, reason: crate::bus::LeaveReason) {
        let room = match self.rooms().get(name) {
            Some(Entry::Open(room)) => Some(Arc::clone(room)),
            _ => None,
        };
        if let Some(room) = room {
            room.close_all(reason);
        }
    }

    /// The rooms open now.
    pub async fn snapshot(&self) -> Vec<Arc<Room>> {
        self.rooms()
            .values()
            .filter_map(|entry| match entry {
                Entry::Open(room) => Some(Arc::clone(room)),
                Entry::Opening(_) => None,
            })
            .collect()
    }

    pub fn bus(&self) -> &Bus {
        &self.bus
    }
}

/// Span of one peer's session, child of its room's span.
pub fn session_span(room: &Room, peer: PeerId) -> Span {
    info_span!(
        parent: &room.span,
        "peer_session",
        room = %room.name,
        peer = %peer,
        user_id = tracing::field::Empty,
    )
}
