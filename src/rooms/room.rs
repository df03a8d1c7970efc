//! A room: one router on one worker, and the peers in it. The room knows which producers exist
//! and who needs to hear about them; each peer's media objects belong to that peer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use mediasoup::prelude::*;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, Notify};
use tracing::Span;

use crate::bus::{Bus, Counted, LeaveReason, Object, PeerId, RoomClosed, RoomName};
use crate::recording::RoomRecording;
use crate::workers::Placement;

/// What a room asks of a peer's connection.
#[derive(Debug, Clone)]
pub enum PeerCommand {
    /// Another peer's producer can now be consumed.
    NewProducer(Announcement),
    /// Another peer's producer is gone.
    ProducerClosed(ProducerId),
    /// One of this peer's consumers lost its producer: forget it.
    ConsumerGone(ConsumerId),
}

/// A producer as other peers learn of it (`newProducer`).
#[derive(Debug, Clone)]
pub struct Announcement {
    pub producer: ProducerId,
    pub user_id: Arc<str>,
    pub kind: MediaKind,
    /// What the others get as its `appData`, as JSON: written once, shared by every
    /// `newProducer` that carries it (and held once per producer for late joiners).
    pub app_data: Arc<RawValue>,
}

/// Asks a connection to close itself, with the reason given first.
#[derive(Default)]
pub struct CloseSignal {
    reason: Mutex<Option<LeaveReason>>,
    notify: Notify,
}

impl CloseSignal {
    pub fn close(&self, reason: LeaveReason) {
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(reason);
        self.notify.notify_one();
    }

    /// Resolves once [`close`](Self::close) was called.
    pub async fn closed(&self) -> LeaveReason {
        loop {
            if let Some(reason) = *self.reason.lock().unwrap_or_else(|e| e.into_inner()) {
                return reason;
            }
            self.notify.notified().await;
        }
    }
}

impl CloseSignal {
    /// Whether the connection was asked to close.
    pub fn is_set(&self) -> bool {
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }
}

/// Whether a peer's connection still answers: its connection records every frame it hears and
/// sends a ping when asked.
#[derive(Default)]
pub struct Liveness {
    heard: Mutex<Option<Instant>>,
    heard_now: Notify,
    ping_now: Notify,
    ended: AtomicBool,
}

impl Liveness {
    /// The connection heard a frame from its client.
    pub fn heard(&self) {
        *self.heard.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        self.heard_now.notify_waiters();
    }

    /// When the connection last heard its client.
    pub fn last_heard(&self) -> Option<Instant> {
        *self.heard.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Resolves when someone wants the connection to ping its client now.
    pub async fn ping_requested(&self) {
        self.ping_now.notified().await
    }

    /// The connection stopped reading its client.
    pub fn ended(&self) {
        self.ended.store(true, Ordering::Relaxed);
    }

    /// Has the connection ping its client and waits up to `deadline` for it to hear anything.
    pub async fn answers_within(&self, deadline: Duration) -> bool {
        if self.ended.load(Ordering::Relaxed) {
            return false;
        }
        let asked = Instant::now();
        self.ping_now.notify_one();
        let answered = async {
            loop {
                let heard = self.heard_now.notified();
                tokio::pin!(heard);
                heard.as_mut().enable();
                if self.last_heard().is_some_and(|at| at >= asked) {
                    return;
                }
                heard.await;
            }
        };
        tokio::time::timeout(deadline, answered).await.is_ok()
    }
}

/// How a room reaches one peer's connection.
#[derive(Clone)]
pub struct PeerLink {
    pub commands: mpsc::Sender<PeerCommand>,
    pub close: Arc<CloseSignal>,
    pub liveness: Arc<Liveness>,
}

impl PeerLink {
    /// Queues a command; a peer too slow to drain its queue is disconnected rather than left
    /// with a gap in what it knows.
    pub fn send(&self, command: PeerCommand) {
        if self.commands.try_send(command).is_err() {
            self.close.close(LeaveReason::TooSlow);
        }
    }
}

struct Member {
    user_id: Option<Arc<str>>,
    link: PeerLink,
    /// Its consuming transport exists, so it gets `newProducer`s.
    receiving: bool,
    producers: Vec<(Announcement, WeakProducer)>,
    consumers: Vec<(MediaKind, WeakConsumer)>,
}

/// Live media objects of a room, for stats polling.
pub struct MediaSnapshot {
    pub producers: Vec<Producer>,
    pub consumers: Vec<(MediaKind, Consumer)>,
}

pub struct Room {
    pub name: RoomName,
    pub router: Router,
    pub placement: Placement,
    /// Parent of the peers' session spans.
    pub span: Span,
    members: Mutex<HashMap<PeerId, Member>>,
    bus: Bus,
    /// The router's RTP capabilities as JSON, made on the first join and sent to every joiner.
    capabilities_json: OnceLock<Arc<RawValue>>,
    /// Its audio producers are recorded (README, "Recording"); ends with the room.
    recording: Option<RoomRecording>,
    /// Counts the room while it exists.
    _counted: Counted,
}

impl Room {
    pub fn new(
        name: RoomName,
        router: Router,
        placement: Placement,
        span: Span,
        bus: Bus,
        recording: Option<RoomRecording>,
    ) -> Self {
        let worker = placement.worker().index;
        Room {
            _counted: bus.census().count(Object::Room { worker }),
            name,
            router,
            placement,
            span,
            members: Mutex::new(HashMap::new()),
            bus,
            capabilities_json: OnceLock::new(),
            recording,
        }
    }

    /// The router's RTP capabilities as JSON: serialized by `serialize` once per room.
    pub fn capabilities_json(
        &self,
        serialize: impl FnOnce(&RtpCapabilitiesFinalized) -> Arc<RawValue>,
    ) -> Arc<RawValue> {
        Arc::clone(
            self.capabilities_json
                .get_or_init(|| serialize(&self.router.rtp_capabilities())),
        )
    }

    fn members(&self) -> MutexGuard<'_, HashMap<PeerId, Member>> {
        self.members.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn worker_index(&self) -> usize {
        self.placement.worker().index
    }

    pub fn add_member(&self, peer: PeerId, link: PeerLink) {
        self.members().insert(
            peer,
            Member {
                user_id: None,
                link,
                receiving: false,
                producers: Vec::new(),
                consumers: Vec::new(),
            },
        );
        self.placement.peer_added();
    }

    /// Removes the peer and tells the others that its producers are gone.
    pub fn remove_member(&self, peer: PeerId) {
        let (member, others) = {
            let mut members = self.members();
            let Some(member) = members.remove(&peer) else {
                return;
            };
            let others: Vec<PeerLink> = members
                .values()
                .filter(|m| m.receiving)
                .map(|m| m.link.clone())
                .collect();
            (member, others)
        };
        self.placement.peer_removed();
        for (announcement, _) in &member.producers {
            for link in &others {
                link.send(PeerCommand::ProducerClosed(announcement.producer));
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.members().is_empty()
    }

    /// Asks every peer's connection to close.
    pub fn close_all(&self, reason: LeaveReason) {
        let links: Vec<Arc<CloseSignal>> = self
            .members()
            .values()
            .map(|m| m.link.close.clone())
            .collect();
        for close in links {
            close.close(reason);
        }
    }

    pub fn member_count(&self) -> usize {
        self.members().len()
    }

    /// The connection of another peer that holds `user_id` and has not been asked to close.
    pub fn holder_of(&self, user_id: &str, except: PeerId) -> Option<PeerLink> {
        self.members()
            .iter()
            .find(|(id, m)| {
                **id != except && m.user_id.as_deref() == Some(user_id) && !m.link.close.is_set()
            })
            .map(|(_, m)| m.link.clone())
    }

    /// Names the peer's user; returns the peer it replaces (same user, older connection), which
    /// has been asked to close.
    pub fn identify(&self, peer: PeerId, user_id: Arc<str>) -> Option<PeerId> {
        let mut members = self.members();
        let old = members
            .iter()
            .find(|(id, m)| **id != peer && m.user_id.as_deref() == Some(&*user_id))
            .map(|(id, m)| (*id, m.link.close.clone()));
        if let Some(member) = members.get_mut(&peer) {
            member.user_id = Some(user_id);
        }
        let (old, close) = old?;
        close.close(LeaveReason::Replaced);
        Some(old)
    }

    /// Marks the peer as able to consume and returns every other peer's producers, atomically
    /// with respect to [`announce`](Self::announce): none is missed, none is sent twice.
    pub fn start_receiving(&self, peer: PeerId) -> Vec<Announcement> {
        let mut members = self.members();
        if let Some(member) = members.get_mut(&peer) {
            member.receiving = true;
        }
        members
            .iter()
            .filter(|(id, _)| **id != peer)
            .flat_map(|(_, m)| m.producers.iter().map(|(a, _)| a.clone()))
            .collect()
    }

    /// Records a new producer of `peer` and tells the receiving others.
    pub fn announce(&self, peer: PeerId, announcement: Announcement, producer: &Producer) {
        let others = {
            let mut members = self.members();
            let Some(member) = members.get_mut(&peer) else {
                return;
            };
            member
                .producers
                .push((announcement.clone(), producer.downgrade()));
            Self::receiving_others(&members, peer)
        };
        if let Some(recording) = &self.recording {
            recording.start(&announcement.user_id, producer);
        }
        for link in others {
            link.send(PeerCommand::NewProducer(announcement.clone()));
        }
    }

    /// Forgets a producer of `peer` and tells the receiving others.
    pub fn withdraw(&self, peer: PeerId, producer: ProducerId) {
        let others = {
            let mut members = self.members();
            let Some(member) = members.get_mut(&peer) else {
                return;
            };
            member.producers.retain(|(a, _)| a.producer != producer);
            Self::receiving_others(&members, peer)
        };
        if let Some(recording) = &self.recording {
            recording.stop(producer);
        }
        for link in others {
            link.send(PeerCommand::ProducerClosed(producer));
        }
    }

    fn receiving_others(members: &HashMap<PeerId, Member>, peer: PeerId) -> Vec<PeerLink> {
        members
            .iter()
            .filter(|(id, m)| **id != peer && m.receiving)
            .map(|(_, m)| m.link.clone())
            .collect()
    }

    /// Whether `producer` belongs to a peer of this room other than `peer`.
    pub fn is_consumable_by(&self, peer: PeerId, producer: ProducerId) -> bool {
        self.members()
            .iter()
            .any(|(id, m)| *id != peer && m.producers.iter().any(|(a, _)| a.producer == producer))
    }

    pub fn track_consumer(&self, peer: PeerId, kind: MediaKind, consumer: &Consumer) {
        if let Some(member) = self.members().get_mut(&peer) {
            member.consumers.push((kind, consumer.downgrade()));
        }
    }

    /// The media objects alive now; forgets the ones that are gone.
    pub fn media(&self) -> MediaSnapshot {
        let mut snapshot = MediaSnapshot {
            producers: Vec::new(),
            consumers: Vec::new(),
        };
        for member in self.members().values_mut() {
            snapshot
                .producers
                .extend(member.producers.iter().filter_map(|(_, p)| p.upgrade()));
            member
                .consumers
                .retain(|(kind, weak)| match weak.upgrade() {
                    Some(consumer) if !consumer.closed() => {
                        snapshot.consumers.push((*kind, consumer));
                        true
                    }
                    _ => false,
                });
        }
        snapshot
    }
}

impl Drop for Room {
    fn drop(&mut self) {
        self.bus.emit(
            &self.span,
            RoomClosed {
                room: self.name.clone(),
                worker: self.worker_index(),
                router: self.router.id(),
            },
        );
    }
}
