//! CPU cost of recording an audio stream, against forwarding it alone. In-process: one worker,
//! one router; `STREAMS` audio producers on a DirectTransport are fed 20 ms Opus-sized RTP
//! packets at 50 per second each, and each is forwarded to a PlainTransport consumer (UDP to a
//! loopback socket that drains it). The same load runs twice, without and then with recording
//! (a DirectTransport consumer per producer, the writer thread, files in a temp dir); the CPU
//! time of the whole process (worker threads included) is compared.
//! Run: `cargo bench --bench recording`; `cargo test` runs it briefly as a check.

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mediasoup::prelude::*;
use mediasoup_server::bus::{BusBuilder, RoomName};
use mediasoup_server::config::{Recording, RoomPattern};
use mediasoup_server::recording::Recorder;
use mediasoup_server::rooms::media_codecs;
use tracing::Span;

struct Size {
    streams: u32,
    seconds: u64,
}

const BENCH: Size = Size {
    streams: 40,
    seconds: 20,
};
const TEST: Size = Size {
    streams: 4,
    seconds: 2,
};

/// CPU time (user + system) of the whole process so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// One RTP packet: payload type 111 (Chromium's Opus), a 20 ms CELT TOC and 80 bytes.
fn rtp(ssrc: u32, sequence: u16, timestamp: u32) -> Vec<u8> {
    let mut packet = vec![0x80, 111];
    packet.extend_from_slice(&sequence.to_be_bytes());
    packet.extend_from_slice(&timestamp.to_be_bytes());
    packet.extend_from_slice(&ssrc.to_be_bytes());
    packet.push(31 << 3);
    packet.extend((0..79u8).map(|i| i.wrapping_mul(37)));
    packet
}

async fn measure(size: &Size, record: bool) -> Duration {
    let manager = WorkerManager::new();
    let worker = manager
        .create_worker(WorkerSettings::default())
        .await
        .expect("worker");
    let router = worker
        .create_router(RouterOptions::new(media_codecs()))
        .await
        .expect("router");
    let capabilities: RtpCapabilities =
        serde_json::from_value(serde_json::to_value(router.rtp_capabilities()).unwrap()).unwrap();
    let ingress = router
        .create_direct_transport(DirectTransportOptions::default())
        .await
        .expect("direct transport");

    let sink = UdpSocket::bind("127.0.0.1:0").expect("sink");
    sink.set_read_timeout(Some(Duration::from_millis(200))).ok();
    let sink_port = sink.local_addr().expect("addr").port();
    let draining = Arc::new(AtomicBool::new(true));
    let drain = {
        let draining = draining.clone();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 2048];
            while draining.load(Ordering::Relaxed) {
                let _ = sink.recv(&mut buffer);
            }
        })
    };

    let dir =
        std::env::temp_dir().join(format!("mediasoup-bench-recording-{}", std::process::id()));
    let recorder = Recorder::start(
        Recording {
            dir: PathBuf::from(&dir),
            rooms: vec![RoomPattern::Prefix(String::new())],
            exclude_users: Vec::new(),
        },
        BusBuilder::default().build(),
    )
    .expect("recorder");
    let room: RoomName = "bench".into();
    let recording = if record {
        Some(
            recorder
                .open_room(&room, &router, &Span::none())
                .await
                .expect("recording opens"),
        )
    } else {
        None
    };

    let mut producers = Vec::new();
    let mut keep = Vec::new();
    for index in 0..size.streams {
        let ssrc = 10_000 + index;
        let mut parameters: RtpParameters =
            serde_json::from_value(common::chromium_rtp_parameters("audio")).expect("params");
        parameters.mid = None;
        parameters.header_extensions.clear();
        parameters.encodings[0].ssrc = Some(ssrc);
        let producer = ingress
            .produce(ProducerOptions::new(MediaKind::Audio, parameters))
            .await
            .expect("produce");
        let egress = router
            .create_plain_transport(PlainTransportOptions::new(ListenInfo {
                protocol: Protocol::Udp,
                ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                announced_address: None,
                expose_internal_ip: false,
                port: None,
                port_range: None,
                flags: None,
                send_buffer_size: None,
                recv_buffer_size: None,
            }))
            .await
            .expect("plain transport");
        egress
            .connect(PlainTransportRemoteParameters {
                ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                port: Some(sink_port),
                rtcp_port: None,
                srtp_parameters: None,
            })
            .await
            .expect("connect");
        let consumer = egress
            .consume(ConsumerOptions::new(producer.id(), capabilities.clone()))
            .await
            .expect("consume");
        if let Some(recording) = &recording {
            recording.start(&Arc::from(format!("user{index}")), &producer);
        }
        let Producer::Direct(direct) = producer.clone() else {
            panic!("a DirectTransport makes direct producers");
        };
        producers.push((ssrc, direct));
        keep.push((producer, egress, consumer));
    }
    // Let the recording consumers come up before the clock starts.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let started = cpu_time();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for step in 0..(size.seconds * 50) {
        tick.tick().await;
        for (ssrc, producer) in &producers {
            let _ = producer.send(rtp(*ssrc, step as u16, (step as u32) * 960));
        }
    }
    let used = cpu_time() - started;

    drop(recording);
    recorder.flush(Duration::from_secs(5));
    drop(keep);
    draining.store(false, Ordering::Relaxed);
    let _ = drain.join();
    let _ = std::fs::remove_dir_all(&dir);
    used
}

#[tokio::main]
async fn main() {
    let size = if std::env::args().any(|a| a == "--bench") {
        BENCH
    } else {
        TEST
    };
    let forwarding = measure(&size, false).await;
    let recording = measure(&size, true).await;
    let per_stream =
        |d: Duration| d.as_secs_f64() * 1000.0 / size.seconds as f64 / f64::from(size.streams);
    println!(
        "{} audio streams at 50 packets/s for {} s, CPU time of the process (worker included):",
        size.streams, size.seconds
    );
    println!(
        "  forwarding only:          {:7.1} ms CPU/s, {:.3} ms CPU/s per stream",
        forwarding.as_secs_f64() * 1000.0 / size.seconds as f64,
        per_stream(forwarding)
    );
    println!(
        "  forwarding + recording:   {:7.1} ms CPU/s, {:.3} ms CPU/s per stream",
        recording.as_secs_f64() * 1000.0 / size.seconds as f64,
        per_stream(recording)
    );
    let extra = recording.saturating_sub(forwarding);
    println!(
        "  recording adds {:.3} ms CPU/s per stream ({:.0}% of forwarding it)",
        per_stream(extra),
        100.0 * extra.as_secs_f64() / forwarding.as_secs_f64().max(1e-9)
    );
}
