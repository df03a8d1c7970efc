//! Rooms and the peers in them. A room exists while it has peers: its router is created on the
//! least-loaded worker when the first peer arrives and closed when the last one leaves.

mod codecs;
mod peer;
mod room;
pub mod stats;

use std::collections::HashMap;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::sync::Arc;

use mediasoup::prelude::*;
use tokio::sync::Mutex;
use tracing::{info_span, Span};

pub use codecs::media_codecs;
pub use peer::{Peer, PeerError};
pub use room::{Announcement, CloseSignal, Liveness, PeerCommand, PeerLink, Room};

use crate::bus::{Bus, LeaveReason, PeerId, RoomName, RoomOpened, RouterClosed, RouterCreated};
use crate::config::Config;
use crate::workers::{NoWorkerAlive, WorkerPool, REQUEST_DEADLINE};

/// How every WebRTC transport is set up.
#[derive(Debug, Clone)]
pub struct TransportSettings {
    pub listen_ip: IpAddr,
    pub announced_address: Option<String>,
    pub max_incoming_bitrate: u32,
    pub rtc_ports: RangeInclusive<u16>,
}

impl TransportSettings {
    pub fn from_config(config: &Config) -> Self {
        TransportSettings {
            listen_ip: config.rtc_listen_ip,
            announced_address: config.announced_address.clone(),
            max_incoming_bitrate: config.max_incoming_bitrate,
            rtc_ports: config.rtc_ports.clone(),
        }
    }
}

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
}

pub struct Rooms {
    rooms: Mutex<HashMap<RoomName, Arc<Room>>>,
    workers: Arc<WorkerPool>,
    bus: Bus,
    pub transport_settings: TransportSettings,
}

impl Rooms {
    pub fn new(workers: Arc<WorkerPool>, bus: Bus, transport_settings: TransportSettings) -> Self {
        Rooms {
            rooms: Mutex::new(HashMap::new()),
            workers,
            bus,
            transport_settings,
        }
    }

    /// Puts `peer` into the room `name`, opening the room if needed.
    pub async fn join(
        &self,
        name: RoomName,
        peer: PeerId,
        link: PeerLink,
    ) -> Result<Arc<Room>, OpenRoomError> {
        let mut rooms = self.rooms.lock().await;
        let room = match rooms.get(&name) {
            Some(room) => Arc::clone(room),
            None => {
                let room = Arc::new(self.open(name.clone()).await?);
                rooms.insert(name, Arc::clone(&room));
                room
            }
        };
        room.add_member(peer, link);
        Ok(room)
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
        Ok(Room::new(name, router, placement, span, self.bus.clone()))
    }

    /// Takes `peer` out of its room and closes the room when it was the last one.
    pub async fn leave(&self, room: &Arc<Room>, peer: PeerId) {
        room.remove_member(peer);
        let mut rooms = self.rooms.lock().await;
        if room.is_empty() {
            if let Some(current) = rooms.get(&room.name) {
                if Arc::ptr_eq(current, room) {
                    rooms.remove(&room.name);
                }
            }
        }
    }

    /// The rooms open now.
    pub async fn snapshot(&self) -> Vec<Arc<Room>> {
        self.rooms.lock().await.values().cloned().collect()
    }

    /// Asks every peer of every room to close (server shutdown).
    pub async fn close_all(&self) {
        for room in self.snapshot().await {
            room.close_all(LeaveReason::ServerShutdown);
        }
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
