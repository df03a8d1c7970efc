//! Peers that leave while they hold ICE-TCP connections to their transports.
//!
//! The worker used to dereference a null ICE server while destroying a WebRtcTransport that had
//! an ICE-TCP tuple, killing the whole process (worker-build/patches/
//! webrtctransport-ice-tcp-close-reentry.patch). Browsers open such connections whenever TCP
//! candidates are offered, and anyone can open one by hand, as these tests do: a raw TCP
//! connection to the transport's TCP candidate carrying a valid STUN Binding Request (RFC 4571
//! framing, the transport's ICE credentials, USE-CANDIDATE), so the worker holds a selected
//! ICE-TCP tuple. Then the peer leaves in each way a peer can, with tuples on both of its
//! transports, and the server must keep serving. Likewise with the tuple a browser leaves beside
//! a selected UDP path: an ICE-TCP connection whose Binding did not nominate it. Each test runs
//! in both media modes: with a port per transport, and through the worker's WebRtcServer
//! (`MEDIASOUP_RTC_PORT`), whose TCP connections the worker hands from the server to the
//! transport and back (`RemoveTuple`).

mod common;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::{AtomicU32, Ordering};

use common::{Client, Server, DEADLINE};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{json, Value};

const TCP_TUPLES: &str = r#"mediasoup_server_ice_selected_tuples_total{protocol="tcp"}"#;
const UDP_TUPLES: &str = r#"mediasoup_server_ice_selected_tuples_total{protocol="udp"}"#;

/// Whether a STUN Binding Request nominates its pair (USE-CANDIDATE): the worker selects a
/// nominated pair, and keeps any other pair it was asked about beside the selected one.
#[derive(Clone, Copy)]
enum Nominate {
    Yes,
    No,
}

/// The candidate of `transport` (a `transportCreated` answer) for `protocol`, as host:port.
fn candidate_address(transport: &Value, protocol: &str) -> String {
    let candidate = transport["iceCandidates"]
        .as_array()
        .expect("iceCandidates")
        .iter()
        .find(|c| c["protocol"] == protocol)
        .unwrap_or_else(|| panic!("no {protocol} candidate in {transport}"));
    format!(
        "{}:{}",
        candidate["address"].as_str().expect("candidate address"),
        candidate["port"]
    )
}

/// Checks that `response` is the Binding Success Response to `request` from `address`.
fn assert_binding_success(response: &[u8], request: &[u8], address: &str) {
    assert_eq!(
        &response[..2],
        &[0x01, 0x01],
        "a Binding Success Response from {address}"
    );
    assert_eq!(
        &response[8..20],
        &request[8..20],
        "the request's transaction id"
    );
}

/// An ICE path the worker knows: an ICE-TCP connection or a UDP socket whose STUN Binding it
/// answered. The worker keeps its tuple until the path or the transport goes.
enum IcePath {
    Tcp { _stream: TcpStream },
    Udp { _socket: UdpSocket },
}

impl IcePath {
    /// Connects to the TCP candidate of `transport` and binds (RFC 4571 framing).
    fn tcp(transport: &Value, nominate: Nominate) -> IcePath {
        let address = candidate_address(transport, "tcp");
        let request = binding_request(transport, nominate);
        let mut stream = TcpStream::connect(&address).unwrap_or_else(|e| panic!("{address}: {e}"));
        stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
        let length = u16::try_from(request.len()).expect("short request");
        stream
            .write_all(&length.to_be_bytes())
            .expect("frame length");
        stream.write_all(&request).expect("STUN request");

        let mut length = [0u8; 2];
        stream
            .read_exact(&mut length)
            .expect("response frame length");
        let mut response = vec![0u8; usize::from(u16::from_be_bytes(length))];
        stream.read_exact(&mut response).expect("response frame");
        assert_binding_success(&response, &request, &address);
        IcePath::Tcp { _stream: stream }
    }

    /// Binds from a UDP socket of its own to the UDP candidate of `transport`, nominating it.
    fn udp(transport: &Value) -> IcePath {
        let address = candidate_address(transport, "udp");
        let request = binding_request(transport, Nominate::Yes);
        let socket = UdpSocket::bind("0.0.0.0:0").expect("UDP socket");
        socket.set_read_timeout(Some(DEADLINE)).expect("timeout");
        socket
            .connect(&address)
            .unwrap_or_else(|e| panic!("{address}: {e}"));
        socket.send(&request).expect("STUN request");
        let mut response = [0u8; 1500];
        let length = socket.recv(&mut response).expect("STUN response");
        assert_binding_success(&response[..length], &request, &address);
        IcePath::Udp { _socket: socket }
    }
}

/// A STUN Binding Request to `transport` with its ICE credentials, as the browser's controlling
/// agent sends it (RFC 8445 7.1.2), nominating the pair or not.
fn binding_request(transport: &Value, nominate: Nominate) -> Vec<u8> {
    static TRANSACTION: AtomicU32 = AtomicU32::new(1);
    let ice = &transport["iceParameters"];
    let server_ufrag = ice["usernameFragment"].as_str().expect("usernameFragment");
    let password = ice["password"].as_str().expect("password");
    let mut message = Vec::new();
    message.extend_from_slice(&0x0001u16.to_be_bytes()); // Binding Request
    message.extend_from_slice(&0u16.to_be_bytes()); // length, set below
    message.extend_from_slice(&0x2112_A442u32.to_be_bytes()); // magic cookie
    message.extend_from_slice(&std::process::id().to_be_bytes());
    message.extend_from_slice(&TRANSACTION.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    message.extend_from_slice(b"ice!");
    attribute(
        &mut message,
        0x0006,
        format!("{server_ufrag}:test").as_bytes(),
    ); // USERNAME
    attribute(&mut message, 0x0024, &0x6e00_1effu32.to_be_bytes()); // PRIORITY
    attribute(&mut message, 0x802a, &7u64.to_be_bytes()); // ICE-CONTROLLING
    if let Nominate::Yes = nominate {
        attribute(&mut message, 0x0025, &[]); // USE-CANDIDATE
    }

    // MESSAGE-INTEGRITY covers the message with a length that already counts it (RFC 5389 15.4).
    set_length(&mut message, 24);
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(password.as_bytes()).expect("any key size");
    mac.update(&message);
    attribute(&mut message, 0x0008, &mac.finalize().into_bytes());

    // FINGERPRINT likewise (RFC 5389 15.5).
    set_length(&mut message, 8);
    let fingerprint = crc32fast::hash(&message) ^ 0x5354_554e;
    attribute(&mut message, 0x8028, &fingerprint.to_be_bytes());
    set_length(&mut message, 0);
    message
}

fn attribute(message: &mut Vec<u8>, kind: u16, value: &[u8]) {
    message.extend_from_slice(&kind.to_be_bytes());
    message.extend_from_slice(&u16::try_from(value.len()).expect("short").to_be_bytes());
    message.extend_from_slice(value);
    message.resize(message.len().next_multiple_of(4), 0);
}

/// Sets the header's length to the attributes so far plus `more` bytes to come.
fn set_length(message: &mut [u8], more: usize) {
    let length = u16::try_from(message.len() - 20 + more).expect("short message");
    message[2..4].copy_from_slice(&length.to_be_bytes());
}

/// A peer that joined, produced audio and video, and holds ICE paths to both transports.
struct IcePeer {
    client: Client,
    _paths: Vec<IcePath>,
}

/// Joins `room` as `user` (both transports, audio and video produced); returns the client and
/// the two transports' answers.
async fn join_and_produce(server: &Server, room: &str, user: &str) -> (Client, Vec<Value>) {
    let mut client = Client::connect(&server.url(room), user).await;
    client.ok("getRouterRtpCapabilities", json!({})).await;
    let mut transports = Vec::new();
    for (producing, consuming) in [(true, false), (false, true)] {
        let fields = json!({"forceTcp": false, "producing": producing, "consuming": consuming,
                            "sctpCapabilities": {"numStreams": {"OS": 1024, "MIS": 1024}}});
        transports.push(client.ok("createWebRtcTransport", fields).await);
    }
    if let Some(first) = server.media_port {
        // Through the worker's WebRtcServer: its port (one of two workers at most), none of
        // the transport's own.
        for candidate in transports
            .iter()
            .flat_map(|t| t["iceCandidates"].as_array())
            .flatten()
        {
            let port = candidate["port"].as_u64().expect("candidate port");
            assert!(
                (u64::from(first)..=u64::from(first) + 1).contains(&port),
                "{candidate}"
            );
        }
    }
    let send = transports[0]["id"]
        .as_str()
        .expect("transport id")
        .to_owned();
    client.produce(&send, "audio", "mic").await;
    client.produce(&send, "video", "webcam").await;
    (client, transports)
}

/// A peer whose transports both have a selected ICE-TCP tuple.
async fn join_with_tcp_tuples(server: &Server, room: &str, user: &str) -> IcePeer {
    let tuples_before = server.metric(TCP_TUPLES);
    let (client, transports) = join_and_produce(server, room, user).await;
    let paths = transports
        .iter()
        .map(|t| IcePath::tcp(t, Nominate::Yes))
        .collect();
    // The worker reports each selected tuple; both must be TCP ones.
    server.wait_metric(TCP_TUPLES, tuples_before + 2.0);
    IcePeer {
        client,
        _paths: paths,
    }
}

/// A peer whose transports both have a selected UDP tuple and, beside it, an ICE-TCP tuple
/// that is not selected: what a browser holds for a while after UDP won its candidate checks.
async fn join_with_udp_and_tcp_beside(server: &Server, room: &str, user: &str) -> IcePeer {
    let (udp_before, tcp_before) = (server.metric(UDP_TUPLES), server.metric(TCP_TUPLES));
    let (client, transports) = join_and_produce(server, room, user).await;
    let mut paths = Vec::new();
    for transport in &transports {
        paths.push(IcePath::udp(transport));
        paths.push(IcePath::tcp(transport, Nominate::No));
    }
    server.wait_metric(UDP_TUPLES, udp_before + 2.0);
    // Answered, so the worker keeps the TCP tuples, but does not select them.
    assert_eq!(server.metric(TCP_TUPLES), tcp_before);
    IcePeer {
        client,
        _paths: paths,
    }
}

/// The server is alive and serves a complete new join, and everything `left` peers held is gone.
async fn assert_still_serving(server: &Server, peers_left: f64) {
    server.wait_metric("mediasoup_server_peers", peers_left);
    let mut probe = Client::connect(&server.url("/after-departure"), "probe").await;
    probe.join().await;
    probe.close().await;
    server.wait_metric("mediasoup_server_peers", peers_left);
    assert_eq!(server.metric("mediasoup_server_worker_deaths_total"), 0.0);
}

async fn room_of_two(server: &Server, room: &str) -> (IcePeer, IcePeer) {
    let leaver = join_with_tcp_tuples(server, room, "leaver").await;
    let stayer = join_with_tcp_tuples(server, room, "stayer").await;
    (leaver, stayer)
}

in_both_media_modes! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn leaving_with_a_close_frame(media) {
        let server = Server::start_in(media, &[]);
        let (leaver, mut stayer) = room_of_two(&server, "/close-frame").await;
        leaver.client.close().await;
        stayer.client.notification_of("producerClosed").await;
        assert_still_serving(&server, 1.0).await;
        drop(stayer);
        assert_still_serving(&server, 0.0).await;
        assert_eq!(
            server.metric(r#"mediasoup_server_transports{direction="send"}"#),
            0.0
        );
        assert_eq!(
            server.metric(r#"mediasoup_server_transports{direction="recv"}"#),
            0.0
        );
    }
}

in_both_media_modes! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn leaving_by_dropping_the_socket(media) {
        let server = Server::start_in(media, &[]);
        let (leaver, mut stayer) = room_of_two(&server, "/dropped").await;
        // No close frame: the TCP connection just ends, as when a proxy restarts.
        drop(leaver.client);
        stayer.client.notification_of("producerClosed").await;
        assert_still_serving(&server, 1.0).await;
        // The leaver's ICE-TCP connections are still open on our side; closing them now is
        // harmless.
        drop(leaver._paths);
        assert_still_serving(&server, 1.0).await;
    }
}

in_both_media_modes! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn leaving_by_connecting_again_as_the_same_user(media) {
        let server = Server::start_in(media, &[]);
        let (leaver, mut stayer) = room_of_two(&server, "/reload").await;
        let again = join_with_tcp_tuples(&server, "/reload", "leaver").await;
        stayer.client.notification_of("producerClosed").await;
        assert_still_serving(&server, 2.0).await;
        drop((leaver, again));
        assert_still_serving(&server, 1.0).await;
    }
}

in_both_media_modes! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ice_tcp_connections_that_end_first_change_nothing(media) {
        let server = Server::start_in(media, &[]);
        let (leaver, stayer) = room_of_two(&server, "/tcp-first").await;
        let IcePeer { client, _paths } = leaver;
        drop(_paths);
        assert_still_serving(&server, 2.0).await;
        client.close().await;
        assert_still_serving(&server, 1.0).await;
        drop(stayer);
    }
}

in_both_media_modes! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutting_down_with_ice_tcp_tuples_open(media) {
        let server = Server::start_in(media, &[]);
        let peers = room_of_two(&server, "/shutdown").await;
        let status = tokio::task::spawn_blocking(move || server.terminate())
            .await
            .expect("terminate");
        assert_eq!(status.code(), Some(0), "exit status {status:?}");
        assert_eq!(status.signal(), None);
        drop(peers);
    }
}

in_both_media_modes! {
    /// Twenty departures in a row on two workers, each while its ICE-TCP connections stay open.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn twenty_departures_in_a_row(media) {
        let server = Server::start_in(media, &[("MEDIASOUP_NUM_WORKERS", "2")]);
        let mut open_tuples = Vec::new();
        for round in 0..20 {
            let room = format!("/round-{}", round % 4);
            let IcePeer { client, _paths } =
                join_with_tcp_tuples(&server, &room, &format!("user-{round}")).await;
            match round % 2 {
                0 => client.close().await,
                _ => drop(client),
            }
            server.wait_metric("mediasoup_server_peers", 0.0);
            // Closed by the test only at the end: the transports must go while they are open.
            open_tuples.push(_paths);
        }
        // Every worker answers a health probe sent after the last departure, so it has handled
        // the transports' closing by now.
        for worker in ["0", "1"] {
            let probes = format!(
                r#"mediasoup_server_worker_probe_duration_seconds_count{{worker="{worker}"}}"#
            );
            let seen = server.metric(&probes);
            server.wait_metric_at_least(&probes, seen + 1.0);
        }
        assert_still_serving(&server, 0.0).await;
        drop(open_tuples);
    }
}

in_both_media_modes! {
    /// When UDP wins a browser's candidate checks, the ICE-TCP connection it opened meanwhile
    /// stays for a while beside the selected UDP path (the e2e real-path test sees Chromium do
    /// it, more or less often depending on the machine); peers leaving then, with a close frame
    /// and without, must be as harmless.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn leaving_with_an_ice_tcp_connection_beside_the_selected_udp_path(media) {
        let server = Server::start_in(media, &[]);
        let mut stayer = join_with_tcp_tuples(&server, "/udp-won", "stayer").await;
        let closer = join_with_udp_and_tcp_beside(&server, "/udp-won", "closer").await;
        let dropper = join_with_udp_and_tcp_beside(&server, "/udp-won", "dropper").await;
        closer.client.close().await;
        drop(dropper.client);
        stayer.client.notification_of("producerClosed").await;
        assert_still_serving(&server, 1.0).await;
        drop((closer._paths, dropper._paths));
        assert_still_serving(&server, 1.0).await;
    }
}
