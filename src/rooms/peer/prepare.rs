//! A peer's two transports, started as soon as it connects. The module asks for both right
//! after connecting (PROTOCOL.md, join order) and never with `forceTcp`, so the worker builds
//! them while the client's first requests travel, and `createWebRtcTransport` is answered
//! without waiting for a worker round trip (LiveKit likewise sets up a participant's transports
//! when it joins).

use mediasoup::prelude::*;
use tokio::task::JoinHandle;

use crate::workers::REQUEST_DEADLINE;

/// One transport being created for a request that has not come yet. Dropping it drops the
/// transport once the worker has made it (mediasoup closes on drop); the creation is not cut
/// short when the peer goes, since a transport the worker makes for a dropped request would stay
/// until its router closes. A failure is not kept: the request then creates its transport itself and reports it.
pub(super) struct Prepared(Option<JoinHandle<Option<WebRtcTransport>>>);

impl Prepared {
    /// Starts creating a transport with `options` (UDP and TCP, no `forceTcp`).
    pub(super) fn start(router: &Router, options: WebRtcTransportOptions) -> Self {
        let router = router.clone();
        Prepared(Some(tokio::spawn(async move {
            tokio::time::timeout(REQUEST_DEADLINE, router.create_webrtc_transport(options))
                .await
                .ok()?
                .ok()
        })))
    }

    /// The prepared transport, once the worker has made it, if the request asks for what was
    /// prepared (not `forceTcp`); `None` also when preparing it failed.
    pub(super) async fn take(&mut self, force_tcp: bool) -> Option<WebRtcTransport> {
        let handle = self.0.take()?;
        if force_tcp {
            return None;
        }
        handle.await.ok().flatten()
    }
}
