//! Runs the C tests of the libsrtp 3 API adapter (tests/srtp-adapter/adapter_test.c) against the
//! very libmediasoup-worker.a this server links: all four crypto suites, RTP and RTCP.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The worker archive cargo built for this profile (newest, if several builds exist).
fn worker_archive() -> PathBuf {
    let profile_dir = Path::new(env!("CARGO_BIN_EXE_mediasoup-server"))
        .parent()
        .expect("target/<profile>");
    let build = profile_dir.join("build");
    std::fs::read_dir(&build)
        .unwrap_or_else(|e| panic!("{}: {e}", build.display()))
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("mediasoup-sys-")
        })
        .map(|e| e.path().join("out/libmediasoup-worker.a"))
        .filter(|p| p.exists())
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .expect("libmediasoup-worker.a under target/<profile>/build/mediasoup-sys-*/out")
}

#[test]
fn srtp_adapter_passes_its_c_tests() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::env::temp_dir().join(format!("adapter_test-{}", std::process::id()));
    let compiled = Command::new("cc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-O1", "-I"])
        .arg(root.join("worker-build/shims/libsrtp3/include"))
        .arg(root.join("tests/srtp-adapter/adapter_test.c"))
        .arg(worker_archive())
        .args(["-lpthread", "-ldl", "-o"])
        .arg(&out)
        .status()
        .expect("run cc");
    assert!(compiled.success(), "compiling the adapter test failed");

    let run = Command::new(&out).output().expect("run the adapter test");
    let _ = std::fs::remove_file(&out);
    let stdout = String::from_utf8_lossy(&run.stdout);
    println!("{stdout}");
    assert!(run.status.success(), "{stdout}");
    for suite in [
        "AES_CM_128_HMAC_SHA1_80",
        "AES_CM_128_HMAC_SHA1_32",
        "AEAD_AES_128_GCM",
        "AEAD_AES_256_GCM",
    ] {
        assert!(
            stdout.contains(&format!("{suite} done")),
            "{suite}: {stdout}"
        );
    }
    assert!(stdout.contains(" 0 failed"), "{stdout}");
}
