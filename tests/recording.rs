//! Recording seen from outside with the raw protocol client (README, "Recording"): which rooms
//! and users are recorded, hostile user ids kept inside the directory, and a write error that
//! stops a room's recording but not its signaling. Media and file contents: tests/e2e/recording.test.mjs.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use common::{wait_until, Client, Server, DEADLINE};
use serde_json::{json, Value};

const ACTIVE: &str = "mediasoup_server_recordings_active";
const ERRORS: &str = "mediasoup_server_recording_write_errors_total";

/// A fresh directory under the temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "mediasoup-recording-{what}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every file below `dir`, as paths relative to it.
fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).expect("read_dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path.strip_prefix(dir).expect("below").to_path_buf());
            }
        }
    }
    found.sort();
    found
}

fn manifest(session: &Path) -> Value {
    let text = std::fs::read_to_string(session.join("manifest.json")).expect("manifest.json");
    serde_json::from_str(&text).expect("manifest is JSON")
}

#[tokio::test]
async fn only_configured_rooms_and_users_are_recorded_and_hostile_ids_stay_inside() {
    let dir = TempDir::new("rules");
    let recordings = dir.0.join("recordings");
    let server = Server::start(&[
        (
            "MEDIASOUP_RECORDINGS_DIR",
            recordings.to_str().expect("utf-8"),
        ),
        ("MEDIASOUP_RECORD_ROOMS", "rec-*"),
        ("MEDIASOUP_RECORD_EXCLUDE_USERS", "ExcludedUser0001"),
    ]);

    let mut excluded = Client::connect(&server.url("/rec-a"), "ExcludedUser0001").await;
    let joined = excluded.join().await;
    excluded.produce(&joined.send, "audio", "mic").await;
    let mut hostile = Client::connect(&server.url("/rec-a"), "../../etc").await;
    let joined = hostile.join().await;
    let first = hostile.produce(&joined.send, "audio", "mic").await;
    hostile.produce(&joined.send, "video", "webcam").await;
    let mut elsewhere = Client::connect(&server.url("/plain"), "PlainUser0000001").await;
    let plain_join = elsewhere.join().await;
    elsewhere.produce(&plain_join.send, "audio", "mic").await;

    server.wait_metric(ACTIVE, 1.0);
    // A replaced microphone: the next file of the same user.
    let second = hostile.produce(&joined.send, "audio", "mic").await;
    let files = || files_below(&recordings);
    wait_until("the second file and its manifest entry", DEADLINE, || {
        files().len() == 3
            && files_below(&recordings).iter().any(|f| {
                f.file_name().is_some_and(|n| n == "manifest.json")
                    && manifest(&recordings.join(f.parent().expect("session")))["files"]
                        .as_array()
                        .is_some_and(|f| f.len() == 2)
            })
    });
    server.wait_metric(ACTIVE, 1.0);

    let files = files();
    let session = recordings.join(files[0].parent().expect("session dir"));
    assert!(
        files.iter().all(|f| f.starts_with("rec-a")),
        "only the recorded room has files: {files:?}"
    );
    let names: Vec<String> = files
        .iter()
        .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
        .filter(|n| !n.starts_with('.'))
        .collect();
    let user = mediasoup_server::recording::file_name("../../etc");
    assert!(!user.contains('/') && !user.starts_with('.'), "{user}");
    assert_eq!(
        names,
        [
            format!("{user}-1.opus"),
            format!("{user}-2.opus"),
            "manifest.json".to_owned()
        ],
        "one file per microphone of the hostile user, nothing of the excluded one"
    );
    let manifest = manifest(&session);
    assert_eq!(manifest["room"], "rec-a");
    let entries = manifest["files"].as_array().expect("files");
    assert_eq!(entries[0]["userId"], "../../etc");
    assert_eq!(entries[0]["producerId"], json!(first));
    assert_eq!(entries[1]["producerId"], json!(second));
    assert!(
        entries[0]["endMs"].as_u64().is_some(),
        "the replaced file ended"
    );
    assert!(entries[1]["endMs"].is_null(), "the current one goes on");
    assert!(!recordings.join("plain").exists());
    assert!(!dir.0.join("etc").exists() && !recordings.join("etc").exists());

    hostile.close().await;
    server.wait_metric(ACTIVE, 0.0);
    assert_eq!(server.metric(ERRORS), 0.0);
    excluded.close().await;
    elsewhere.close().await;
    assert!(server.terminate().success());
}

#[tokio::test]
async fn a_write_error_stops_the_rooms_recording_and_nothing_else() {
    let dir = TempDir::new("error");
    // A file where the recordings directory should be: no directory can be made below it,
    // whoever runs the test (root included).
    let blocked = dir.0.join("recordings");
    std::fs::write(&blocked, "not a directory").expect("write");
    let server = Server::start(&[
        ("MEDIASOUP_RECORDINGS_DIR", blocked.to_str().expect("utf-8")),
        ("MEDIASOUP_RECORD_ROOMS", "*"),
    ]);
    let url = server.url("/table");
    let mut a = Client::connect(&url, "UserA00000000001").await;
    let a_join = a.join().await;
    let mut b = Client::connect(&url, "UserB00000000001").await;
    b.join().await;

    let mic = a.produce(&a_join.send, "audio", "mic").await;
    server.wait_metric(ERRORS, 1.0);
    assert_eq!(server.metric(ACTIVE), 0.0);

    // Signaling and media objects go on: B hears of A's producers and consumes them, A produces
    // more; the room's recording stays stopped (one error, one log line).
    let cam = a.produce(&a_join.send, "video", "webcam").await;
    let mic2 = a.produce(&a_join.send, "audio", "mic").await;
    let mut announced = Vec::new();
    while announced.len() < 3 {
        let note = b.notification_of("newProducer").await;
        announced.push(note["producerId"].as_str().expect("id").to_owned());
    }
    assert_eq!(announced, [mic.clone(), cam, mic2.clone()]);
    let consumed = b
        .ok(
            "consume",
            json!({"producerId": mic2, "rtpCapabilities": common::client_rtp_capabilities()}),
        )
        .await;
    assert_eq!(consumed["producerId"], json!(mic2));
    assert_eq!(server.metric(ERRORS), 1.0);
    assert_eq!(
        server.metric("mediasoup_server_producers{kind=\"audio\"}"),
        1.0
    );
    let failures = server
        .log()
        .iter()
        .filter(|line| line.contains("recording of the room stopped"))
        .count();
    assert_eq!(failures, 1, "one error line: {:?}", server.log());
    assert!(std::fs::metadata(&blocked).expect("still there").is_file());

    a.close().await;
    b.close().await;
    assert!(server.terminate().success());
}
