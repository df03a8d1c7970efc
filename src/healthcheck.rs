//! `mediasoup-server healthcheck`: asks the running server's `/readyz` and exits 0 when it is
//! ready. For container health checks, where the image has no curl.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::header::{HeaderValue, HOST};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Longer than a healthy server ever takes, shorter than Docker's default check timeout (30 s).
const TIMEOUT: Duration = Duration::from_secs(5);

/// Why the server is not (known to be) ready.
#[derive(Debug, thiserror::Error)]
pub enum Unhealthy {
    #[error("cannot reach the server at {addr}: {source} (is it running, and is MEDIASOUP_LISTEN_ADDR the same as the server's?)")]
    Unreachable {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the server at {addr} did not answer /readyz within {}s", TIMEOUT.as_secs())]
    TimedOut { addr: SocketAddr },
    #[error("HTTP exchange with {addr} failed: {source}")]
    Http {
        addr: SocketAddr,
        source: hyper::Error,
    },
    #[error("not ready ({status}): {body}")]
    NotReady { status: StatusCode, body: String },
}

/// The address to ask: the signaling listener, with a wildcard address replaced by loopback.
pub fn target(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// GET /readyz on `addr`; Ok with the body when it answers 200.
pub async fn check(addr: SocketAddr) -> Result<String, Unhealthy> {
    match tokio::time::timeout(TIMEOUT, ask(addr)).await {
        Ok(result) => result,
        Err(_) => Err(Unhealthy::TimedOut { addr }),
    }
}

async fn ask(addr: SocketAddr) -> Result<String, Unhealthy> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|source| Unhealthy::Unreachable { addr, source })?;
    let http = |source| Unhealthy::Http { addr, source };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    tokio::spawn(connection);
    let mut request = Request::new(Empty::<Bytes>::new());
    *request.uri_mut() = Uri::from_static("/readyz");
    request
        .headers_mut()
        .insert(HOST, HeaderValue::from_static("localhost"));
    let response = sender.send_request(request).await.map_err(http)?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(http)?
        .to_bytes();
    let body = String::from_utf8_lossy(&body).trim().to_owned();
    if status == StatusCode::OK {
        Ok(body)
    } else {
        Err(Unhealthy::NotReady { status, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asks_loopback_when_the_server_listens_on_every_address() {
        let v4: SocketAddr = "0.0.0.0:3000".parse().unwrap();
        let v6: SocketAddr = "[::]:3000".parse().unwrap();
        let given: SocketAddr = "10.0.0.5:4000".parse().unwrap();
        assert_eq!(target(v4), "127.0.0.1:3000".parse().unwrap());
        assert_eq!(target(v6), "[::1]:3000".parse().unwrap());
        assert_eq!(target(given), given);
    }
}
