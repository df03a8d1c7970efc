//! The accept loop both listeners share (signaling + health, and metrics), on hyper.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use socket2::{SockRef, TcpKeepalive};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use crate::bus::RefusalReason;
use crate::shutdown::Shutdown;
use crate::signaling::admission::{Admission, Refusal};

pub type Body = Full<Bytes>;

/// Time a client gets to send its request head when nothing else says.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// TCP keepalive: a peer that vanished without a FIN is noticed by the kernel after about
/// 60 s + 6 × 10 s even when nothing is written to it.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_PROBES: u32 = 6;

/// Serves HTTP/1.1 (with upgrades) on `listener` until shutdown. With `admission`, each
/// connection must be admitted first, its requests carry its
/// [`ConnectionSlot`](crate::signaling::admission::ConnectionSlot) as an extension, and its
/// request head must arrive within the handshake timeout.
pub async fn serve<H, F>(
    listener: TcpListener,
    handler: H,
    mut shutdown: Shutdown,
    admission: Option<Arc<Admission>>,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let header_timeout = admission
        .as_ref()
        .map_or(HEADER_TIMEOUT, |a| a.limits().handshake_timeout);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.wait() => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, usually: back off instead of spinning.
                warn!(%error, "could not accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let keepalive = TcpKeepalive::new()
            .with_time(KEEPALIVE_IDLE)
            .with_interval(KEEPALIVE_INTERVAL)
            .with_retries(KEEPALIVE_PROBES);
        if let Err(error) = SockRef::from(&stream).set_tcp_keepalive(&keepalive) {
            debug!(%error, "could not turn on TCP keepalive");
        }
        // Replies and notifications are small messages sent as they happen: with Nagle's
        // algorithm, one sent while the previous is unacknowledged waits for the client's
        // delayed ACK (40 ms on Linux).
        if let Err(error) = stream.set_nodelay(true) {
            debug!(%error, "could not turn off Nagle's algorithm");
        }
        let slot = match admission.as_ref().map(|a| a.open(peer.ip())).transpose() {
            Ok(slot) => slot,
            Err(refusal) => {
                tokio::spawn(refuse(stream, refusal));
                continue;
            }
        };
        let (handler, admission) = (handler.clone(), admission.clone());
        tokio::spawn(async move {
            let service = service_fn(move |mut request: Request<Incoming>| {
                if let Some(slot) = &slot {
                    request.extensions_mut().insert(Arc::clone(slot));
                }
                let response = handler(request);
                async move { Ok::<_, Infallible>(response.await) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            if let Err(error) = connection.await {
                if let (true, Some(admission)) = (error.is_timeout(), admission) {
                    admission.refused(RefusalReason::HandshakeTimeout);
                }
                debug!(%error, "HTTP connection ended with an error");
            }
        });
    }
}

/// Answers a connection refused at accept with its status and closes it, without reading it.
async fn refuse(mut stream: TcpStream, refusal: Refusal) {
    let status = refusal.status();
    let body = refusal.message();
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\nRetry-After: 10\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    let answer = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await?;
        // Read what the client sent until it closes: closing with unread input would reset the
        // connection, and the client might lose the answer.
        let mut discard = [0u8; 1024];
        while stream.read(&mut discard).await? > 0 {}
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), answer).await;
}

pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    response(status, "text/plain; charset=utf-8", body)
}

pub fn json(status: StatusCode, body: &serde_json::Value) -> Response<Body> {
    response(status, "application/json", body.to_string())
}

pub fn response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}
