//! Tests of the libsrtp 3 API adapter (worker-build/shims/libsrtp3) that mediasoup's SRTP runs
//! on, linked from the very libmediasoup-worker.a this server links. All four crypto suites
//! mediasoup negotiates: AES_CM_128_HMAC_SHA1_80/_32, AEAD_AES_128_GCM, AEAD_AES_256_GCM.
//!
//! - `srtp_adapter_passes_its_c_tests`: tests/srtp-adapter/adapter_test.c: the API's behaviour,
//!   the known answers of tests/srtp-adapter/known_answers.txt in both directions (libsrtp's
//!   published srtp_validate packets and packets derived from RFC 3711 / 6188 / 7714), the
//!   replay window, rollover-counter inference across 65535 -> 0, and SRTCP index handling.
//! - `srtp_adapter_interoperates_with_an_independent_srtp`: tests/srtp-adapter/srtp_reference.py,
//!   an SRTP written from the RFCs on Python's `cryptography` (not libsrtp), first proves itself
//!   on the RFC vectors and the known answers, then exchanges packets with the adapter in both
//!   directions for every suite. It installs `cryptography` under target/ on first use.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Instant;

const SUITES: [&str; 4] = [
    "AES_CM_128_HMAC_SHA1_80",
    "AES_CM_128_HMAC_SHA1_32",
    "AEAD_AES_128_GCM",
    "AEAD_AES_256_GCM",
];

/// Pinned so that a fresh clone tests against what was tested here.
const CRYPTOGRAPHY: &str = "cryptography==48.0.0";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// target/<profile> of this build.
fn profile_dir() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_mediasoup-server"))
        .parent()
        .expect("target/<profile>")
}

/// The worker archive cargo built for this profile (newest, if several builds exist).
fn worker_archive() -> PathBuf {
    let build = profile_dir().join("build");
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

/// Scratch space of these tests: target/<profile>/srtp-adapter.
fn work_dir() -> PathBuf {
    let dir = profile_dir().join("srtp-adapter");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

/// adapter_test.c compiled against the worker archive, once per run of this test binary
/// (target/<profile>/srtp-adapter/adapter_test, replaced atomically).
fn adapter_test() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let bin = work_dir().join("adapter_test");
        let fresh = work_dir().join(format!("adapter_test.{}", std::process::id()));
        let compiled = Command::new("cc")
            .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-O1", "-I"])
            .arg(root().join("worker-build/shims/libsrtp3/include"))
            .arg(root().join("tests/srtp-adapter/adapter_test.c"))
            .arg(worker_archive())
            .args(["-lpthread", "-ldl", "-o"])
            .arg(&fresh)
            .status()
            .expect("run cc");
        assert!(compiled.success(), "compiling the adapter test failed");
        std::fs::rename(&fresh, &bin).expect("move the adapter test into place");
        bin
    })
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn srtp_adapter_passes_its_c_tests() {
    let bin = adapter_test();
    let run = Command::new(bin)
        .arg(root().join("tests/srtp-adapter/known_answers.txt"))
        .output()
        .expect("run the adapter test");
    let stdout = text(&run);
    println!("{stdout}");
    assert!(run.status.success(), "{stdout}");
    for suite in SUITES {
        for line in [
            format!("  {suite} done"),
            format!("known answers {suite} done"),
            format!("replay window, ROC and SRTCP index {suite} done"),
        ] {
            assert!(stdout.contains(&line), "{line}: {stdout}");
        }
    }
    assert!(stdout.contains(" 0 failed"), "{stdout}");
}

/// A Python 3 that imports `cryptography`: the system's `python3` run with -S (no site
/// packages, so what it imports is what this test installed) and PYTHONPATH at
/// target/srtp-interop-py, filled by `pip install --target` when missing.
fn python_with_cryptography() -> (String, PathBuf) {
    let python = std::env::var("SRTP_INTEROP_PYTHON").unwrap_or_else(|_| "python3".into());
    let site = profile_dir()
        .parent()
        .expect("target/")
        .join("srtp-interop-py");
    let marker = site.join(format!(".installed-{CRYPTOGRAPHY}"));
    let usable = |dir: &Path| {
        Command::new(&python)
            .args([
                "-S",
                "-c",
                "import cryptography.hazmat.primitives.ciphers.aead",
            ])
            .env("PYTHONPATH", dir)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    if marker.exists() && usable(&site) {
        return (python, site);
    }
    match Command::new(&python).arg("--version").output() {
        Ok(o) if o.status.success() => {}
        _ => panic!(
            "`{python}` is needed for the SRTP interop test and was not found: \
             run `bash worker-build/setup.sh` or `apt-get install python3 python3-pip`"
        ),
    }
    // Install into a fresh directory next to the final one, then move it into place, so an
    // interrupted install never looks complete.
    let staging = site.with_extension("partial");
    let _ = std::fs::remove_dir_all(&staging);
    let started = Instant::now();
    let pip = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
            "--quiet",
            "--root-user-action=ignore",
            "--target",
        ])
        .arg(&staging)
        .arg(CRYPTOGRAPHY)
        .output()
        .unwrap_or_else(|e| panic!("run `{python} -m pip`: {e}"));
    assert!(
        pip.status.success(),
        "could not install {CRYPTOGRAPHY} for the SRTP interop test \
         (`{python} -m pip install --target {}`): it needs pip (`apt-get install python3-pip`, \
         done by worker-build/setup.sh) and PyPI.\n{}",
        staging.display(),
        text(&pip)
    );
    std::fs::write(staging.join(format!(".installed-{CRYPTOGRAPHY}")), b"")
        .expect("write the install marker");
    let _ = std::fs::remove_dir_all(&site);
    std::fs::rename(&staging, &site).expect("move the install into place");
    assert!(
        usable(&site),
        "{CRYPTOGRAPHY} was installed into {} but `{python} -S` cannot import it",
        site.display()
    );
    println!(
        "installed {CRYPTOGRAPHY} into {} in {:.1} s",
        site.display(),
        started.elapsed().as_secs_f64()
    );
    (python, site)
}

#[test]
fn srtp_adapter_interoperates_with_an_independent_srtp() {
    let (python, site) = python_with_cryptography();
    let reference = root().join("tests/srtp-adapter/srtp_reference.py");
    let py = |args: &[&str]| {
        let out = Command::new(&python)
            .arg("-S")
            .arg(&reference)
            .args(args)
            .env("PYTHONPATH", &site)
            .output()
            .expect("run srtp_reference.py");
        let t = text(&out);
        println!("{t}");
        assert!(out.status.success(), "srtp_reference.py {args:?}:\n{t}");
        t
    };

    // 1. The reference proves itself: RFC 3711 B.2/B.3, RFC 6188 7.2 and RFC 7714 16/17
    //    vectors, then every known answer the C test holds the adapter to.
    let known = root().join("tests/srtp-adapter/known_answers.txt");
    py(&["selftest", known.to_str().expect("utf-8 path")]);

    // 2. A fresh seed per run (printed, to replay a failure with SRTP_INTEROP_SEED).
    let seed: u64 = std::env::var("SRTP_INTEROP_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    println!("interop seed {seed} (SRTP_INTEROP_SEED={seed} replays this run)");
    let dir = work_dir();
    let script = dir.join(format!("interop-{}.script", std::process::id()));
    let answers = dir.join(format!("interop-{}.answers", std::process::id()));
    py(&[
        "script",
        &seed.to_string(),
        script.to_str().expect("utf-8 path"),
    ]);

    // 3. The adapter unprotects what the reference protected (with the scripted outcome:
    //    plaintext, or replay/too-old/auth failure) and protects the reference's plaintexts.
    let run = Command::new(adapter_test())
        .arg("interop")
        .arg(&script)
        .arg(&answers)
        .output()
        .expect("run the adapter test");
    let stdout = text(&run);
    println!("{stdout}");
    let kept = format!("seed {seed}, script {} kept", script.display());
    assert!(run.status.success(), "{kept}: {stdout}");
    assert!(stdout.contains(" 0 failed"), "{kept}: {stdout}");

    // 4. The reference unprotects what the adapter protected and requires its own bytes.
    let verified = py(&[
        "verify",
        script.to_str().expect("utf-8 path"),
        answers.to_str().expect("utf-8 path"),
    ]);
    for suite in SUITES {
        assert!(
            stdout.contains(&format!("interop {suite}:"))
                && verified.contains(&format!("  {suite}:")),
            "{kept}: {suite} not exchanged in both directions"
        );
    }
    let _ = std::fs::remove_file(&script);
    let _ = std::fs::remove_file(&answers);
}
