//! The self-test page's session endpoint against the real binary (README, "Self-test page"):
//! off means 404, a minted room's token is good for that room only, and a cap on rooms at once.

mod common;

use common::{http_get, upgrade_status, Server};
use serde_json::Value;

const SECRET: &str = "correct horse battery staple";

fn session(server: &Server) -> (u16, Value) {
    let (status, body) = http_get(server.addr, "/selftest/session").expect("GET /selftest/session");
    let json = if status == 200 {
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
    } else {
        Value::String(body)
    };
    (status, json)
}

#[test]
fn off_means_not_found() {
    let server = Server::start(&[("MEDIASOUP_SELF_TEST", "off")]);
    for path in ["/", "/selftest/session", "/selftest/selftest.js"] {
        let (status, body) = http_get(server.addr, path).expect("GET");
        assert_eq!(status, 404, "{path}: {body}");
    }
    // Its room names are ordinary ones then.
    assert_eq!(
        upgrade_status(server.addr, "/selftest-anything", &[]).0,
        101
    );
}

#[test]
fn minted_tokens_are_good_for_their_room_only_and_rooms_are_capped() {
    let server = Server::start(&[("MEDIASOUP_SECRET", SECRET)]);
    let (status, page) = http_get(server.addr, "/").expect("GET /");
    assert_eq!(status, 200);
    assert!(page.contains("selftest/selftest.js"), "{page}");

    let (status, first) = session(&server);
    assert_eq!(status, 200, "{first}");
    let room = first["room"].as_str().expect("room");
    let token = first["token"]
        .as_str()
        .expect("a token, since the server has a secret");
    assert!(
        room.starts_with("selftest-") && room.len() == "selftest-".len() + 32,
        "{room}"
    );
    assert_eq!(first["maxPeers"], 2);
    assert_eq!(first["lifetimeSecs"], 60);
    assert_eq!(first["seen"]["viaProxy"], false);
    assert_eq!(first["seen"]["client"], "127.0.0.1");

    assert_eq!(
        upgrade_status(server.addr, &format!("/{room}?token={token}"), &[]).0,
        101
    );
    assert_eq!(upgrade_status(server.addr, &format!("/{room}"), &[]).0, 401);
    assert_eq!(
        upgrade_status(server.addr, &format!("/table?token={token}"), &[]).0,
        403,
        "a self-test token is no table's"
    );
    let (_, second) = session(&server);
    let other = second["room"].as_str().expect("room");
    assert_ne!(other, room);
    assert_eq!(
        upgrade_status(server.addr, &format!("/{other}?token={token}"), &[]).0,
        403,
        "nor another self-test room's"
    );

    // Proxied: the server reports the client the trusted proxy names.
    let mut stream = std::net::TcpStream::connect(server.addr).expect("connect");
    use std::io::Write;
    write!(
        stream,
        "GET /selftest/session HTTP/1.1\r\nHost: vtt.example.org\r\nX-Forwarded-For: 198.51.100.7\r\nX-Forwarded-Proto: https\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let (status, body) = common::read_response(&mut stream);
    assert_eq!(status, 200, "{body}");
    let proxied: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(proxied["seen"]["viaProxy"], true);
    assert_eq!(proxied["seen"]["client"], "198.51.100.7");
    assert_eq!(proxied["seen"]["forwardedProto"], "https");

    // Three minted so far; the cap is 8 at once.
    for n in 4..=8 {
        assert_eq!(session(&server).0, 200, "session {n}");
    }
    let refused_before = server.metric("mediasoup_server_refusals_total{reason=\"rooms\"}");
    let (status, body) = session(&server);
    assert_eq!(status, 503, "{body}");
    assert!(body.to_string().contains("self-tests at once"), "{body}");
    server.wait_metric(
        "mediasoup_server_refusals_total{reason=\"rooms\"}",
        refused_before + 1.0,
    );
}
