//! A peer's two transports, made ahead of its requests. The module asks for the router's
//! capabilities and then, without `forceTcp`, for both transports (PROTOCOL.md, join order), so
//! once it has asked for the capabilities the worker builds the transports while the answer
//! travels and the browser loads it, and `createWebRtcTransport` is answered without waiting
//! for a worker round trip (LiveKit likewise sets up a participant's transports when it joins).
//! A connection that never asks for the capabilities costs no transports.

use mediasoup::prelude::*;
use tokio::task::JoinHandle;
use tracing::{debug, Instrument};

use crate::bus::Direction;
use crate::workers::REQUEST_DEADLINE;

/// A transport being made for a request that has not come yet; `None` when making it failed
/// (the request then makes its own, which reports the error if there still is one).
type Making = JoinHandle<Option<WebRtcTransport>>;

/// The producing and the consuming transport, until the peer asks for them. Dropping one drops
/// its transport once the worker has made it (mediasoup closes on drop): the making is not cut
/// short when the peer goes, since a transport the worker makes for a dropped request would stay
/// until its router closes.
pub(super) struct Prepared {
    send: Option<Making>,
    recv: Option<Making>,
}

impl Prepared {
    /// Starts making both, with `options` (UDP and TCP: no `forceTcp`).
    pub(super) fn start(router: &Router, options: WebRtcTransportOptions) -> Self {
        let make = |options| {
            let router = router.clone();
            let making = async move {
                let made =
                    tokio::time::timeout(REQUEST_DEADLINE, router.create_webrtc_transport(options));
                match made.await {
                    Ok(Ok(transport)) => Some(transport),
                    Ok(Err(error)) => {
                        debug!(%error, "could not make a transport ahead; its request will try");
                        None
                    }
                    Err(_) => {
                        debug!("the worker did not make a transport ahead in time");
                        None
                    }
                }
            };
            tokio::spawn(making.in_current_span())
        };
        Prepared {
            send: Some(make(options.clone())),
            recv: Some(make(options)),
        }
    }

    /// The transport prepared for `direction`, once the worker has made it, if the request asks
    /// for what was prepared (not `forceTcp`); at most once per direction.
    pub(super) async fn take(
        &mut self,
        direction: Direction,
        force_tcp: bool,
    ) -> Option<WebRtcTransport> {
        let making = match direction {
            Direction::Send => self.send.take(),
            Direction::Recv => self.recv.take(),
        }?;
        if force_tcp {
            return None;
        }
        making.await.ok().flatten()
    }
}
