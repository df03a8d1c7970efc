//! One peer's media: its two transports, its producers and its consumers, and the rules for
//! them. Owned by the peer's connection; everything closes when the peer is dropped (mediasoup
//! closes on drop).

mod error;
mod join;
mod prepare;
mod watch;

use std::collections::HashMap;
use std::sync::Arc;

use mediasoup::prelude::*;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};
use tracing::Span;

pub use error::PeerError;
use join::{JoinTracker, SessionEvents};
use prepare::Prepared;

use super::room::{Announcement, PeerCommand, Room};
use super::TransportSettings;
use crate::bus::{
    Bus, ConsumerPaused, Counted, Direction, Event, JoinFailure, JoinStage, LeaveReason, Object,
    PeerId, PeerJoined, PeerLeft, PeerReplaced, ProducerPaused,
};

pub struct Peer {
    pub id: PeerId,
    pub room: Arc<Room>,
    events: SessionEvents,
    settings: TransportSettings,
    commands: mpsc::Sender<PeerCommand>,
    user_id: Option<Arc<str>>,
    join: JoinTracker,
    send_transport: Option<WebRtcTransport>,
    recv_transport: Option<WebRtcTransport>,
    /// Its two transports, being made since it asked for the router's capabilities (see
    /// [`prepare`]); `None` before.
    prepared: Option<Prepared>,
    producers: HashMap<ProducerId, (Producer, Arc<str>)>,
    consumers: HashMap<ConsumerId, Consumer>,
    /// Why it leaves when dropped: disconnected unless [`leave`](Self::leave) says otherwise.
    leave_reason: LeaveReason,
    /// Counts the peer while it exists, however its connection ends.
    _counted: Counted,
}

impl Peer {
    pub fn new(
        id: PeerId,
        room: Arc<Room>,
        span: Span,
        bus: Bus,
        settings: TransportSettings,
        commands: mpsc::Sender<PeerCommand>,
    ) -> Self {
        let counted = bus.census().count(Object::Peer);
        let events = SessionEvents::new(bus, span);
        let join = JoinTracker::new(id, events.clone());
        join.reach(JoinStage::SocketOpened);
        Peer {
            id,
            room,
            events,
            settings,
            commands,
            user_id: None,
            join,
            send_transport: None,
            recv_transport: None,
            prepared: None,
            producers: HashMap::new(),
            consumers: HashMap::new(),
            leave_reason: LeaveReason::Disconnected,
            _counted: counted,
        }
    }

    pub fn span(&self) -> &Span {
        self.events.span()
    }

    /// Publishes an event of this peer's session.
    pub fn emit(&self, event: impl Into<Event>) {
        self.events.emit(event);
    }

    /// Every request names its user; the first one fixes it for the connection.
    pub fn identify(&mut self, user_id: &str) -> Result<(), PeerError> {
        if let Some(expected) = &self.user_id {
            if **expected != *user_id {
                return Err(PeerError::UserIdChanged {
                    expected: expected.clone(),
                    got: user_id.to_owned(),
                });
            }
            return Ok(());
        }
        let user_id: Arc<str> = user_id.into();
        self.user_id = Some(user_id.clone());
        self.events.span().record("user_id", &*user_id);
        let room = self.room.name.clone();
        if let Some(old) = self.room.identify(self.id, user_id.clone()) {
            self.events.emit(PeerReplaced {
                old,
                new: self.id,
                room: room.clone(),
                user_id: user_id.clone(),
            });
        }
        self.events.emit(PeerJoined {
            peer: self.id,
            room,
            user_id,
        });
        Ok(())
    }

    /// The router's RTP capabilities as JSON (see [`Room::capabilities_json`]); the first time,
    /// also starts making the peer's transports (see [`prepare`]).
    pub fn rtp_capabilities(
        &mut self,
        serialize: impl FnOnce(&RtpCapabilitiesFinalized) -> Arc<RawValue>,
    ) -> Arc<RawValue> {
        self.join.reach(JoinStage::RtpCapabilities);
        if self.prepared.is_none() {
            let options = self.transport_options(false);
            self.prepared = Some(Prepared::start(&self.room.router, options));
        }
        self.room.capabilities_json(serialize)
    }

    /// Counts a refused join-phase request against the join funnel; `server_side` when the
    /// server, not the request, was at fault.
    pub fn join_request_failed(&self, server_side: bool) {
        if !self.join.has(JoinStage::TransportsCreated) {
            self.join.fail(if server_side {
                JoinFailure::TransportFailed
            } else {
                JoinFailure::BadRequest
            });
        }
    }

    /// Creates the producing or the consuming transport. For the consuming one, also returns the
    /// producers the peer must be told about (late joiner).
    pub async fn create_transport(
        &mut self,
        producing: bool,
        consuming: bool,
        force_tcp: bool,
    ) -> Result<(WebRtcTransport, Vec<Announcement>), PeerError> {
        let direction = match (producing, consuming) {
            (true, false) => Direction::Send,
            (false, true) => Direction::Recv,
            _ => return Err(PeerError::AmbiguousTransport),
        };
        let slot = match direction {
            Direction::Send => &self.send_transport,
            Direction::Recv => &self.recv_transport,
        };
        if slot.is_some() {
            return Err(PeerError::TransportExists(role(direction)));
        }
        let prepared = match &mut self.prepared {
            Some(prepared) => prepared.take(direction, force_tcp).await,
            None => None,
        };
        let transport = match prepared {
            Some(transport) => transport,
            None => self.new_transport(force_tcp).await?,
        };
        self.watch_transport(&transport, direction);
        let announcements = match direction {
            Direction::Send => {
                self.send_transport = Some(transport.clone());
                Vec::new()
            }
            Direction::Recv => {
                self.recv_transport = Some(transport.clone());
                self.room.start_receiving(self.id)
            }
        };
        if self.send_transport.is_some() && self.recv_transport.is_some() {
            self.join.reach(JoinStage::TransportsCreated);
        }
        Ok((transport, announcements))
    }

    /// A transport made for this request: one with `forceTcp`, or when preparing one failed.
    async fn new_transport(&self, force_tcp: bool) -> Result<WebRtcTransport, PeerError> {
        let shared_port = self.room.placement.worker().webrtc_server.is_some();
        self.room
            .router
            .create_webrtc_transport(self.transport_options(force_tcp))
            .await
            .map_err(|error| {
                if shared_port {
                    PeerError::CreateSharedPortTransport(error)
                } else {
                    PeerError::CreateTransport(error)
                }
            })
    }

    /// Options for a transport on this peer's worker (its shared port in single-port mode).
    fn transport_options(&self, force_tcp: bool) -> WebRtcTransportOptions {
        let webrtc_server = self.room.placement.worker().webrtc_server.as_ref();
        self.settings.options(force_tcp, webrtc_server)
    }

    fn transport(&self, id: TransportId) -> Result<(&WebRtcTransport, Direction), PeerError> {
        [
            (&self.send_transport, Direction::Send),
            (&self.recv_transport, Direction::Recv),
        ]
        .into_iter()
        .find_map(|(t, d)| t.as_ref().filter(|t| t.id() == id).map(|t| (t, d)))
        .ok_or(PeerError::UnknownTransport(id))
    }

    pub async fn connect_transport(
        &mut self,
        id: TransportId,
        dtls_parameters: DtlsParameters,
    ) -> Result<(), PeerError> {
        let (transport, _) = self.transport(id)?;
        self.join.connect_requested();
        transport
            .connect(WebRtcTransportRemoteParameters { dtls_parameters })
            .await
            .map_err(PeerError::Connect)
    }

    /// Produces on the producing transport. A previous producer with the same media tag is
    /// closed first, in the worker, and the others are told: the client stopped it without
    /// telling us, and may reuse its MID and SSRCs for the new one.
    pub async fn produce(
        &mut self,
        transport_id: TransportId,
        kind: MediaKind,
        rtp_parameters: RtpParameters,
        media_tag: Arc<str>,
        app_data: Arc<RawValue>,
    ) -> Result<ProducerId, PeerError> {
        let (transport, direction) = self.transport(transport_id)?;
        if direction != Direction::Send {
            return Err(PeerError::NotProducingTransport(transport_id));
        }
        let transport = transport.clone();
        let user_id = self.user_id.clone().unwrap_or_else(|| "".into());

        let replaced: Vec<ProducerId> = self
            .producers
            .iter()
            .filter(|(_, (_, tag))| *tag == media_tag)
            .map(|(id, _)| *id)
            .collect();
        for id in replaced {
            if let Some(producer) = self.close_producer(id) {
                close_in_worker(producer, &transport).await?;
            }
        }

        let producer = transport
            .produce(ProducerOptions::new(kind, rtp_parameters))
            .await
            .map_err(PeerError::Produce)?;
        self.watch_producer(&producer, media_tag.clone());

        let announcement = Announcement {
            producer: producer.id(),
            user_id,
            kind,
            app_data,
        };
        self.room.announce(self.id, announcement, &producer);
        let id = producer.id();
        self.producers.insert(id, (producer, media_tag));
        Ok(id)
    }

    /// Forgets a producer and tells the others; returns our handle, whose drop closes it.
    fn close_producer(&mut self, id: ProducerId) -> Option<Producer> {
        let (producer, _) = self.producers.remove(&id)?;
        self.room.withdraw(self.id, id);
        Some(producer)
    }

    fn own_producer(&self, id: ProducerId) -> Result<&Producer, PeerError> {
        self.producers
            .get(&id)
            .map(|(p, _)| p)
            .ok_or(PeerError::NotOwnProducer(id))
    }

    /// Pauses or resumes one of the peer's producers; its consumers follow in the worker.
    pub async fn pause_producer(&self, id: ProducerId, pause: bool) -> Result<(), PeerError> {
        let producer = self.own_producer(id)?;
        let was_paused = producer.paused();
        if pause {
            producer.pause().await?;
        } else {
            producer.resume().await?;
        }
        if was_paused != pause {
            self.events.emit(ProducerPaused {
                peer: self.id,
                producer: id,
                kind: producer.kind(),
                paused: pause,
            });
        }
        Ok(())
    }

    /// Creates a paused consumer on the consuming transport; the caller resumes it with
    /// [`start_consumer`](Self::start_consumer) once the client has the answer. A producer this
    /// peer already consumes gives the existing consumer back instead of a second one.
    pub async fn consume(
        &mut self,
        producer_id: ProducerId,
        rtp_capabilities: RtpCapabilities,
    ) -> Result<Consumer, PeerError> {
        let transport = self
            .recv_transport
            .clone()
            .ok_or(PeerError::NoTransport("consuming"))?;
        if !self.room.is_consumable_by(self.id, producer_id) {
            return Err(PeerError::UnknownProducer(producer_id));
        }
        if !self
            .room
            .router
            .can_consume(&producer_id, &rtp_capabilities)
        {
            return Err(PeerError::CannotConsume(producer_id));
        }
        // Consuming the same producer again answers with the consumer it already has
        // (PROTOCOL.md, "Consuming a producer twice"): a retry of the module, not a second stream.
        if let Some(existing) = self
            .consumers
            .values()
            .find(|c| c.producer_id() == producer_id && !c.closed())
        {
            return Ok(existing.clone());
        }
        let mut options = ConsumerOptions::new(producer_id, rtp_capabilities);
        options.paused = true;
        let consumer = transport
            .consume(options)
            .await
            .map_err(PeerError::Consume)?;
        self.watch_consumer(&consumer);
        self.room
            .track_consumer(self.id, consumer.kind(), &consumer);
        self.consumers.insert(consumer.id(), consumer.clone());
        Ok(consumer)
    }

    /// Resumes a consumer created paused, asking for a key frame so video starts at once.
    pub async fn start_consumer(&self, id: ConsumerId) -> Result<(), PeerError> {
        let consumer = self
            .consumers
            .get(&id)
            .ok_or(PeerError::UnknownConsumer(id))?;
        consumer.resume().await?;
        self.consumer_paused(consumer, false);
        if consumer.kind() == MediaKind::Video {
            consumer.request_key_frame().await?;
        }
        Ok(())
    }

    pub async fn pause_consumer(&self, id: ConsumerId, pause: bool) -> Result<(), PeerError> {
        let consumer = self
            .consumers
            .get(&id)
            .ok_or(PeerError::UnknownConsumer(id))?;
        let was_paused = consumer.paused();
        if pause {
            consumer.pause().await?;
        } else {
            consumer.resume().await?;
        }
        if was_paused != pause {
            self.consumer_paused(consumer, pause);
        }
        Ok(())
    }

    /// Emitted here, where the peer asks for it, rather than from the consumer's pause and resume
    /// handlers: two handlers per consumer cost ~0.3 KiB each, nine consumers a peer in a room of
    /// ten. A producer's pause reaches its consumers as one [`ProducerPaused`] instead.
    fn consumer_paused(&self, consumer: &Consumer, paused: bool) {
        self.events.emit(ConsumerPaused {
            peer: self.id,
            consumer: consumer.id(),
            kind: consumer.kind(),
            paused,
        });
    }

    pub fn close_consumer(&mut self, id: ConsumerId) -> Result<(), PeerError> {
        self.consumers
            .remove(&id)
            .map(drop)
            .ok_or(PeerError::UnknownConsumer(id))
    }

    /// Forgets a consumer whose producer closed (mediasoup already closed it).
    pub fn forget_consumer(&mut self, id: ConsumerId) {
        self.consumers.remove(&id);
    }

    /// Leaves for `reason`: see the [`Drop`] below.
    pub fn leave(mut self, reason: LeaveReason) {
        self.leave_reason = reason;
    }
}

/// Leaving is dropping: however the connection's task ends (done, cancelled, panicking), the
/// peer's media objects close and `PeerLeft` is emitted once.
impl Drop for Peer {
    fn drop(&mut self) {
        self.join.on_leave();
        self.consumers.clear();
        let producers: Vec<ProducerId> = self.producers.keys().copied().collect();
        for id in producers {
            self.close_producer(id);
        }
        self.send_transport = None;
        self.recv_transport = None;
        self.events.emit(PeerLeft {
            peer: self.id,
            room: self.room.name.clone(),
            user_id: self.user_id.clone(),
            reason: self.leave_reason,
        });
    }
}

/// Drops our handle of `producer` and returns once the worker has closed it. mediasoup closes a
/// producer when its last handle goes (a stats round may hold one a little longer) and sends the
/// close to the worker from its own executor afterwards, with nothing to wait on; so: wait for
/// the close, then until `transport` no longer lists the producer.
async fn close_in_worker(producer: Producer, transport: &WebRtcTransport) -> Result<(), PeerError> {
    let id = producer.id();
    let (closed, on_close) = oneshot::channel();
    producer
        .on_close(move || {
            let _ = closed.send(());
        })
        .detach();
    drop(producer);
    // An error means the handler was dropped unrun: the producer is gone as well.
    let _ = on_close.await;
    while transport.dump().await?.producer_ids.contains(&id) {
        tokio::task::yield_now().await;
    }
    Ok(())
}

fn role(direction: Direction) -> &'static str {
    match direction {
        Direction::Send => "producing",
        Direction::Recv => "consuming",
    }
}
