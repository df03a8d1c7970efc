//! One WebSocket = one peer: reads requests, answers them in order, relays what the room has to
//! say, and cleans up when the socket closes or the peer is replaced.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use futures_util::{Sink, SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use tracing::{debug, info_span, warn, Instrument};

use super::handler::{self, FollowUp};
use super::message::{self, ParseError};
use crate::bus::{LeaveReason, PeerId, RequestHandled, RoomName, SocketOpened};
use crate::rooms::{session_span, CloseSignal, Peer, PeerCommand, PeerLink, Rooms};
use crate::shutdown::Shutdown;

/// Room notifications queued for one peer before it counts as too slow.
const COMMAND_QUEUE: usize = 512;
/// Largest text frame accepted (the biggest legitimate request, `consume` with Chrome's RTP
/// capabilities, is about 10 KiB). Larger frames close the socket with code 1009.
pub const MAX_FRAME_BYTES: usize = 256 * 1024;

/// What every connection shares.
pub struct Signaling {
    pub rooms: Arc<Rooms>,
    next_peer: AtomicU64,
}

impl Signaling {
    pub fn new(rooms: Arc<Rooms>) -> Self {
        Signaling {
            rooms,
            next_peer: AtomicU64::new(1),
        }
    }
}

type WsSink<S> = futures_util::stream::SplitSink<WebSocketStream<S>, Message>;

/// The connection ends: the socket is gone or must be closed.
struct Closed;

async fn send<S>(sink: &mut WsSink<S>, text: String) -> Result<(), Closed>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    sink.send(Message::text(text)).await.map_err(|_| Closed)
}

async fn close<K>(sink: &mut K, code: CloseCode, reason: &str)
where
    K: Sink<Message> + Unpin,
{
    // A close frame is a control frame: its reason must fit in 123 bytes (RFC 6455, 5.5).
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let frame = CloseFrame {
        code,
        reason: reason[..end].into(),
    };
    // The peer may be gone already; nothing more to do then.
    let _ = sink.send(Message::Close(Some(frame))).await;
    let _ = sink.close().await;
}

/// Serves one peer of room `room_name` until its socket closes.
pub async fn serve<S>(
    ws: WebSocketStream<S>,
    room_name: RoomName,
    signaling: Arc<Signaling>,
    mut shutdown: Shutdown,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let peer_id = PeerId(signaling.next_peer.fetch_add(1, Ordering::Relaxed));
    let (commands, mut command_queue) = mpsc::channel(COMMAND_QUEUE);
    let close_signal = Arc::new(CloseSignal::default());
    let link = PeerLink {
        commands: commands.clone(),
        close: close_signal.clone(),
    };
    let (mut sink, mut stream) = ws.split();

    let rooms = &signaling.rooms;
    let room = match rooms.join(room_name.clone(), peer_id, link).await {
        Ok(room) => room,
        Err(error) => {
            warn!(room = %room_name, %error, "could not open the room");
            close(&mut sink, CloseCode::Error, &error.to_string()).await;
            return;
        }
    };
    let span = session_span(&room, peer_id);
    let bus = rooms.bus().clone();
    bus.emit(
        &span,
        SocketOpened {
            peer: peer_id,
            room: room_name,
        },
    );
    let mut peer = Peer::new(
        peer_id,
        room.clone(),
        span,
        bus,
        rooms.transport_settings.clone(),
        commands,
    );

    let reason = loop {
        tokio::select! {
            reason = close_signal.closed() => break reason,
            () = shutdown.wait() => break LeaveReason::ServerShutdown,
            Some(command) = command_queue.recv() => {
                let text = match command {
                    PeerCommand::NewProducer(announcement) => message::new_producer(&announcement),
                    PeerCommand::ProducerClosed(producer) => message::producer_closed(producer),
                    PeerCommand::ConsumerGone(consumer) => {
                        peer.forget_consumer(consumer);
                        continue;
                    }
                };
                if send(&mut sink, text).await.is_err() {
                    break LeaveReason::Disconnected;
                }
            }
            frame = stream.next() => {
                let outcome = match frame {
                    Some(Ok(Message::Text(text))) => on_request(&mut peer, &mut sink, &text).await,
                    Some(Ok(Message::Binary(_))) => send(
                        &mut sink,
                        message::error_frame("binary frames are not part of the protocol: send JSON text frames"),
                    ).await,
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => Ok(()),
                    Some(Err(WsError::Capacity(error))) => {
                        debug!(parent: peer.span(), %error, "frame too large");
                        let reason = format!("frame too large: the limit is {MAX_FRAME_BYTES} bytes");
                        close(&mut sink, CloseCode::Size, &reason).await;
                        Err(Closed)
                    }
                    Some(Ok(Message::Close(_)) | Err(_)) | None => Err(Closed),
                };
                if outcome.is_err() {
                    break LeaveReason::Disconnected;
                }
            }
        }
    };

    match reason {
        LeaveReason::Disconnected => {}
        LeaveReason::Replaced => {
            close(
                &mut sink,
                CloseCode::Library(4000),
                "replaced by a newer connection of the same user",
            )
            .await
        }
        LeaveReason::TooSlow => {
            close(
                &mut sink,
                CloseCode::Policy,
                "too slow: the connection did not read its notifications",
            )
            .await
        }
        LeaveReason::ServerShutdown => {
            close(&mut sink, CloseCode::Away, "server shutting down").await
        }
    }
    peer.leave(reason);
    rooms.leave(&room, peer_id).await;
}

/// Answers one text frame; `Err` when the socket is gone.
async fn on_request<S>(peer: &mut Peer, sink: &mut WsSink<S>, text: &str) -> Result<(), Closed>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let started = Instant::now();
    let (kind, ok) = match message::parse(text) {
        Err(ParseError::Unanswerable(error)) => {
            send(sink, message::error_frame(&error)).await?;
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
            send(sink, message::error_response(&request_id, &error)).await?;
            (kind.unwrap_or("invalid"), false)
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
                    let response = message::response(reply.kind, &envelope.request_id, reply.data);
                    send(sink, response).await?;
                    follow_up(peer, sink, reply.then).instrument(span).await?;
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
                    send(sink, response).await?;
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

async fn follow_up<S>(peer: &mut Peer, sink: &mut WsSink<S>, then: FollowUp) -> Result<(), Closed>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match then {
        FollowUp::None => {}
        FollowUp::Announce(announcements) => {
            for announcement in &announcements {
                send(sink, message::new_producer(announcement)).await?;
            }
        }
        FollowUp::StartConsumer(consumer) => {
            if let Err(error) = handler::within_deadline(peer.start_consumer(consumer)).await {
                warn!(%consumer, %error, "could not start the consumer");
            }
        }
    }
    Ok(())
}
