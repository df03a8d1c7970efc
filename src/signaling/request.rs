//! Answering one request of a peer: parsing, the checks a request passes before it is carried
//! out (appData size, who holds the user id), the answer and what follows it.

use std::time::{Duration, Instant};

use tracing::{debug, info_span, warn, Instrument};

use super::handler::{self, FollowUp};
use super::message::{self, ParseError, Request};
use super::outbox::{Outbox, TooSlow};
use crate::bus::{RefusalReason, Refused, RequestHandled};
use crate::config::Limits;
use crate::rooms::{CloseSignal, Peer, Room};

/// How long a connection claiming a user id waits for the connection that holds it to answer a
/// ping: an answer means the holder is alive and keeps the id; silence means it is gone (a
/// reload, a dropped network) and the newcomer takes over.
const TAKEOVER_PROBE: Duration = Duration::from_secs(2);
/// What handling a request needs of its connection.
pub struct Session<'a> {
    pub outbox: &'a Outbox,
    pub close: &'a CloseSignal,
    pub limits: &'a Limits,
    pub room: &'a Room,
}

/// Whether another live connection holds `user_id`: it is asked to answer a ping first, and
/// only a silent one gives the id up.
async fn user_id_taken(peer: &Peer, room: &Room, user_id: &str) -> bool {
    match room.holder_of(user_id, peer.id) {
        Some(holder) => holder.liveness.answers_within(TAKEOVER_PROBE).await,
        None => false,
    }
}

/// Answers one text frame: queues the answer (and what follows it) in the outbox.
pub async fn on_request(peer: &mut Peer, session: &Session<'_>, text: &str) -> Result<(), TooSlow> {
    let (outbox, limits) = (session.outbox, session.limits);
    let started = Instant::now();
    let (kind, ok) = match message::parse(text) {
        Err(ParseError::Unanswerable(error)) => {
            outbox.push(message::error_frame(&error))?;
            ("invalid", false)
        }
        Err(ParseError::Invalid {
            request_id,
            kind,
            error,
        }) => {
            if kind.is_some_and(handler::is_join_request) {
                peer.join_request_failed(false);
            }
            outbox.push(message::error_response(&request_id, &error))?;
            (kind.unwrap_or("invalid"), false)
        }
        Ok(envelope) if app_data_too_large(&envelope.request, limits) => {
            peer.emit(Refused {
                reason: RefusalReason::AppDataSize,
            });
            let error = format!(
                "appData is too large: at most {} bytes of JSON",
                limits.max_app_data_bytes
            );
            outbox.push(message::error_response(&envelope.request_id, &error))?;
            (envelope.kind, false)
        }
        Ok(envelope) if user_id_taken(peer, session.room, &envelope.user_id).await => {
            peer.emit(Refused {
                reason: RefusalReason::UserIdTaken,
            });
            let error = format!(
                "user {:?} is connected to this room already, from a connection that still answers: close that one first (another tab?)",
                envelope.user_id
            );
            outbox.push(message::error_response(&envelope.request_id, &error))?;
            (envelope.kind, false)
        }
        Ok(envelope) => {
            let span = info_span!(
                parent: peer.span(),
                "signaling_request",
                r#type = envelope.kind,
                request_id = %envelope.request_id,
                outcome = tracing::field::Empty,
            );
            let kind = envelope.kind;
            let result = async {
                peer.identify(&envelope.user_id)?;
                handler::handle(peer, envelope.request).await
            }
            .instrument(span.clone())
            .await;
            span.record("outcome", if result.is_ok() { "ok" } else { "error" });
            match result {
                Ok(reply) => {
                    let response = message::response(reply.kind, &envelope.request_id, &reply.data);
                    outbox.push(response)?;
                    follow_up(peer, outbox, reply.then).instrument(span).await;
                    (kind, true)
                }
                Err(error) => {
                    if error.is_server_side() {
                        warn!(parent: &span, %error, "request failed on the server side");
                    } else {
                        debug!(parent: &span, %error, "request refused");
                    }
                    if handler::is_join_request(kind) {
                        peer.join_request_failed(error.is_server_side());
                    }
                    let response =
                        message::error_response(&envelope.request_id, &error.to_string());
                    outbox.push(response)?;
                    (kind, false)
                }
            }
        }
    };
    let event = RequestHandled {
        peer: peer.id,
        request: kind,
        ok,
        duration: started.elapsed(),
    };
    peer.emit(event);
    Ok(())
}

/// A `produce` whose appData is over the limit: it would be copied to every peer of the room.
fn app_data_too_large(request: &Request, limits: &Limits) -> bool {
    match request {
        Request::Produce { app_data, .. } => serde_json::to_string(&app_data.fields)
            .map_or(true, |json| json.len() > limits.max_app_data_bytes),
        _ => false,
    }
}

async fn follow_up(peer: &mut Peer, outbox: &Outbox, then: FollowUp) {
    match then {
        FollowUp::None => {}
        FollowUp::Announce(announcements) => {
            outbox.push_all(announcements.iter().map(message::new_producer));
        }
        FollowUp::StartConsumer(consumer) => {
            if let Err(error) = handler::within_deadline(peer.start_consumer(consumer)).await {
                warn!(%consumer, %error, "could not start the consumer");
            }
        }
    }
}
