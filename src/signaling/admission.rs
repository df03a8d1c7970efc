//! Who may open a WebSocket, and how many: the connection limits (in total and per client
//! address), the Origin allowlist and room tokens. Decided before the upgrade, so that a refused
//! client costs one short HTTP answer and nothing else. Every refusal is a [`Refused`] event.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use hmac::{Hmac, KeyInit, Mac};
use hyper::header::{HeaderMap, ORIGIN};
use hyper::StatusCode;
use sha2::Sha256;
use tracing::Span;

use crate::bus::{Bus, RefusalReason, Refused};
use crate::config::{Access, Limits, Secret};

/// Domain separation: a token is good for a room of this server's protocol and nothing else.
const TOKEN_CONTEXT: &[u8] = b"mediasoup-server room token v1\0";

/// The room token for `room`: hex HMAC-SHA256 of the room name under the secret.
pub fn room_token(secret: &Secret, room: &str) -> String {
    hex::encode(token_mac(secret, room).finalize().into_bytes())
}

fn token_mac(secret: &Secret, room: &str) -> Hmac<Sha256> {
    // HMAC takes keys of any length.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&secret.0)
        .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
    mac.update(TOKEN_CONTEXT);
    mac.update(room.as_bytes());
    mac
}

/// Checks `token` (hex) for `room` in constant time.
fn token_matches(secret: &Secret, room: &str, token: &str) -> bool {
    let Ok(bytes) = hex::decode(token) else {
        return false;
    };
    token_mac(secret, room).verify_slice(&bytes).is_ok()
}

/// Why a connection is refused before it becomes a WebSocket, and what it is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal(pub RefusalReason);

impl Refusal {
    pub fn status(self) -> StatusCode {
        match self.0 {
            RefusalReason::TokenMissing => StatusCode::UNAUTHORIZED,
            RefusalReason::TokenInvalid | RefusalReason::Origin => StatusCode::FORBIDDEN,
            RefusalReason::ConnectionsPerIp | RefusalReason::RequestRate => {
                StatusCode::TOO_MANY_REQUESTS
            }
            RefusalReason::UserIdTaken => StatusCode::CONFLICT,
            RefusalReason::AppDataSize => StatusCode::PAYLOAD_TOO_LARGE,
            RefusalReason::HandshakeTimeout => StatusCode::REQUEST_TIMEOUT,
            RefusalReason::Connections | RefusalReason::RoomFull | RefusalReason::Rooms => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    pub fn message(self) -> &'static str {
        match self.0 {
            RefusalReason::TokenMissing => "this server needs a room token: add ?token=... to the URL (the server's operator prints it with `mediasoup-server token <room>`)\n",
            RefusalReason::TokenInvalid => "the room token in the URL is not valid for this room: ask the server's operator for the table's URL\n",
            RefusalReason::Origin => "WebSocket connections from this page's origin are not allowed (MEDIASOUP_ALLOWED_ORIGINS)\n",
            RefusalReason::Connections => "the server has too many connections: try again later\n",
            RefusalReason::ConnectionsPerIp => "too many connections from your address: close some first\n",
            RefusalReason::RoomFull => "the room is full\n",
            RefusalReason::Rooms => "the server has as many rooms open as it allows: try again later\n",
            RefusalReason::HandshakeTimeout => "the request did not arrive in time\n",
            RefusalReason::RequestRate => "too many requests: slow down\n",
            RefusalReason::UserIdTaken => "this user id is connected already\n",
            RefusalReason::AppDataSize => "the appData is larger than this server allows\n",
        }
    }
}

/// Open connections, in total and per client address.
#[derive(Default)]
struct Counts {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
}

pub struct Admission {
    access: Access,
    limits: Limits,
    counts: Mutex<Counts>,
    bus: Bus,
}

impl Admission {
    pub fn new(access: Access, limits: Limits, bus: Bus) -> Arc<Self> {
        Arc::new(Admission {
            access,
            limits,
            counts: Mutex::new(Counts::default()),
            bus,
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn counts(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a refusal (metrics, debug log).
    pub fn refused(&self, reason: RefusalReason) -> Refusal {
        self.bus.emit(&Span::none(), Refused { reason });
        Refusal(reason)
    }

    pub fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        self.access
            .trusted_proxies
            .iter()
            .any(|net| net.contains(ip))
    }

    /// Admits a new TCP connection from `peer`. A trusted proxy's connections are attributed
    /// to their client later, from the request ([`ConnectionSlot::attribute`]).
    pub fn open(self: &Arc<Self>, peer: IpAddr) -> Result<Arc<ConnectionSlot>, Refusal> {
        let peer = peer.to_canonical();
        let address = (!self.is_trusted_proxy(peer)).then_some(peer);
        {
            let mut counts = self.counts();
            if counts.total >= self.limits.max_connections {
                drop(counts);
                return Err(self.refused(RefusalReason::Connections));
            }
            if let Some(address) = address {
                let n = counts.per_address.entry(address).or_default();
                if *n >= self.limits.max_connections_per_ip {
                    drop(counts);
                    return Err(self.refused(RefusalReason::ConnectionsPerIp));
                }
                *n += 1;
            }
            counts.total += 1;
        }
        Ok(Arc::new(ConnectionSlot {
            admission: Arc::clone(self),
            peer,
            address: Mutex::new(address),
        }))
    }

    /// The client behind `peer`: the last address of `X-Forwarded-For` that is not a trusted
    /// proxy, when `peer` is one; `peer` otherwise.
    pub fn client_address(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.is_trusted_proxy(peer) {
            return peer;
        }
        let forwarded: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map_while(|hop| hop.trim().parse::<IpAddr>().ok())
            .map(|ip| ip.to_canonical())
            .collect();
        forwarded
            .iter()
            .rev()
            .find(|ip| !self.is_trusted_proxy(**ip))
            .or(forwarded.first())
            .copied()
            .unwrap_or(peer)
    }

    /// Checks the upgrade request of a WebSocket for `room`: Origin, then the room token.
    pub fn check_request(
        &self,
        room: &str,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<(), Refusal> {
        self.check_origin(headers, false)?;
        self.check_token(room, query)
    }

    /// The Origin allowlist. With `own_pages`, a page this server served itself (its Origin's
    /// host is the request's `Host`, ports aside, since a proxy's `$host` drops the port) passes
    /// too: the self-test page.
    pub fn check_origin(&self, headers: &HeaderMap, own_pages: bool) -> Result<(), Refusal> {
        if self.access.allowed_origins.is_empty() {
            return Ok(());
        }
        let origin = headers
            .get(ORIGIN)
            .and_then(|v| v.to_str().ok())
            .map(|origin| origin.trim_end_matches('/').to_ascii_lowercase());
        let allowed = origin.as_deref().is_some_and(|origin| {
            self.access.allowed_origins.iter().any(|o| o == origin)
                || (own_pages && is_own_origin(origin, headers))
        });
        if allowed {
            Ok(())
        } else {
            Err(self.refused(RefusalReason::Origin))
        }
    }

    /// The room token in `query`, when the server has a secret.
    pub fn check_token(&self, room: &str, query: Option<&str>) -> Result<(), Refusal> {
        if let Some(secret) = &self.access.secret {
            let token = query
                .into_iter()
                .flat_map(|q| q.split('&'))
                .find_map(|pair| pair.strip_prefix("token="));
            match token {
                None | Some("") => return Err(self.refused(RefusalReason::TokenMissing)),
                Some(token) if !token_matches(secret, room, token) => {
                    return Err(self.refused(RefusalReason::TokenInvalid))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    pub fn secret(&self) -> Option<&Secret> {
        self.access.secret.as_ref()
    }
}

/// Whether `origin` (`scheme://host[:port]`, lower case) names the host of the request's `Host`
/// header, ports aside.
fn is_own_origin(origin: &str, headers: &HeaderMap) -> bool {
    let Some(host) = headers
        .get(hyper::header::HOST)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some((_, origin_host)) = origin.split_once("://") else {
        return false;
    };
    let name = |authority: &str| -> String {
        let authority = authority.trim().to_ascii_lowercase();
        if let Some(rest) = authority.strip_prefix('[') {
            // [v6]:port
            return rest.split(']').next().unwrap_or_default().to_owned();
        }
        authority
            .rsplit_once(':')
            .map_or(authority.clone(), |(name, _)| name.to_owned())
    };
    let (origin_name, host_name) = (name(origin_host), name(host));
    !origin_name.is_empty() && origin_name == host_name
}

/// One admitted connection; dropping it frees its place. Shared by the HTTP connection and,
/// after an upgrade, the WebSocket.
pub struct ConnectionSlot {
    admission: Arc<Admission>,
    peer: IpAddr,
    /// The address it counts against, once known.
    address: Mutex<Option<IpAddr>>,
}

impl ConnectionSlot {
    pub fn peer(&self) -> IpAddr {
        self.peer
    }

    /// Counts a proxied connection against its client's address (no-op when it already counts
    /// against one).
    pub fn attribute(&self, client: IpAddr) -> Result<(), Refusal> {
        let mut address = self.address.lock().unwrap_or_else(|e| e.into_inner());
        if address.is_some() {
            return Ok(());
        }
        let admission = &self.admission;
        {
            let mut counts = admission.counts();
            let n = counts.per_address.entry(client).or_default();
            if *n >= admission.limits.max_connections_per_ip {
                drop(counts);
                return Err(admission.refused(RefusalReason::ConnectionsPerIp));
            }
            *n += 1;
        }
        *address = Some(client);
        Ok(())
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let address = self
            .address
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let mut counts = self.admission.counts();
        counts.total = counts.total.saturating_sub(1);
        if let Some(address) = address {
            if let Some(n) = counts.per_address.get_mut(&address) {
                *n -= 1;
                if *n == 0 {
                    counts.per_address.remove(&address);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::BusBuilder;
    use crate::config::IpNet;

    fn admission(access: Access, limits: Limits) -> Arc<Admission> {
        Admission::new(access, limits, BusBuilder::default().build())
    }

    fn loopback_proxies() -> Vec<IpNet> {
        vec!["127.0.0.0/8".parse().unwrap(), "::1".parse().unwrap()]
    }

    #[test]
    fn tokens_are_per_room_and_per_secret() {
        let secret = Secret(b"0123456789abcdef".to_vec());
        let token = room_token(&secret, "table");
        assert_eq!(token.len(), 64);
        assert!(token_matches(&secret, "table", &token));
        assert!(!token_matches(&secret, "other", &token));
        assert!(!token_matches(
            &Secret(b"another secret!!".to_vec()),
            "table",
            &token
        ));
        assert!(!token_matches(&secret, "table", &token[..62]));
        assert!(!token_matches(&secret, "table", "zz"));
    }

    #[test]
    fn limits_count_per_address_and_free_on_drop() {
        let limits = Limits {
            max_connections: 3,
            max_connections_per_ip: 2,
            ..Limits::default()
        };
        let admission = admission(Access::default(), limits);
        let a: IpAddr = "203.0.113.1".parse().unwrap();
        let b: IpAddr = "203.0.113.2".parse().unwrap();
        let first = admission.open(a).unwrap();
        let _second = admission.open(a).unwrap();
        assert_eq!(
            admission.open(a).err(),
            Some(Refusal(RefusalReason::ConnectionsPerIp))
        );
        let _third = admission.open(b).unwrap();
        assert_eq!(
            admission.open(b).err(),
            Some(Refusal(RefusalReason::Connections))
        );
        drop(first);
        assert!(admission.open(a).is_ok());
    }

    #[test]
    fn forwarded_clients_count_only_behind_trusted_proxies() {
        let access = Access {
            trusted_proxies: loopback_proxies(),
            ..Access::default()
        };
        let limits = Limits {
            max_connections_per_ip: 1,
            ..Limits::default()
        };
        let admission = admission(access, limits);
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            "198.51.100.9, 10.9.9.9, 127.0.0.1".parse().unwrap(),
        );
        assert_eq!(
            admission.client_address(proxy, &headers),
            "10.9.9.9".parse::<IpAddr>().unwrap()
        );
        let stranger: IpAddr = "203.0.113.5".parse().unwrap();
        assert_eq!(admission.client_address(stranger, &headers), stranger);

        let one = admission.open(proxy).unwrap();
        let two = admission.open(proxy).unwrap();
        let client: IpAddr = "10.9.9.9".parse().unwrap();
        one.attribute(client).unwrap();
        assert!(two.attribute(client).is_err());
        drop(one);
        two.attribute(client).unwrap();
    }

    #[test]
    fn origins_and_tokens_are_checked() {
        let secret = Secret(b"0123456789abcdef".to_vec());
        let access = Access {
            secret: Some(secret.clone()),
            allowed_origins: vec!["https://vtt.example.org".into()],
            ..Access::default()
        };
        let admission = admission(access, Limits::default());
        let mut headers = HeaderMap::new();
        let query = format!("token={}", room_token(&secret, "t"));
        let check = |headers: &HeaderMap, query: Option<&str>| {
            admission
                .check_request("t", headers, query)
                .err()
                .map(|r| r.0)
        };
        assert_eq!(check(&headers, Some(&query)), Some(RefusalReason::Origin));
        headers.insert(ORIGIN, "https://evil.example".parse().unwrap());
        assert_eq!(check(&headers, Some(&query)), Some(RefusalReason::Origin));
        headers.insert(ORIGIN, "https://VTT.example.org".parse().unwrap());
        assert_eq!(check(&headers, None), Some(RefusalReason::TokenMissing));
        assert_eq!(
            check(&headers, Some("token=00")),
            Some(RefusalReason::TokenInvalid)
        );
        assert_eq!(check(&headers, Some(&format!("x=1&{query}"))), None);

        // The server's own pages, only where asked for (the self-test page).
        headers.insert(ORIGIN, "https://sfu.example.net:8443".parse().unwrap());
        headers.insert(hyper::header::HOST, "sfu.example.net".parse().unwrap());
        assert!(admission.check_origin(&headers, false).is_err());
        assert!(admission.check_origin(&headers, true).is_ok());
        headers.insert(
            hyper::header::HOST,
            "other.example.net:8443".parse().unwrap(),
        );
        assert!(admission.check_origin(&headers, true).is_err());
        headers.insert(ORIGIN, "http://[::1]:3000".parse().unwrap());
        headers.insert(hyper::header::HOST, "[::1]:3000".parse().unwrap());
        assert!(admission.check_origin(&headers, true).is_ok());
        headers.remove(hyper::header::HOST);
        assert!(admission.check_origin(&headers, true).is_err());
    }
}
