//! The self-test page a GM opens in the browser they play in (README, "Self-test page"): the
//! page and its script (built from the sources beside this file by `build.sh`, and committed,
//! so that `cargo build` needs no node), and the throw-away rooms it tests in.
//!
//! `GET selftest/session` mints a room `selftest-<128 random bits in hex>` with its token (when
//! the server has a secret) and reports what the server saw of the request. Such a room takes
//! at most [`MAX_PEERS`] WebSockets, accepts the server's own page as Origin even when the
//! allowlist does not list it, and is closed after its lifetime; at most [`MAX_ROOMS`] exist at
//! once. Every other room name starting with [`ROOM_PREFIX`] is refused while the page is on.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::json;

use crate::bus::{LeaveReason, RefusalReason, RoomName};
use crate::http::{self, Body};
use crate::rooms::Rooms;
use crate::signaling::admission::{room_token, Admission, Refusal};

/// Room names with this prefix are the self-test's own.
pub const ROOM_PREFIX: &str = "selftest-";
/// WebSockets one self-test room takes: the page's sender and receiver.
pub const MAX_PEERS: usize = 2;
/// Self-test rooms at once; past it the session request gets a 503.
pub const MAX_ROOMS: usize = 8;
/// How long a self-test room lives from the session request on.
pub const LIFETIME: Duration = Duration::from_secs(60);
/// Test-only, not a supported setting: the lifetime in seconds, for a test that waits for it.
const TEST_LIFETIME: &str = "MEDIASOUP_TEST_SELF_TEST_SECS";

const INDEX_HTML: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("selftest.js");
const STYLE: &str = include_str!("selftest.css");

/// Nothing from elsewhere, no inline script or style; WebSockets to this server only.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   media-src 'self' blob:; img-src 'self'; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

/// One minted room: how many WebSockets it holds now.
#[derive(Default)]
struct Minted {
    peers: usize,
}

pub struct SelfTest {
    enabled: bool,
    lifetime: Duration,
    rooms: Arc<Rooms>,
    admission: Arc<Admission>,
    minted: Mutex<HashMap<RoomName, Minted>>,
}

/// A WebSocket's place in a self-test room, given back when it is dropped.
pub struct SelfTestPeer {
    self_test: Weak<SelfTest>,
    room: RoomName,
}

impl Drop for SelfTestPeer {
    fn drop(&mut self) {
        if let Some(self_test) = self.self_test.upgrade() {
            if let Some(minted) = self_test.minted().get_mut(&self.room) {
                minted.peers = minted.peers.saturating_sub(1);
            }
        }
    }
}

/// Whether `room` is a self-test room name.
pub fn is_self_test_room(room: &str) -> bool {
    room.starts_with(ROOM_PREFIX)
}

impl SelfTest {
    pub fn new(enabled: bool, rooms: Arc<Rooms>, admission: Arc<Admission>) -> Arc<Self> {
        let lifetime = std::env::var(TEST_LIFETIME)
            .ok()
            .and_then(|secs| secs.parse::<u64>().ok())
            .filter(|secs| *secs > 0)
            .map_or(LIFETIME, Duration::from_secs);
        Arc::new(SelfTest {
            enabled,
            lifetime,
            rooms,
            admission,
            minted: Mutex::new(HashMap::new()),
        })
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    fn minted(&self) -> MutexGuard<'_, HashMap<RoomName, Minted>> {
        self.minted.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The page and its files, by request path; `None` for other paths (or when it is off).
    pub fn file(&self, path: &str) -> Option<Response<Body>> {
        if !self.enabled {
            return None;
        }
        let (content_type, body) = match path {
            "/" => ("text/html; charset=utf-8", INDEX_HTML),
            "/selftest/selftest.js" => ("text/javascript; charset=utf-8", SCRIPT),
            "/selftest/selftest.css" => ("text/css; charset=utf-8", STYLE),
            _ => return None,
        };
        Some(secured(http::response(StatusCode::OK, content_type, body)))
    }

    /// `GET selftest/session`: a new self-test room (503 when [`MAX_ROOMS`] exist), its token,
    /// and what the server saw of the request. `peer` is the TCP peer of the request.
    pub fn session(self: &Arc<Self>, peer: IpAddr, headers: &HeaderMap) -> Response<Body> {
        let Some(random) = random_hex() else {
            return secured(http::text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the server could not get random bytes for a room name\n",
            ));
        };
        let room: RoomName = format!("{ROOM_PREFIX}{random}").into();
        {
            let mut minted = self.minted();
            if minted.len() >= MAX_ROOMS {
                drop(minted);
                self.admission.refused(RefusalReason::Rooms);
                let mut response = secured(http::text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "the server runs its maximum of {MAX_ROOMS} self-tests at once: try again in a minute\n"
                    ),
                ));
                response.headers_mut().insert(
                    hyper::header::RETRY_AFTER,
                    HeaderValue::from(self.lifetime.as_secs()),
                );
                return response;
            }
            minted.insert(room.clone(), Minted::default());
        }
        let expiry = Arc::downgrade(self);
        let (expired_room, lifetime) = (room.clone(), self.lifetime);
        tokio::spawn(async move {
            tokio::time::sleep(lifetime).await;
            if let Some(self_test) = expiry.upgrade() {
                self_test.minted().remove(&expired_room);
                self_test
                    .rooms
                    .close_room(&expired_room, LeaveReason::SelfTestOver);
            }
        });

        let peer = peer.to_canonical();
        let forwarded_for = headers.contains_key("x-forwarded-for");
        let via_proxy = self.admission.is_trusted_proxy(peer) && forwarded_for;
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let token = self.admission.secret().map(|s| room_token(s, &room));
        let body = json!({
            "room": &*room,
            "token": token,
            "lifetimeSecs": self.lifetime.as_secs(),
            "maxPeers": MAX_PEERS,
            "seen": {
                "client": self.admission.client_address(peer, headers).to_string(),
                "viaProxy": via_proxy,
                "forwardedFor": forwarded_for,
                "forwardedProto": header("x-forwarded-proto"),
                "host": header("host"),
            },
        });
        secured(http::json(StatusCode::OK, &body))
    }

    /// Admits a WebSocket into the self-test room `room`: minted and not over, the server's own
    /// page or an allowed Origin, its token, and a free place.
    pub fn admit(
        self: &Arc<Self>,
        room: &RoomName,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<SelfTestPeer, Refusal> {
        let mut minted = self.minted();
        let Some(entry) = minted.get_mut(room) else {
            return Err(self.admission.refused(RefusalReason::TokenInvalid));
        };
        self.admission.check_origin(headers, true)?;
        self.admission.check_token(room, query)?;
        if entry.peers >= MAX_PEERS {
            return Err(self.admission.refused(RefusalReason::RoomFull));
        }
        entry.peers += 1;
        Ok(SelfTestPeer {
            self_test: Arc::downgrade(self),
            room: room.clone(),
        })
    }
}

/// The headers every self-test answer carries.
fn secured(mut response: Response<Body>) -> Response<Body> {
    let headers = response.headers_mut();
    for (name, value) in [
        ("cache-control", "no-store"),
        ("content-security-policy", CSP),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("x-frame-options", "DENY"),
        ("cross-origin-resource-policy", "same-origin"),
    ] {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    response
}

/// 128 random bits from the kernel, in hex.
fn random_hex() -> Option<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).ok()?;
    Some(hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_are_random_and_reserved() {
        let (a, b) = (random_hex().unwrap(), random_hex().unwrap());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert!(is_self_test_room(&format!("{ROOM_PREFIX}{a}")));
        assert!(!is_self_test_room("my-table"));
    }

    #[test]
    fn the_page_asks_for_its_files_by_relative_urls() {
        for reference in [
            "src=\"selftest/selftest.js\"",
            "href=\"selftest/selftest.css\"",
        ] {
            assert!(INDEX_HTML.contains(reference), "{reference}");
        }
        assert!(!INDEX_HTML.contains("src=\"/"));
        assert!(!INDEX_HTML.contains("href=\"/"));
    }
}
