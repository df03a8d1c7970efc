//! What the workers report about one peer's media objects, turned into bus events; and each
//! object's census guard, which its close handler owns so that the count ends with the object.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use mediasoup::prelude::*;
use mediasoup::types::data_structures::{DtlsState, IceState};

use super::Peer;
use crate::bus::{
    ConsumerClosed, ConsumerCreated, ConsumerLayersChanged, ConsumerScored, Direction,
    DtlsStateChanged, IceStateChanged, IceTupleSelected, JoinFailure, JoinStage, Object,
    ProducerClosed, ProducerCreated, ProducerScored, TransportClosed, TransportCreated,
};
use crate::rooms::room::PeerCommand;

impl Peer {
    pub(super) fn watch_transport(&self, transport: &WebRtcTransport, direction: Direction) {
        let (peer, worker, id) = (self.id, self.room.worker_index(), transport.id());
        let created = Instant::now();
        let counted = self
            .events
            .bus()
            .census()
            .count(Object::Transport { direction, worker });
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
                drop(counted);
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

    pub(super) fn watch_producer(&self, producer: &Producer, media_tag: Arc<str>) {
        let (peer, id, kind) = (self.id, producer.id(), producer.kind());
        let counted = self.events.bus().census().count(Object::Producer(kind));
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
        // The worker reports a producer's score once, when its first RTP arrives (and again only
        // when it changes), which can be before the handler above exists: the browser sends as
        // soon as its offer is set, before it has our answer. mediasoup keeps the last score (empty
        // until RTP arrives), so read it once the handler is in place.
        if producer.score().iter().any(|s| s.score > 0) {
            self.join.reach(JoinStage::FirstMedia);
        }
        let events = self.events.clone();
        producer
            .on_close(move || {
                drop(counted);
                let event = ProducerClosed {
                    peer,
                    producer: id,
                    kind,
                };
                events.emit(event);
            })
            .detach();
    }

    pub(super) fn watch_consumer(&self, consumer: &Consumer) {
        let (peer, id, kind) = (self.id, consumer.id(), consumer.kind());
        let counted = self.events.bus().census().count(Object::Consumer(kind));
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
        // Layers are simulcast's and SVC's: an audio consumer never reports any, and a handler
        // costs memory per consumer (nine per peer in a room of ten).
        if kind == MediaKind::Video {
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
                drop(counted);
                let event = ConsumerClosed {
                    peer,
                    consumer: id,
                    kind,
                };
                events.emit(event);
            })
            .detach();
    }
}
