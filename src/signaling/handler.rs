//! Carries out one request on the peer and says what to answer, and what to do right after
//! answering (the duties PROTOCOL.md gives the server that the module never asks for).

use std::future::Future;
use std::sync::Arc;

use mediasoup::prelude::*;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::message::Request;
use crate::rooms::{Announcement, Peer, PeerError};
use crate::workers::REQUEST_DEADLINE;

/// A successful answer: the response's `type` and `data` (JSON, serialized once from a typed
/// value; the router's capabilities are shared by every peer of the room), then the follow-up.
pub struct Reply {
    pub kind: &'static str,
    pub data: Arc<RawValue>,
    pub then: FollowUp,
}

/// Work that must happen after the response has been sent.
pub enum FollowUp {
    None,
    /// A late joiner's consuming transport exists: tell it about every existing producer.
    Announce(Vec<Announcement>),
    /// The client has the consumer's parameters: let media flow.
    StartConsumer(ConsumerId),
}

fn reply(kind: &'static str, data: &impl Serialize) -> Reply {
    Reply {
        kind,
        data: json(data),
        then: FollowUp::None,
    }
}

/// `data` as JSON. Answers are the server's own typed values (ids, flags, mediasoup's
/// parameters), which always serialize.
fn json(data: &impl Serialize) -> Arc<RawValue> {
    serde_json::value::to_raw_value(data)
        .map(Arc::from)
        .unwrap_or_else(|_| Arc::from(RawValue::NULL.to_owned()))
}

/// `createWebRtcTransport`'s answer.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TransportCreated<'a> {
    id: TransportId,
    ice_parameters: &'a IceParameters,
    ice_candidates: &'a [IceCandidate],
    dtls_parameters: &'a RawValue,
}

/// A producer's `appData` as the others get it in `newProducer` (PROTOCOL.md): the client's own
/// fields with the producer's `rtpParameters` merged in, in place of any the client sent.
/// Written once here; every notification then carries the same text.
fn announced_app_data(
    mut client: Map<String, Value>,
    rtp_parameters: &RtpParameters,
) -> Arc<RawValue> {
    #[derive(Serialize)]
    struct AnnouncedAppData<'a> {
        #[serde(flatten)]
        client: &'a Map<String, Value>,
        #[serde(rename = "rtpParameters")]
        rtp_parameters: &'a RtpParameters,
    }
    client.remove("rtpParameters");
    json(&AnnouncedAppData {
        client: &client,
        rtp_parameters,
    })
}

/// `consume`'s answer.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Consumed<'a> {
    id: ConsumerId,
    producer_id: ProducerId,
    kind: MediaKind,
    rtp_parameters: &'a RtpParameters,
    producer_paused: bool,
}

#[derive(Serialize)]
struct Produced {
    id: ProducerId,
}

#[derive(Serialize)]
struct Connected {
    connected: bool,
}

#[derive(Serialize)]
struct Paused {
    paused: bool,
}

#[derive(Serialize)]
struct Closed {
    closed: bool,
}

/// Whether a failure of this request type counts against the join funnel.
pub fn is_join_request(kind: &str) -> bool {
    matches!(kind, "getRouterRtpCapabilities" | "createWebRtcTransport")
}

/// Carries out `request`, giving up when its worker does not answer in time.
pub async fn handle(peer: &mut Peer, request: Request) -> Result<Reply, PeerError> {
    within_deadline(carry_out(peer, request)).await
}

/// Gives up on `work` after [`REQUEST_DEADLINE`]. Dropping it midway leaves the peer consistent
/// (it records an object only once the worker has answered); an object the worker creates after
/// the deadline is closed with the room's router.
pub async fn within_deadline<T>(
    work: impl Future<Output = Result<T, PeerError>>,
) -> Result<T, PeerError> {
    tokio::time::timeout(REQUEST_DEADLINE, work)
        .await
        .unwrap_or(Err(PeerError::WorkerTimeout(REQUEST_DEADLINE)))
}

async fn carry_out(peer: &mut Peer, request: Request) -> Result<Reply, PeerError> {
    match request {
        Request::GetRouterRtpCapabilities => Ok(Reply {
            kind: "routerRtpCapabilities",
            data: peer.rtp_capabilities(json),
            then: FollowUp::None,
        }),
        Request::CreateWebRtcTransport {
            force_tcp,
            producing,
            consuming,
        } => {
            let (transport, announcements) = peer
                .create_transport(producing, consuming, force_tcp)
                .await?;
            let worker = peer.room.placement.worker();
            let dtls_parameters = worker.dtls_json(transport.dtls_parameters(), json);
            let data = json(&TransportCreated {
                id: transport.id(),
                ice_parameters: transport.ice_parameters(),
                ice_candidates: transport.ice_candidates(),
                dtls_parameters: &dtls_parameters,
            });
            Ok(Reply {
                kind: "transportCreated",
                data,
                then: FollowUp::Announce(announcements),
            })
        }
        Request::ConnectTransport {
            transport_id,
            dtls_parameters,
        } => {
            peer.connect_transport(transport_id, dtls_parameters)
                .await?;
            Ok(reply("transportConnected", &Connected { connected: true }))
        }
        Request::Produce {
            transport_id,
            kind,
            rtp_parameters,
            app_data,
        } => {
            let announced = announced_app_data(app_data.fields, &rtp_parameters);
            let id = peer
                .produce(
                    transport_id,
                    kind,
                    rtp_parameters,
                    app_data.media_tag,
                    announced,
                )
                .await?;
            Ok(reply("produced", &Produced { id }))
        }
        Request::Consume {
            producer_id,
            rtp_capabilities,
        } => {
            let consumer = peer.consume(producer_id, rtp_capabilities).await?;
            let data = json(&Consumed {
                id: consumer.id(),
                producer_id: consumer.producer_id(),
                kind: consumer.kind(),
                rtp_parameters: consumer.rtp_parameters(),
                producer_paused: consumer.producer_paused(),
            });
            Ok(Reply {
                kind: "consumed",
                data,
                then: FollowUp::StartConsumer(consumer.id()),
            })
        }
        Request::PauseProducer { producer_id } => {
            peer.pause_producer(producer_id, true).await?;
            Ok(reply("producerPaused", &Paused { paused: true }))
        }
        Request::ResumeProducer { producer_id } => {
            peer.pause_producer(producer_id, false).await?;
            Ok(reply("producerResumed", &Paused { paused: false }))
        }
        Request::ConsumerPause { consumer_id } => {
            peer.pause_consumer(consumer_id, true).await?;
            Ok(reply("consumerPaused", &Paused { paused: true }))
        }
        Request::ConsumerResume { consumer_id } => {
            peer.pause_consumer(consumer_id, false).await?;
            Ok(reply("consumerResumed", &Paused { paused: false }))
        }
        Request::ConsumerClose { consumer_id } => {
            peer.close_consumer(consumer_id)?;
            Ok(reply("consumerClosed", &Closed { closed: true }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announced_app_data_is_the_clients_with_the_producers_rtp_parameters() {
        let client =
            serde_json::json!({"mediaTag": "mic", "rtpParameters": "the client's", "x": [1]});
        let Value::Object(client) = client else {
            unreachable!()
        };
        let rtp_parameters = RtpParameters {
            mid: Some("0".into()),
            ..RtpParameters::default()
        };
        let text = announced_app_data(client, &rtp_parameters);
        assert_eq!(
            text.get().matches("rtpParameters").count(),
            1,
            "one rtpParameters key: {text}"
        );
        let parsed: Value = serde_json::from_str(text.get()).expect("JSON");
        assert_eq!(parsed["mediaTag"], "mic");
        assert_eq!(parsed["x"], serde_json::json!([1]));
        assert_eq!(
            parsed["rtpParameters"]["mid"], "0",
            "the producer's, not the client's: {text}"
        );
    }
}
