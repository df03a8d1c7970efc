//! PROTOCOL.md against the real server and real workers, through a client that speaks it as the
//! MediaSoupVTT module does.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{notifications, producing, udp_and_tcp_candidates, Client, Server};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const A: &str = "aaaaaaaaaaaaaaaa";
const B: &str = "bbbbbbbbbbbbbbbb";
const C: &str = "cccccccccccccccc";

/// Long enough that a notification that was going to come would have.
const QUIET: Duration = Duration::from_millis(500);

fn ids(frames: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = frames
        .iter()
        .map(|f| f["producerId"].as_str().expect("producerId").to_owned())
        .collect();
    ids.sort();
    ids
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

#[tokio::test]
async fn join_order_of_the_module_and_response_shapes() {
    let server = Server::start(&[]);
    let mut a = Client::connect(&server.url("/table"), A).await;

    let answer = a.request("getRouterRtpCapabilities", json!({})).await;
    assert_eq!(answer["type"], "routerRtpCapabilities");
    assert_eq!(answer["requestId"], "req_0");
    let mimes: Vec<&str> = answer["data"]["codecs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["mimeType"].as_str())
        .collect();
    for mime in ["audio/opus", "video/VP8", "video/VP9", "video/H264"] {
        assert!(mimes.contains(&mime), "{mime} missing from {mimes:?}");
    }

    let answer = a
        .request(
            "createWebRtcTransport",
            json!({"forceTcp": false, "producing": true, "consuming": false, "sctpCapabilities": {}}),
        )
        .await;
    assert_eq!(answer["type"], "transportCreated");
    let data = &answer["data"];
    for field in ["id", "iceParameters", "iceCandidates", "dtlsParameters"] {
        assert!(!data[field].is_null(), "{field} missing: {data}");
    }
    let candidates = udp_and_tcp_candidates(data);
    for candidate in candidates {
        assert_eq!(candidate["address"], "127.0.0.1", "{candidate}");
        let port = candidate["port"].as_u64().unwrap() as u16;
        assert!(
            (server.rtc_ports.0..=server.rtc_ports.1).contains(&port),
            "{candidate}"
        );
    }
    let udp_priority = |p: &str| {
        candidates
            .iter()
            .find(|c| c["protocol"] == p)
            .and_then(|c| c["priority"].as_u64())
            .unwrap()
    };
    assert!(udp_priority("udp") > udp_priority("tcp"), "UDP preferred");
    let send = data["id"].as_str().unwrap().to_owned();

    let recv = a
        .ok(
            "createWebRtcTransport",
            json!({"forceTcp": false, "producing": false, "consuming": true, "sctpCapabilities": {}}),
        )
        .await;
    assert_ne!(recv["id"], send);

    let answer = a
        .request(
            "connectTransport",
            json!({"transportId": send, "dtlsParameters": common::dtls_parameters()}),
        )
        .await;
    assert_eq!(answer["type"], "transportConnected");
    assert!(answer.get("error").is_none(), "{answer}");

    let answer = a
        .request(
            "produce",
            json!({"transportId": send, "kind": "audio",
                   "rtpParameters": common::chromium_rtp_parameters("audio"),
                   "appData": {"mediaTag": "mic", "userId": A}}),
        )
        .await;
    assert_eq!(answer["type"], "produced");
    assert!(answer["data"]["id"].is_string(), "{answer}");
}

#[tokio::test]
async fn force_tcp_gives_tcp_candidates_only() {
    let server = Server::start(&[]);
    let mut a = Client::connect(&server.url("/"), A).await;
    let data = a
        .ok(
            "createWebRtcTransport",
            json!({"forceTcp": true, "producing": true, "consuming": false}),
        )
        .await;
    let candidates = data["iceCandidates"].as_array().unwrap();
    assert!(!candidates.is_empty());
    assert!(
        candidates.iter().all(|c| c["protocol"] == "tcp"),
        "{candidates:?}"
    );
}

#[tokio::test]
async fn producers_reach_others_and_consumers_are_answered_in_full() {
    let server = Server::start(&[]);
    let mut a = Client::connect(&server.url("/table"), A).await;
    let mut b = Client::connect(&server.url("/table"), B).await;
    let a_join = a.join().await;
    let b_join = b.join().await;

    let mic = a.produce(&a_join.send, "audio", "mic").await;
    let cam = a.produce(&a_join.send, "video", "webcam").await;
    let announced = notifications(&mut b, "newProducer", 2).await;
    assert_eq!(ids(&announced), sorted(vec![mic.clone(), cam.clone()]));
    for n in &announced {
        assert_eq!(n["userId"], A);
        let kind = n["kind"].as_str().unwrap();
        let tag = if kind == "audio" { "mic" } else { "webcam" };
        assert_eq!(n["appData"]["mediaTag"], tag);
        assert_eq!(n["appData"]["userId"], A);
        assert_eq!(
            n["appData"]["rtpParameters"]["codecs"][0]["mimeType"],
            common::chromium_rtp_parameters(kind)["codecs"][0]["mimeType"],
            "appData carries the producer's rtpParameters"
        );
    }
    // The producer never hears of its own producers.
    assert!(a.has_notification_within(QUIET).await.is_none());

    let mut consumers = Vec::new();
    for (producer, kind) in [(&mic, "audio"), (&cam, "video")] {
        let answer = b
            .request(
                "consume",
                json!({"producerId": producer, "rtpCapabilities": common::client_rtp_capabilities()}),
            )
            .await;
        assert_eq!(answer["type"], "consumed", "{answer}");
        let data = &answer["data"];
        assert!(data["id"].is_string());
        assert_eq!(data["producerId"], *producer);
        assert_eq!(data["kind"], kind);
        assert!(data["rtpParameters"]["codecs"]
            .as_array()
            .is_some_and(|c| !c.is_empty()));
        assert_eq!(data["producerPaused"], false);
        consumers.push(data["id"].clone());
    }
    server.wait_metric("mediasoup_server_consumers{kind=\"audio\"}", 1.0);
    server.wait_metric("mediasoup_server_consumers{kind=\"video\"}", 1.0);

    // Pause and resume own producers; consumer pause/resume/close by consumerId.
    a.ok("pauseProducer", json!({"producerId": mic})).await;
    a.ok("resumeProducer", json!({"producerId": mic})).await;
    let consumer = consumers[1].clone();
    b.ok("consumerPause", json!({"consumerId": consumer})).await;
    b.ok("consumerResume", json!({"consumerId": consumer}))
        .await;
    b.ok("consumerClose", json!({"consumerId": consumer})).await;
    let error = b
        .error("consumerResume", json!({"consumerId": consumer}))
        .await;
    assert!(error.contains("no consumer"), "{error}");
    server.wait_metric("mediasoup_server_consumers{kind=\"video\"}", 0.0);
    drop(b_join);
}

#[tokio::test]
async fn consuming_the_same_producer_again_answers_with_the_same_consumer() {
    let server = Server::start(&[]);
    let mut a = Client::connect(&server.url("/table"), A).await;
    let mut b = Client::connect(&server.url("/table"), B).await;
    let a_join = a.join().await;
    b.join().await;
    let mic = a.produce(&a_join.send, "audio", "mic").await;
    let cam = a.produce(&a_join.send, "video", "webcam").await;
    notifications(&mut b, "newProducer", 2).await;
    let consume = |producer: &str| json!({"producerId": producer, "rtpCapabilities": common::client_rtp_capabilities()});

    // A retry of the module (its first answer came too late) gets the first answer again.
    let first = b.ok("consume", consume(&cam)).await;
    let again = b.ok("consume", consume(&cam)).await;
    assert_eq!(again, first, "a second consume of the same producer");
    // One consumer, not two at double the bandwidth. Consuming the mic afterwards and waiting
    // for its gauge orders the reading after everything the two video consumes published.
    b.ok("consume", consume(&mic)).await;
    server.wait_metric("mediasoup_server_consumers{kind=\"audio\"}", 1.0);
    assert_eq!(
        server.metric("mediasoup_server_consumers{kind=\"video\"}"),
        1.0
    );

    // Closing it once closes the only one; consuming after that creates a new one.
    b.ok("consumerClose", json!({"consumerId": first["id"]}))
        .await;
    let error = b
        .error("consumerClose", json!({"consumerId": first["id"]}))
        .await;
    assert!(error.contains("no consumer"), "{error}");
    server.wait_metric("mediasoup_server_consumers{kind=\"video\"}", 0.0);
    let new = b.ok("consume", consume(&cam)).await;
    assert_ne!(new["id"], first["id"]);
    server.wait_metric("mediasoup_server_consumers{kind=\"video\"}", 1.0);
}

#[tokio::test]
async fn late_joiner_hears_of_every_existing_producer_right_after_its_consuming_transport() {
    let server = Server::start(&[]);
    let mut a = Client::connect(&server.url("/table"), A).await;
    let mut b = Client::connect(&server.url("/table"), B).await;
    let a_join = a.join().await;
    let b_join = b.join().await;
    let mut producers = vec![
        a.produce(&a_join.send, "audio", "mic").await,
        a.produce(&a_join.send, "video", "webcam").await,
        b.produce(&b_join.send, "audio", "mic").await,
    ];

    let mut c = Client::connect(&server.url("/table"), C).await;
    c.ok("getRouterRtpCapabilities", json!({})).await;
    c.ok("createWebRtcTransport", producing()).await;
    // Nothing before the consuming transport exists.
    assert!(c.has_notification_within(QUIET).await.is_none());
    c.ok(
        "createWebRtcTransport",
        json!({"producing": false, "consuming": true}),
    )
    .await;
    let announced = notifications(&mut c, "newProducer", 3).await;
    producers.sort();
    assert_eq!(ids(&announced), producers);
    // Exactly once each.
    assert!(c.has_notification_within(QUIET).await.is_none());
}

#[tokio::test]
async fn producing_again_with_the_same_tag_replaces_the_old_producer() {
    let server = Server::start(&[]);
    let mut a = Client::connect(&server.url("/table"), A).await;
    let mut b = Client::connect(&server.url("/table"), B).await;
    let a_join = a.join().await;
    b.join().await;
    let first = a.produce(&a_join.send, "audio", "mic").await;
    let cam = a.produce(&a_join.send, "video", "webcam").await;
    notifications(&mut b, "newProducer", 2).await;

    let second = a.produce(&a_join.send, "audio", "mic").await;
    let closed = b.notification_of("producerClosed").await;
    assert_eq!(closed["producerId"], first.as_str());
    let new = b.notification_of("newProducer").await;
    assert_eq!(new["producerId"], second.as_str());
    server.wait_metric("mediasoup_server_producers{kind=\"audio\"}", 1.0);

    // The old one is really gone; the webcam is untouched.
    let error = a.error("pauseProducer", json!({"producerId": first})).await;
    assert!(error.contains("no producer"), "{error}");
    a.ok("pauseProducer", json!({"producerId": cam})).await;
}

#[tokio::test]
async fn disconnect_closes_everything_and_tells_the_room() {
    let server = Server::start(&[]);
    let mut a = Client::connect(&server.url("/table"), A).await;
    let mut b = Client::connect(&server.url("/table"), B).await;
    let a_join = a.join().await;
    let b_join = b.join().await;
    let mic = a.produce(&a_join.send, "audio", "mic").await;
    let cam = a.produce(&a_join.send, "video", "webcam").await;
    let producers = sorted(vec![mic.clone(), cam.clone()]);
    notifications(&mut b, "newProducer", 2).await;
    // B consumes A's microphone only, so each kind's gauge has its own expected value.
    b.ok(
        "consume",
        json!({"producerId": mic, "rtpCapabilities": common::client_rtp_capabilities()}),
    )
    .await;
    b.produce(&b_join.send, "audio", "mic").await;
    server.wait_metric("mediasoup_server_transports{direction=\"send\"}", 2.0);
    server.wait_metric("mediasoup_server_producers{kind=\"audio\"}", 2.0);
    assert_eq!(
        server.metric("mediasoup_server_producers{kind=\"video\"}"),
        1.0
    );
    assert_eq!(
        server.metric("mediasoup_server_consumers{kind=\"audio\"}"),
        1.0
    );
    assert_eq!(
        server.metric("mediasoup_server_consumers{kind=\"video\"}"),
        0.0
    );

    a.close().await;
    let closed = notifications(&mut b, "producerClosed", 2).await;
    assert_eq!(ids(&closed), producers);
    server.wait_metric("mediasoup_server_peers", 1.0);
    server.wait_metric("mediasoup_server_transports{direction=\"send\"}", 1.0);
    server.wait_metric("mediasoup_server_producers{kind=\"video\"}", 0.0);
    server.wait_metric("mediasoup_server_consumers{kind=\"audio\"}", 0.0);
    server.wait_metric("mediasoup_server_rooms", 1.0);
    // What is left is B's: its microphone, and no consumer of either kind.
    server.wait_metric("mediasoup_server_producers{kind=\"audio\"}", 1.0);
    assert_eq!(
        server.metric("mediasoup_server_consumers{kind=\"video\"}"),
        0.0
    );

    // Last one out: the room and its router close.
    b.close().await;
    server.wait_metric("mediasoup_server_rooms", 0.0);
    server.wait_metric("mediasoup_server_peers", 0.0);
    server.wait_metric("mediasoup_server_worker_rooms{worker=\"0\"}", 0.0);
    server.wait_metric("mediasoup_server_transports{direction=\"recv\"}", 0.0);
}

#[tokio::test]
async fn a_second_connection_of_the_same_user_replaces_the_first() {
    let server = Server::start(&[]);
    let mut old = Client::connect(&server.url("/table"), A).await;
    let mut b = Client::connect(&server.url("/table"), B).await;
    let old_join = old.join().await;
    b.join().await;
    let mic = old.produce(&old_join.send, "audio", "mic").await;
    b.notification_of("newProducer").await;

    let mut new = Client::connect(&server.url("/table"), A).await;
    new.ok("getRouterRtpCapabilities", json!({})).await;
    let (code, reason) = old.closed().await;
    assert_eq!(code, 4000);
    assert!(reason.contains("replaced"), "{reason}");
    let closed = b.notification_of("producerClosed").await;
    assert_eq!(closed["producerId"], mic.as_str());
    server.wait_metric("mediasoup_server_peers", 2.0);

    // The same user in another room is someone else's business.
    let mut elsewhere = Client::connect(&server.url("/other"), A).await;
    elsewhere.ok("getRouterRtpCapabilities", json!({})).await;
    assert!(new.has_notification_within(QUIET).await.is_none());
    new.ok("getRouterRtpCapabilities", json!({})).await;
}

#[tokio::test]
async fn rooms_are_isolated() {
    let server = Server::start(&[("MEDIASOUP_NUM_WORKERS", "2")]);
    let mut a = Client::connect(&server.url("/table-1"), A).await;
    let mut d = Client::connect(&server.url("/table-2"), B).await;
    let a_join = a.join().await;
    d.join().await;
    let mic = a.produce(&a_join.send, "audio", "mic").await;
    assert!(d.has_notification_within(QUIET).await.is_none());
    let error = d
        .error(
            "consume",
            json!({"producerId": mic, "rtpCapabilities": common::client_rtp_capabilities()}),
        )
        .await;
    assert!(error.contains("no producer"), "{error}");
    server.wait_metric("mediasoup_server_rooms", 2.0);
    // Two rooms, two workers: least-loaded placement puts one room on each.
    server.wait_metric("mediasoup_server_worker_rooms{worker=\"0\"}", 1.0);
    server.wait_metric("mediasoup_server_worker_rooms{worker=\"1\"}", 1.0);
}

#[tokio::test]
async fn bad_frames_get_a_clear_error_and_the_socket_stays_open() {
    let server = Server::start(&[]);
    let mut a = Client::connect(&server.url("/table"), A).await;
    let mut b = Client::connect(&server.url("/table"), B).await;
    let b_join = b.join().await;

    let unanswerable = [
        ("not json", "not valid JSON"),
        ("[1, 2, 3]", "not a JSON object"),
        (
            r#"{"type": "getRouterRtpCapabilities", "userId": "x"}"#,
            "requestId",
        ),
    ];
    for (frame, expected) in unanswerable {
        a.send_raw(Message::text(frame)).await;
        let reply = a.notification().await;
        assert_eq!(reply["type"], "error", "{frame}: {reply}");
        assert!(
            reply["error"].as_str().unwrap().contains(expected),
            "{frame}: {reply}"
        );
    }
    a.send_raw(Message::binary(vec![1, 2, 3])).await;
    assert_eq!(a.notification().await["type"], "error");

    let answered = [
        (
            json!({"type": "fly", "requestId": "r1", "userId": A}),
            "unknown request type",
        ),
        (json!({"type": "consume", "requestId": "r2"}), "userId"),
        (
            json!({"type": "connectTransport", "requestId": "r3", "userId": A}),
            "missing field `transportId`",
        ),
        (
            json!({"type": "createWebRtcTransport", "requestId": "r4", "userId": A, "producing": "yes", "consuming": false}),
            "invalid type",
        ),
        (
            json!({"type": "pauseProducer", "requestId": "r5", "userId": A, "producerId": "not-a-uuid"}),
            "invalid pauseProducer",
        ),
    ];
    for (request, expected) in answered {
        a.send_raw(Message::text(request.to_string())).await;
        let reply = a.answer(request["requestId"].as_str().unwrap()).await;
        let error = reply["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{request}: {reply}"));
        assert!(error.contains(expected), "{request}: {error}");
    }

    // Out of order and foreign ids.
    let unknown = "5bd9f2bc-2e3b-4b1a-9b0e-3c3e6f3c8a11";
    let audio = common::chromium_rtp_parameters("audio");
    let error = a
        .error("produce", json!({"transportId": unknown, "kind": "audio", "rtpParameters": audio, "appData": {"mediaTag": "mic"}}))
        .await;
    assert!(error.contains("no transport"), "{error}");
    let error = a
        .error(
            "consume",
            json!({"producerId": unknown, "rtpCapabilities": common::client_rtp_capabilities()}),
        )
        .await;
    assert!(error.contains("no consuming transport"), "{error}");
    let error = a
        .error(
            "createWebRtcTransport",
            json!({"producing": true, "consuming": true}),
        )
        .await;
    assert!(error.contains("exactly one"), "{error}");

    let a_join = a.join().await;
    let error = a.error("createWebRtcTransport", producing()).await;
    assert!(
        error.contains("already has a producing transport"),
        "{error}"
    );
    let error = a
        .error("produce", json!({"transportId": a_join.recv, "kind": "audio", "rtpParameters": audio, "appData": {"mediaTag": "mic"}}))
        .await;
    assert!(
        error.contains("not this connection's producing transport"),
        "{error}"
    );
    let error = a
        .error("produce", json!({"transportId": b_join.send, "kind": "audio", "rtpParameters": audio, "appData": {"mediaTag": "mic"}}))
        .await;
    assert!(
        error.contains("no transport"),
        "another peer's transport: {error}"
    );
    let error = a
        .error(
            "connectTransport",
            json!({"transportId": b_join.send, "dtlsParameters": common::dtls_parameters()}),
        )
        .await;
    assert!(error.contains("no transport"), "{error}");
    let error = a
        .error("produce", json!({"transportId": a_join.send, "kind": "audio", "rtpParameters": {"codecs": [], "headerExtensions": [], "encodings": [], "rtcp": {"reducedSize": true}}, "appData": {"mediaTag": "mic"}}))
        .await;
    assert!(error.contains("could not produce"), "{error}");

    let b_mic = b.produce(&b_join.send, "audio", "mic").await;
    a.notification_of("newProducer").await;
    let error = a.error("pauseProducer", json!({"producerId": b_mic})).await;
    assert!(
        error.contains("no producer"),
        "another peer's producer: {error}"
    );
    let no_shared_codec = json!({"codecs": [{"kind": "video", "mimeType": "video/AV1", "clockRate": 90000, "parameters": {}, "rtcpFeedback": []}], "headerExtensions": []});
    let error = a
        .error(
            "consume",
            json!({"producerId": b_mic, "rtpCapabilities": no_shared_codec}),
        )
        .await;
    assert!(error.contains("cannot consume"), "{error}");

    // The user id of a connection is fixed by its first request.
    let mut impostor = Client::connect(&server.url("/table"), "zzzzzzzzzzzzzzzz").await;
    impostor.ok("getRouterRtpCapabilities", json!({})).await;
    impostor.user_id = B.into();
    let error = impostor.error("getRouterRtpCapabilities", json!({})).await;
    assert!(error.contains("does not match"), "{error}");

    // Still open, still working, for everyone.
    a.ok("getRouterRtpCapabilities", json!({})).await;
    a.ok(
        "consume",
        json!({"producerId": b_mic, "rtpCapabilities": common::client_rtp_capabilities()}),
    )
    .await;
    b.ok("pauseProducer", json!({"producerId": b_mic})).await;
    // The Prometheus sink counts after the fact: wait for it rather than read at once.
    server.wait_metric_at_least(
        "mediasoup_server_signaling_requests_total{type=\"produce\",outcome=\"error\"}",
        4.0,
    );
    server.wait_metric_at_least(
        "mediasoup_server_signaling_requests_total{type=\"invalid\",outcome=\"error\"}",
        4.0,
    );
}

#[tokio::test]
async fn oversized_frames_close_the_socket_with_1009_and_others_carry_on() {
    let server = Server::start(&[]);
    let mut a = Client::connect(&server.url("/table"), A).await;
    let mut b = Client::connect(&server.url("/table"), B).await;
    b.ok("getRouterRtpCapabilities", json!({})).await;
    let huge = format!(
        r#"{{"type":"produce","requestId":"r","userId":"{A}","pad":"{}"}}"#,
        "x".repeat(300 * 1024)
    );
    a.send_raw(Message::text(huge)).await;
    let (code, reason) = a.closed().await;
    assert_eq!(code, 1009, "{reason}");
    assert!(reason.contains("262144"), "{reason}");
    b.ok("getRouterRtpCapabilities", json!({})).await;
}

#[tokio::test]
async fn unusable_room_names_are_refused_at_the_upgrade() {
    let server = Server::start(&[]);
    for path in ["/%FF%FE", "/a%0Ab", &format!("/{}", "x".repeat(101))] {
        let error = tokio_tungstenite::connect_async(server.url(path))
            .await
            .expect_err(path);
        match error {
            tokio_tungstenite::tungstenite::Error::Http(response) => {
                assert_eq!(response.status(), 400, "{path}");
                let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                    .to_string();
                assert!(body.contains("room name"), "{path}: {body}");
            }
            other => panic!("{path}: {other}"),
        }
    }
    // A decoded name with spaces and a query string works.
    let mut a = Client::connect(&server.url("/my%20table?token=x"), A).await;
    a.ok("getRouterRtpCapabilities", json!({})).await;
}

/// A tiny deterministic generator (xorshift), so a failure replays exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }
}

#[tokio::test]
async fn mangled_requests_get_answers_and_break_nothing() {
    let server = Server::start(&[]);
    let mut b = Client::connect(&server.url("/table"), B).await;
    let b_join = b.join().await;
    let b_mic = b.produce(&b_join.send, "audio", "mic").await;
    let mut a = Client::connect(&server.url("/table"), A).await;
    let a_join = a.join().await;

    let templates = [
        json!({"type": "produce", "transportId": a_join.send, "kind": "video",
               "rtpParameters": common::chromium_rtp_parameters("video"), "appData": {"mediaTag": "webcam"}}),
        json!({"type": "consume", "producerId": b_mic, "rtpCapabilities": common::client_rtp_capabilities()}),
        json!({"type": "connectTransport", "transportId": a_join.recv, "dtlsParameters": common::dtls_parameters()}),
        json!({"type": "createWebRtcTransport", "forceTcp": false, "producing": true, "consuming": false}),
        json!({"type": "pauseProducer", "producerId": b_mic}),
        json!({"type": "consumerResume", "consumerId": b_mic}),
    ];
    // Where to damage a request, and what to put there.
    let paths: &[&[&str]] = &[
        &["type"],
        &["transportId"],
        &["kind"],
        &["producerId"],
        &["consumerId"],
        &["producing"],
        &["rtpParameters"],
        &["rtpParameters", "codecs"],
        &["rtpParameters", "encodings"],
        &["rtpParameters", "mid"],
        &["rtpParameters", "rtcp"],
        &["rtpParameters", "headerExtensions"],
        &["rtpCapabilities"],
        &["rtpCapabilities", "codecs"],
        &["dtlsParameters"],
        &["dtlsParameters", "role"],
        &["dtlsParameters", "fingerprints"],
        &["appData"],
        &["appData", "mediaTag"],
    ];
    let values = [
        json!(null),
        json!(-1),
        json!(1e308),
        json!(""),
        json!("x".repeat(2000)),
        json!([]),
        json!({}),
        json!(true),
        json!(4_294_967_296u64),
        json!([{"mimeType": "video/VP8"}]),
        json!({"codecs": [{}], "encodings": [{"ssrc": -5}]}),
        json!("5bd9f2bc-2e3b-4b1a-9b0e-3c3e6f3c8a11"),
    ];
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for i in 0..400 {
        let mut request = rng.pick(&templates).clone();
        for _ in 0..1 + rng.next() % 3 {
            let path = rng.pick(paths);
            let (last, parents) = path.split_last().unwrap();
            let mut target = &mut request;
            for key in parents {
                target = &mut target[*key];
            }
            if target.is_object() {
                target[*last] = rng.pick(&values).clone();
            }
        }
        let request_id = format!("mangled_{i}");
        request["requestId"] = json!(request_id);
        request["userId"] = json!(A);
        a.send_raw(Message::text(request.to_string())).await;
        let answer = a.answer(&request_id).await;
        assert!(
            answer.get("data").is_some() || answer["error"].is_string(),
            "{request} got {answer}"
        );
    }

    // Nothing broke: both peers, the room and the server carry on.
    a.ok("getRouterRtpCapabilities", json!({})).await;
    b.ok("pauseProducer", json!({"producerId": b_mic})).await;
    b.ok("resumeProducer", json!({"producerId": b_mic})).await;
    assert_eq!(common::http_get(server.addr, "/readyz").unwrap().0, 200);
    server.wait_metric("mediasoup_server_peers", 2.0);
}

#[tokio::test]
async fn media_ports_are_given_back_when_peers_leave() {
    // The harness gives each server 40 RTC ports; each transport takes one UDP and one TCP port,
    // so a join takes 2 of each and 25 joins (50) only succeed if every leave returns its ports.
    let server = Server::start(&[]);
    assert_eq!(server.rtc_ports.1 - server.rtc_ports.0 + 1, 40);
    for round in 0..25 {
        let mut peer = Client::connect(&server.url("/churn"), A).await;
        peer.join().await;
        peer.close().await;
        server.wait_metric("mediasoup_server_transports{direction=\"recv\"}", 0.0);
        server.wait_metric("mediasoup_server_rooms", 0.0);
        assert_eq!(
            server.metric("mediasoup_server_peers"),
            0.0,
            "round {round}"
        );
    }
}

/// A Chromium client's receiving capabilities with every video codec the router offers (VP8,
/// VP9 profile 0, H264 constrained baseline), as mediasoup-client's device announces them.
fn every_codec_rtp_capabilities() -> Value {
    let feedback = json!([{"type": "nack", "parameter": ""}, {"type": "nack", "parameter": "pli"},
                          {"type": "ccm", "parameter": "fir"}, {"type": "goog-remb", "parameter": ""},
                          {"type": "transport-cc", "parameter": ""}]);
    let video = |mime: &str, payload_type: u8, parameters: Value| {
        [
            json!({"kind": "video", "mimeType": mime, "clockRate": 90000, "preferredPayloadType": payload_type,
                   "parameters": parameters, "rtcpFeedback": feedback}),
            json!({"kind": "video", "mimeType": "video/rtx", "clockRate": 90000, "preferredPayloadType": payload_type + 1,
                   "parameters": {"apt": payload_type}, "rtcpFeedback": []}),
        ]
    };
    let opus = json!({"kind": "audio", "mimeType": "audio/opus", "clockRate": 48000, "channels": 2,
                      "preferredPayloadType": 100, "parameters": {},
                      "rtcpFeedback": [{"type": "transport-cc", "parameter": ""}]});
    let mut codecs = vec![opus];
    codecs.extend(video("video/VP8", 101, json!({})));
    codecs.extend(video("video/VP9", 103, json!({"profile-id": 0})));
    codecs.extend(video(
        "video/H264",
        105,
        json!({"level-asymmetry-allowed": 1, "packetization-mode": 1, "profile-level-id": "42e01f"}),
    ));
    json!({"codecs": codecs, "headerExtensions": []})
}

/// Chromium's webcam RTP parameters with `mime` (and its RTX) in place of VP8, as Chrome sends
/// them when it encodes with that codec.
fn video_rtp_parameters(mime: &str, payload_type: u8, parameters: &Value) -> Value {
    let mut rtp_parameters = common::chromium_rtp_parameters("video");
    let feedback = rtp_parameters["codecs"][0]["rtcpFeedback"].clone();
    rtp_parameters["codecs"] = json!([
        {"mimeType": mime, "payloadType": payload_type, "clockRate": 90000,
         "parameters": parameters, "rtcpFeedback": feedback},
        {"mimeType": "video/rtx", "payloadType": payload_type + 1, "clockRate": 90000,
         "parameters": {"apt": payload_type}, "rtcpFeedback": []},
    ]);
    rtp_parameters
}

#[tokio::test]
async fn vp9_and_h264_are_produced_and_consumed() {
    let server = Server::start(&[]);
    let mut b = Client::connect(&server.url("/table"), B).await;
    b.join().await;
    let cases = [
        (A, "video/VP9", 98, json!({"profile-id": 0})),
        (
            C,
            "video/H264",
            102,
            json!({"level-asymmetry-allowed": 1, "packetization-mode": 1, "profile-level-id": "42e01f"}),
        ),
    ];
    let mut producers = Vec::new();
    for (n, (user, mime, payload_type, parameters)) in cases.iter().enumerate() {
        let mut producer = Client::connect(&server.url("/table"), user).await;
        let join = producer.join().await;
        let id = producer
            .produce_with(
                &join.send,
                "video",
                "webcam",
                video_rtp_parameters(mime, *payload_type, parameters),
            )
            .await;
        let announced = b.notification_of("newProducer").await;
        assert_eq!(announced["producerId"], id.as_str());
        assert_eq!(
            announced["appData"]["rtpParameters"]["codecs"][0]["mimeType"],
            *mime
        );

        // A client that decodes VP8 only cannot consume it: the producer really is in `mime`.
        let error = b
            .error(
                "consume",
                json!({"producerId": id, "rtpCapabilities": common::client_rtp_capabilities()}),
            )
            .await;
        assert!(error.contains("cannot consume"), "{mime}: {error}");

        let data = b
            .ok(
                "consume",
                json!({"producerId": id, "rtpCapabilities": every_codec_rtp_capabilities()}),
            )
            .await;
        assert_eq!(data["producerId"], id.as_str());
        assert_eq!(data["kind"], "video");
        let codecs = data["rtpParameters"]["codecs"]
            .as_array()
            .unwrap_or_else(|| panic!("{mime}: {data}"));
        assert_eq!(codecs[0]["mimeType"], *mime, "{data}");
        for (key, value) in parameters.as_object().expect("parameters") {
            assert_eq!(codecs[0]["parameters"][key], *value, "{mime} {key}: {data}");
        }
        assert!(
            codecs.iter().any(|c| c["mimeType"] == "video/rtx"
                && c["parameters"]["apt"] == codecs[0]["payloadType"]),
            "{mime} with its RTX: {data}"
        );
        server.wait_metric("mediasoup_server_consumers{kind=\"video\"}", (n + 1) as f64);
        producers.push(producer);
    }
    server.wait_metric("mediasoup_server_producers{kind=\"video\"}", 2.0);
    assert_eq!(
        server.metric("mediasoup_server_consumers{kind=\"audio\"}"),
        0.0
    );
}

/// The harness's quiet checks mean something only on a live socket: on a closed one they must
/// fail instead of reporting "nothing arrived".
#[tokio::test]
#[should_panic(expected = "socket closed while checking that no notification arrives")]
async fn a_quiet_check_fails_on_a_closed_socket() {
    let server = Server::start(&[]);
    let mut a = Client::connect(&server.url("/table"), A).await;
    a.ok("getRouterRtpCapabilities", json!({})).await;
    // An oversized frame makes the server close the socket (1009).
    a.send_raw(Message::text("x".repeat(300 * 1024))).await;
    let _ = a.has_notification_within(QUIET).await;
}

/// Every series of a scrape, as its name and labels without the value.
fn series(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            line.rsplit_once(' ')
                .map_or(line, |(series, _)| series)
                .to_owned()
        })
        .collect()
}

/// The label values of one series (`name{a="x",b="y"}`), unescaped.
fn label_values(series: &str) -> Vec<String> {
    let Some((_, labels)) = series.split_once('{') else {
        return Vec::new();
    };
    let mut values = Vec::new();
    let mut chars = labels.chars();
    loop {
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if name.trim().is_empty() || name.trim() == "}" {
            break;
        }
        assert_eq!(chars.next(), Some('"'), "label {name} of {series}");
        let mut value = String::new();
        loop {
            match chars.next() {
                Some('\\') => value.extend(chars.next()),
                Some('"') => break,
                Some(c) => value.push(c),
                None => panic!("unterminated label value in {series}"),
            }
        }
        values.push(value);
        match chars.next() {
            Some(',') => {}
            Some('}') | None => break,
            Some(other) => panic!("unexpected {other:?} after a label value in {series}"),
        }
    }
    values
}

fn looks_like_uuid(value: &str) -> bool {
    value.len() == 36
        && value.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Two peers in `room` who join, connect, produce (the video with a tag of their own), consume
/// each other and send a request of an unknown type. Returns them and every name and id of
/// theirs that a label must never carry.
async fn busy_room(server: &Server, room: &str, n: usize) -> (Vec<Client>, Vec<String>) {
    let mut secrets = vec![room.to_owned()];
    let mut peers = Vec::new();
    let mut produced = Vec::new();
    for user in [
        format!("ZebraQuokka{n:02}AA"),
        format!("ZebraQuokka{n:02}BB"),
    ] {
        let mut peer = Client::connect(&server.url(&format!("/{room}")), &user).await;
        let join = peer.join().await;
        for transport in [&join.send, &join.recv] {
            peer.ok(
                "connectTransport",
                json!({"transportId": transport, "dtlsParameters": common::dtls_parameters()}),
            )
            .await;
        }
        let tag = format!("quokkaTag{n}");
        let mic = peer.produce(&join.send, "audio", "mic").await;
        let cam = peer.produce(&join.send, "video", &tag).await;
        let kind = format!("quokkaType{n}");
        let error = peer.error(&kind, json!({})).await;
        assert!(error.contains("unknown request type"), "{error}");
        secrets.extend([
            user,
            tag,
            kind,
            join.send,
            join.recv,
            mic.clone(),
            cam.clone(),
        ]);
        produced.push([mic, cam]);
        peers.push(peer);
    }
    for (peer, others) in [(0, 1), (1, 0)] {
        for producer in &produced[others] {
            let consumer = peers[peer]
                .ok(
                    "consume",
                    json!({"producerId": producer, "rtpCapabilities": common::client_rtp_capabilities()}),
                )
                .await;
            secrets.push(consumer["id"].as_str().expect("consumer id").to_owned());
        }
    }
    (peers, secrets)
}

/// Waits until the stats poller finished two more rounds, so that the last one saw everything
/// that exists now.
fn wait_stats_rounds(server: &Server) {
    let series = "mediasoup_server_stats_poll_duration_seconds_count";
    let rounds = common::metric_value(&server.scrape(), series).unwrap_or(0.0);
    server.wait_metric_at_least(series, rounds + 2.0);
}

#[tokio::test]
async fn metric_labels_carry_no_names_or_ids_and_do_not_grow_with_rooms() {
    let server = Server::start(&[("MEDIASOUP_STATS_INTERVAL_SECS", "1")]);
    let first_scrape = server.scrape();

    let (mut peers, mut secrets) = busy_room(&server, "zebra-quokka-room-1", 1).await;
    server.wait_metric("mediasoup_server_consumers{kind=\"video\"}", 2.0);
    wait_stats_rounds(&server);
    let one_room = server.scrape();

    for n in [2, 3] {
        let (more, names) = busy_room(&server, &format!("zebra-quokka-room-{n}"), n).await;
        peers.extend(more);
        secrets.extend(names);
    }
    // Leaving and replacing publish events that carry user ids and room names too.
    peers.remove(2).close().await;
    let mut again = Client::connect(&server.url("/zebra-quokka-room-3"), &peers[4].user_id).await;
    again.ok("getRouterRtpCapabilities", json!({})).await;
    let (code, _) = peers[4].closed().await;
    assert_eq!(code, 4000);
    // The sink has everything up to here once two more stats rounds are counted (the bus keeps
    // the order); from then on these gauges only come down to their final values.
    wait_stats_rounds(&server);
    server.wait_metric("mediasoup_server_peers", 5.0);
    // Room 1's two; rooms 2 and 3 lost theirs with the peer that left and the one replaced.
    server.wait_metric("mediasoup_server_consumers{kind=\"video\"}", 2.0);
    wait_stats_rounds(&server);
    let three_rooms = server.scrape();

    for (name, scrape) in [("one room", &one_room), ("three rooms", &three_rooms)] {
        let values: BTreeSet<String> = series(scrape)
            .iter()
            .flat_map(|series| label_values(series))
            .collect();
        for expected in ["audio", "video", "consume", "dtls_connected", "0"] {
            assert!(
                values.contains(expected),
                "{name}: label value {expected:?} not among {values:?}"
            );
        }
        for series in series(scrape) {
            for value in label_values(&series) {
                assert!(!looks_like_uuid(&value), "{name}: an id in {series}");
                if let Some(secret) = secrets.iter().find(|s| value.contains(s.as_str())) {
                    panic!("{name}: {secret:?} in {series}");
                }
            }
        }
    }
    let (one, three) = (series(&one_room), series(&three_rooms));
    assert_eq!(
        three.difference(&one).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "series that two more rooms added"
    );
    assert_eq!(
        one.symmetric_difference(&series(&first_scrape))
            .collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "series not there from the first scrape, or gone"
    );
    assert_eq!(one, three);
}
