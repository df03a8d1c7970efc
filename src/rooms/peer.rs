//! One peer's media: its two transports, its producers and its consumers. Owned by the peer's
//! connection; everything closes when the peer is dropped (mediasoup closes on drop).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mediasoup::prelude::*;
use mediasoup::types::data_structures::{DtlsState, IceState};
use mediasoup::worker::RequestError;
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tracing::Span;

use super::room::{Announcement, PeerCommand, Room};
use super::TransportSettings;
use crate::bus::{
    Bus, ConsumerClosed, ConsumerCreated, ConsumerLayersChanged, ConsumerPaused, ConsumerScored,
    Direction, DtlsStateChanged, Event, IceStateChanged, IceTupleSelected, JoinFailed, JoinFailure,
    JoinProgressed, JoinStage, LeaveReason, PeerId, PeerJoined, PeerLeft, PeerReplaced,
    ProducerClosed, ProducerCreated, ProducerPaused, ProducerScored, TransportClosed,
    TransportCreated,
};

/// Why a peer's request could not be carried out; the message goes back to the client.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("userId {got:?} does not match {expected:?}, the userId this connection started with; open a new connection to change user")]
    UserIdChanged { expected: Arc<str>, got: String },
    #[error("this connection already has a {0} transport; a peer has one producing and one consuming transport")]
    TransportExists(&'static str),
    #[error("no {0} transport yet: send createWebRtcTransport with {0}: true first")]
    NoTransport(&'static str),
    #[error("exactly one of producing and consuming must be true")]
    AmbiguousTransport,
    #[error("no transport {0} on this connection")]
    UnknownTransport(TransportId),
    #[error("transport {0} is not this connection's producing transport; produce on the transport created with producing: true")]
    NotProducingTransport(TransportId),
    #[error("no producer {0} in this room")]
    UnknownProducer(ProducerId),
    #[error("no producer {0} of this connection")]
    NotOwnProducer(ProducerId),
    #[error("no consumer {0} of this connection")]
    UnknownConsumer(ConsumerId),
    #[error(
        "cannot consume producer {0} with the given rtpCapabilities: they share no codec with it"
    )]
    CannotConsume(ProducerId),
    #[error("could not create the transport: {0}")]
    CreateTransport(String),
    #[error("could not connect the transport: {0}")]
    Connect(String),
    #[error("could not produce: {0}")]
    Produce(String),
    #[error("could not consume: {0}")]
    Consume(String),
    #[error("the media server did not carry out the request: {0}")]
    Worker(#[from] RequestError),
    #[error("the media server did not answer within {0:?}: try again later")]
    WorkerTimeout(Duration),
}

impl PeerError {
    /// The server, not the request, was at fault.
    pub fn is_server_side(&self) -> bool {
        matches!(
            self,
            PeerError::CreateTransport(_) | PeerError::Worker(_) | PeerError::WorkerTimeout(_)
        )
    }
}

/// Which join stages a peer reached; shared with mediasoup's event handlers.
#[derive(Default)]
struct JoinState {
    reached: Vec<JoinStage>,
    connect_requested: bool,
    failed: bool,
}

/// Publishes events as part of one peer's session; cheap to clone into mediasoup's handlers.
#[derive(Clone)]
struct SessionEvents {
    bus: Bus,
    span: Span,
}

impl SessionEvents {
    fn emit(&self, event: impl Into<Event>) {
        self.bus.emit(&self.span, event);
    }
}

#[derive(Clone)]
struct JoinTracker {
    state: Arc<Mutex<JoinState>>,
    peer: PeerId,
    events: SessionEvents,
}

impl JoinTracker {
    fn with<R>(&self, f: impl FnOnce(&mut JoinState) -> R) -> R {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn reach(&self, stage: JoinStage) {
        let new = self.with(|s| {
            let new = !s.reached.contains(&stage);
            if new {
                s.reached.push(stage);
            }
            new
        });
        if new {
            let peer = self.peer;
            self.events.emit(JoinProgressed { peer, stage });
        }
    }

    fn has(&self, stage: JoinStage) -> bool {
        self.with(|s| s.reached.contains(&stage))
    }

    /// Counts a failure, once per peer, unless the peer got through.
    fn fail(&self, reason: JoinFailure) {
        let report = self.with(|s| {
            let report = !s.failed && !s.reached.contains(&JoinStage::DtlsConnected);
            s.failed |= report;
            report
        });
        if report {
            let peer = self.peer;
            self.events.emit(JoinFailed { peer, reason });
        }
    }

    /// Called when the peer leaves: a join that stopped half-way counts as failed.
    fn on_leave(&self) {
        let (connect_requested, transports) = self.with(|s| {
            (
                s.connect_requested,
                s.reached.contains(&JoinStage::TransportsCreated),
            )
        });
        if !transports {
            self.fail(JoinFailure::DisconnectedEarly);
        } else if connect_requested && !self.has(JoinStage::IceConnected) {
            self.fail(JoinFailure::IceFailed);
        } else if connect_requested {
            self.fail(JoinFailure::DtlsFailed);
        }
    }
}

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
    producers: HashMap<ProducerId, (Producer, Arc<str>)>,
    consumers: HashMap<ConsumerId, Consumer>,
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
        let events = SessionEvents { bus, span };
        let join = JoinTracker {
            state: Arc::default(),
            peer: id,
            events: events.clone(),
        };
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
            producers: HashMap::new(),
            consumers: HashMap::new(),
        }
    }

    pub fn span(&self) -> &Span {
        &self.events.span
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
        self.events.span.record("user_id", &*user_id);
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

    pub fn rtp_capabilities(&self) -> RtpCapabilitiesFinalized {
        self.join.reach(JoinStage::RtpCapabilities);
        self.room.router.rtp_capabilities().clone()
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
        let transport = self
            .room
            .router
            .create_webrtc_transport(self.transport_options(force_tcp))
            .await
            .map_err(|e| {
                let error = e.to_string();
                PeerError::CreateTransport(if error.contains("no more available ports") {
                    format!("{error}; the server's media port range is full (an operator can widen MEDIASOUP_RTC_MIN_PORT..MEDIASOUP_RTC_MAX_PORT)")
                } else {
                    error
                })
            })?;
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

    fn transport_options(&self, force_tcp: bool) -> WebRtcTransportOptions {
        let listen = |protocol| ListenInfo {
            protocol,
            ip: self.settings.listen_ip,
            announced_address: self.settings.announced_address.clone(),
            expose_internal_ip: false,
            port: None,
            port_range: Some(self.settings.rtc_ports.clone()),
            flags: None,
            send_buffer_size: None,
            recv_buffer_size: None,
        };
        let infos = if force_tcp {
            WebRtcTransportListenInfos::new(listen(Protocol::Tcp))
        } else {
            WebRtcTransportListenInfos::new(listen(Protocol::Udp)).insert(listen(Protocol::Tcp))
        };
        let mut options = WebRtcTransportOptions::new(infos);
        options.enable_udp = !force_tcp;
        options.enable_tcp = true;
        options.prefer_udp = true;
        options.initial_available_outgoing_bitrate = INITIAL_OUTGOING_BITRATE;
        options.max_incoming_bitrate = Some(u64::from(self.settings.max_incoming_bitrate));
        options
    }

    fn watch_transport(&self, transport: &WebRtcTransport, direction: Direction) {
        let (peer, worker, id) = (self.id, self.room.worker_index(), transport.id());
        let created = Instant::now();
        self.events.emit(TransportCreated {
            peer,
            worker,
            transport: id,
            direction,
        });
        let (events, join) = (self.events.clone(), self.join.clone());
        transport
            .on_ice_state_change(move |state| {
                if matches!(state, IceState::Connected | IceState::Completed) {
                    join.reach(JoinStage::IceConnected);
                }
                let event = IceStateChanged {
                    peer,
                    transport: id,
                    state,
                };
                events.emit(event);
            })
            .detach();
        let (events, join) = (self.events.clone(), self.join.clone());
        transport
            .on_dtls_state_change(move |state| {
                match state {
                    DtlsState::Connected => join.reach(JoinStage::DtlsConnected),
                    DtlsState::Failed => join.fail(JoinFailure::DtlsFailed),
                    _ => {}
                }
                let elapsed = created.elapsed();
                let event = DtlsStateChanged {
                    peer,
                    transport: id,
                    state,
                    elapsed,
                };
                events.emit(event);
            })
            .detach();
        let events = self.events.clone();
        transport
            .on_ice_selected_tuple_change(move |tuple| {
                let event = IceTupleSelected {
                    peer,
                    transport: id,
                    protocol: tuple.protocol(),
                    remote: tuple
                        .remote_ip()
                        .zip(tuple.remote_port())
                        .map(SocketAddr::from),
                };
                events.emit(event);
            })
            .detach();
        let events = self.events.clone();
        transport
            .on_close(Box::new(move || {
                let event = TransportClosed {
                    peer,
                    worker,
                    transport: id,
                    direction,
                };
                events.emit(event);
            }))
            .detach();
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
        self.join.with(|s| s.connect_requested = true);
        transport
            .connect(WebRtcTransportRemoteParameters { dtls_parameters })
            .await
            .map_err(|e| PeerError::Connect(e.to_string()))
    }

    /// Produces on the producing transport. A previous producer with the same media tag is closed
    /// first (the client stopped it without telling us) and the others are told.
    pub async fn produce(
        &mut self,
        transport_id: TransportId,
        kind: MediaKind,
        rtp_parameters: RtpParameters,
        media_tag: Arc<str>,
        mut app_data: Map<String, Value>,
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
            self.close_producer(id);
        }

        let producer = transport
            .produce(ProducerOptions::new(kind, rtp_parameters.clone()))
            .await
            .map_err(|e| PeerError::Produce(e.to_string()))?;
        self.watch_producer(&producer, media_tag.clone());

        app_data.insert(
            "rtpParameters".into(),
            serde_json::to_value(&rtp_parameters).unwrap_or(Value::Null),
        );
        let announcement = Announcement {
            producer: producer.id(),
            user_id,
            kind,
            app_data: Value::Object(app_data),
        };
        self.room.announce(self.id, announcement, &producer);
        let id = producer.id();
        self.producers.insert(id, (producer, media_tag));
        Ok(id)
    }

    fn watch_producer(&self, producer: &Producer, media_tag: Arc<str>) {
        let (peer, id, kind) = (self.id, producer.id(), producer.kind());
        self.events.emit(ProducerCreated {
            peer,
            producer: id,
            kind,
            media_tag,
        });
        let (events, join) = (self.events.clone(), self.join.clone());
        producer
            .on_score(move |scores| {
                let score = scores.iter().map(|s| s.score).max().unwrap_or(0);
                if score > 0 {
                    join.reach(JoinStage::FirstMedia);
                }
                let event = ProducerScored {
                    peer,
                    producer: id,
                    kind,
                    score,
                };
                events.emit(event);
            })
            .detach();
        for paused in [true, false] {
            let events = self.events.clone();
            let emit = move || {
                let event = ProducerPaused {
                    peer,
                    producer: id,
                    kind,
                    paused,
                };
                events.emit(event);
            };
            if paused {
                producer.on_pause(emit).detach();
            } else {
                producer.on_resume(emit).detach();
            }
        }
        let events = self.events.clone();
        producer
            .on_close(move || {
                let event = ProducerClosed {
                    peer,
                    producer: id,
                    kind,
                };
                events.emit(event);
            })
            .detach();
    }

    fn close_producer(&mut self, id: ProducerId) {
        if self.producers.remove(&id).is_some() {
            self.room.withdraw(self.id, id);
        }
    }

    fn own_producer(&self, id: ProducerId) -> Result<&Producer, PeerError> {
        self.producers
            .get(&id)
            .map(|(p, _)| p)
            .ok_or(PeerError::NotOwnProducer(id))
    }

    pub async fn pause_producer(&self, id: ProducerId, pause: bool) -> Result<(), PeerError> {
        let producer = self.own_producer(id)?;
        if pause {
            producer.pause().await?;
        } else {
            producer.resume().await?;
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
            .map_err(|e| PeerError::Consume(e.to_string()))?;
        self.watch_consumer(&consumer);
        self.room
            .track_consumer(self.id, consumer.kind(), &consumer);
        self.consumers.insert(consumer.id(), consumer.clone());
        Ok(consumer)
    }

    fn watch_consumer(&self, consumer: &Consumer) {
        let (peer, id, kind) = (self.id, consumer.id(), consumer.kind());
        self.events.emit(ConsumerCreated {
            peer,
            consumer: id,
            producer: consumer.producer_id(),
            kind,
        });
        let (events, join) = (self.events.clone(), self.join.clone());
        consumer
            .on_score(move |score| {
                if score.score > 0 {
                    join.reach(JoinStage::FirstMedia);
                }
                let event = ConsumerScored {
                    peer,
                    consumer: id,
                    kind,
                    score: score.score,
                    producer_score: score.producer_score,
                };
                events.emit(event);
            })
            .detach();
        let events = self.events.clone();
        consumer
            .on_layers_change(move |layers| {
                let event = ConsumerLayersChanged {
                    peer,
                    consumer: id,
                    spatial: layers.as_ref().map(|l| l.spatial_layer),
                    temporal: layers.as_ref().and_then(|l| l.temporal_layer),
                };
                events.emit(event);
            })
            .detach();
        for paused in [true, false] {
            let events = self.events.clone();
            let emit = move || {
                let event = ConsumerPaused {
                    peer,
                    consumer: id,
                    kind,
                    paused,
                };
                events.emit(event);
            };
            if paused {
                consumer.on_pause(emit).detach();
            } else {
                consumer.on_resume(emit).detach();
            }
        }
        let commands = self.commands.clone();
        consumer
            .on_producer_close(move || {
                // If the queue is full the connection is being closed anyway.
                let _ = commands.try_send(PeerCommand::ConsumerGone(id));
            })
            .detach();
        let events = self.events.clone();
        consumer
            .on_close(move || {
                let event = ConsumerClosed {
                    peer,
                    consumer: id,
                    kind,
                };
                events.emit(event);
            })
            .detach();
    }

    /// Resumes a consumer created paused, asking for a key frame so video starts at once.
    pub async fn start_consumer(&self, id: ConsumerId) -> Result<(), PeerError> {
        let consumer = self
            .consumers
            .get(&id)
            .ok_or(PeerError::UnknownConsumer(id))?;
        consumer.resume().await?;
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
        if pause {
            consumer.pause().await?;
        } else {
            consumer.resume().await?;
        }
        Ok(())
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

    /// Closes everything of the peer and says why it left.
    pub fn leave(mut self, reason: LeaveReason) {
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
            reason,
        });
    }
}

fn role(direction: Direction) -> &'static str {
    match direction {
        Direction::Send => "producing",
        Direction::Recv => "consuming",
    }
}

/// What a new transport may send before bandwidth estimation has measured the path (bps).
const INITIAL_OUTGOING_BITRATE: u64 = 1_000_000;
