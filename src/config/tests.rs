//! The configuration's unit tests: every variable read, checked and documented.

use super::*;

fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))
}

#[test]
fn defaults_without_variables() {
    let config = config(&[]).expect("defaults are valid");
    assert_eq!(config.listen_addr, "0.0.0.0:3000".parse().unwrap());
    assert_eq!(config.metrics_addr, "127.0.0.1:9464".parse().unwrap());
    assert_eq!(config.num_workers.get(), 1);
    assert_eq!(config.rtc_ports, 10000..=10100);
    assert_eq!(
        config.rtc_port, None,
        "range mode unless MEDIASOUP_RTC_PORT is set"
    );
    assert_eq!(config.media_port(0), None);
    assert_eq!(config.announced_address, None);
    assert_eq!(config.log_format, LogFormat::Text);
    assert!(config.worker_log_tags.is_empty());
    assert!(
        config.access.self_test,
        "the self-test page is on by default"
    );
}

/// Every variable the server reads, each with a valid value other than its default.
const EVERY_VARIABLE: &[(&str, &str)] = &[
    ("MEDIASOUP_LISTEN_ADDR", "127.0.0.1:4000"),
    ("MEDIASOUP_LISTEN_BACKLOG", "4096"),
    ("MEDIASOUP_METRICS_ADDR", "127.0.0.2:9500"),
    ("MEDIASOUP_NUM_WORKERS", "3"),
    ("MEDIASOUP_LOG_LEVEL", "debug"),
    ("MEDIASOUP_LOG_TAGS", "ice, dtls"),
    ("MEDIASOUP_RTC_MIN_PORT", "20000"),
    ("MEDIASOUP_RTC_MAX_PORT", "20010"),
    ("MEDIASOUP_RTC_PORT", "40000"),
    ("MEDIASOUP_RTC_LISTEN_IP", "192.168.1.10"),
    ("MEDIASOUP_ANNOUNCED_IP", "vtt.example.org"),
    ("MEDIASOUP_MAX_INCOMING_BITRATE", "800000"),
    ("MEDIASOUP_STATS_INTERVAL_SECS", "3"),
    ("MEDIASOUP_LOG_FORMAT", "json"),
    ("MEDIASOUP_SECRET", "a secret of 24 characters"),
    (
        "MEDIASOUP_ALLOWED_ORIGINS",
        "https://vtt.example.org, http://10.0.0.5:30000/",
    ),
    ("MEDIASOUP_TRUSTED_PROXIES", "10.0.0.0/8,::1"),
    ("MEDIASOUP_SELF_TEST", "off"),
    ("MEDIASOUP_MAX_CONNECTIONS", "100"),
    ("MEDIASOUP_MAX_CONNECTIONS_PER_IP", "5"),
    ("MEDIASOUP_MAX_PEERS_PER_ROOM", "8"),
    ("MEDIASOUP_MAX_ROOMS", "7"),
    ("MEDIASOUP_REQUESTS_PER_SEC", "6"),
    ("MEDIASOUP_REQUEST_BURST", "60"),
    ("MEDIASOUP_HANDSHAKE_TIMEOUT_SECS", "4"),
    ("MEDIASOUP_MAX_APP_DATA_BYTES", "1000"),
    ("MEDIASOUP_PING_INTERVAL_SECS", "2"),
    ("MEDIASOUP_PEER_TIMEOUT_SECS", "9"),
    ("MEDIASOUP_RECORDINGS_DIR", "/srv/recordings"),
    ("MEDIASOUP_RECORD_ROOMS", "table-1, campaign-*"),
    ("MEDIASOUP_RECORD_EXCLUDE_USERS", "Xy12Ab34Cd56Ef78"),
];

/// Variables that replace one of [`EVERY_VARIABLE`] (and cannot be set with it).
const ALTERNATIVES: &[&str] = &["MEDIASOUP_SECRET_FILE"];

#[test]
fn reads_every_variable() {
    let mut vars = EVERY_VARIABLE.to_vec();
    vars.push(("UNRELATED", "ignored"));
    let config = config(&vars).expect("valid");
    assert_eq!(config.listen_addr, "127.0.0.1:4000".parse().unwrap());
    assert_eq!(config.listen_backlog, 4096);
    assert_eq!(config.metrics_addr, "127.0.0.2:9500".parse().unwrap());
    assert_eq!(config.num_workers.get(), 3);
    assert_eq!(config.worker_log_level, WorkerLogLevel::Debug);
    assert_eq!(
        config.worker_log_tags,
        vec![WorkerLogTag::Ice, WorkerLogTag::Dtls]
    );
    assert_eq!(config.rtc_ports, 20000..=20010);
    assert_eq!(config.rtc_port, Some(40000));
    let ports: Vec<_> = (0..3).map(|worker| config.media_port(worker)).collect();
    assert_eq!(ports, [Some(40000), Some(40001), Some(40002)]);
    assert_eq!(
        config.rtc_listen_ip,
        "192.168.1.10".parse::<IpAddr>().unwrap()
    );
    assert_eq!(config.announced_address.as_deref(), Some("vtt.example.org"));
    assert_eq!(config.max_incoming_bitrate, 800_000);
    assert_eq!(config.stats_interval, Duration::from_secs(3));
    assert_eq!(config.log_format, LogFormat::Json);
    assert_eq!(
        config.access.secret,
        Some(Secret(b"a secret of 24 characters".to_vec()))
    );
    assert_eq!(
        config.access.allowed_origins,
        ["https://vtt.example.org", "http://10.0.0.5:30000"]
    );
    assert_eq!(
        config.access.trusted_proxies,
        [
            "10.0.0.0/8".parse().unwrap(),
            "::1".parse::<IpNet>().unwrap()
        ]
    );
    assert!(!config.access.self_test);
    let limits = &config.limits;
    assert_eq!(
        (limits.max_connections, limits.max_connections_per_ip),
        (100, 5)
    );
    assert_eq!((limits.max_peers_per_room, limits.max_rooms), (8, 7));
    assert_eq!((limits.requests_per_sec, limits.request_burst), (6, 60));
    assert_eq!(limits.handshake_timeout, Duration::from_secs(4));
    assert_eq!(limits.max_app_data_bytes, 1000);
    assert_eq!(limits.ping_interval, Duration::from_secs(2));
    assert_eq!(limits.peer_timeout, Duration::from_secs(9));
    let recording = config.recording.expect("recording on");
    assert_eq!(recording.dir, std::path::Path::new("/srv/recordings"));
    assert!(recording.records_room("table-1") && recording.records_room("campaign-7"));
    assert!(!recording.records_room("table-2"));
    assert!(recording.excludes("Xy12Ab34Cd56Ef78"));
}

#[test]
fn reads_the_secret_from_a_file() {
    let path = std::env::temp_dir().join(format!("mediasoup-secret-{}", std::process::id()));
    std::fs::write(&path, "from a credential file\n").unwrap();
    let file = path.to_string_lossy().into_owned();
    let read = config(&[("MEDIASOUP_SECRET_FILE", &file)]);
    let both = config(&[
        ("MEDIASOUP_SECRET_FILE", &file),
        ("MEDIASOUP_SECRET", "a secret of 24 characters"),
    ]);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(
        read.expect("readable").access.secret,
        Some(Secret(b"from a credential file".to_vec()))
    );
    assert_eq!(both.expect_err("both").variable, "MEDIASOUP_SECRET_FILE");
    let missing = config(&[("MEDIASOUP_SECRET_FILE", "/nonexistent/secret")]);
    assert!(missing
        .expect_err("missing")
        .to_string()
        .contains("/nonexistent/secret"));
}

#[test]
fn a_peer_times_out_only_after_a_ping() {
    let error = config(&[
        ("MEDIASOUP_PING_INTERVAL_SECS", "10"),
        ("MEDIASOUP_PEER_TIMEOUT_SECS", "10"),
    ])
    .expect_err("timeout not above the interval");
    assert_eq!(error.variable, "MEDIASOUP_PEER_TIMEOUT_SECS");
}

/// Each variable is really parsed: a value it cannot take is refused, naming it.
#[test]
fn every_variable_is_checked() {
    for (name, _) in EVERY_VARIABLE {
        let error = config(&[(name, "!!")]).expect_err(name);
        assert_eq!(error.variable, *name, "{error}");
    }
}

/// The variables above are exactly the ones `.env.example` documents.
#[test]
fn the_documented_variables_are_the_ones_read() {
    let mut documented: Vec<&str> = include_str!("../../.env.example")
        .lines()
        .filter_map(|line| line.trim_start_matches('#').split_once('='))
        .map(|(name, _)| name.trim())
        .filter(|name| name.starts_with(PREFIX))
        .collect();
    documented.sort_unstable();
    let mut tested: Vec<&str> = EVERY_VARIABLE
        .iter()
        .map(|(name, _)| *name)
        .chain(ALTERNATIVES.iter().copied())
        .collect();
    tested.sort_unstable();
    assert_eq!(documented, tested);
}

#[test]
fn refuses_bad_values_naming_the_variable() {
    for (name, value) in [
        ("MEDIASOUP_NUM_WORKERS", "0"),
        ("MEDIASOUP_NUM_WORKERS", "two"),
        ("MEDIASOUP_LISTEN_ADDR", "localhost"),
        ("MEDIASOUP_LOG_LEVEL", "verbose"),
        ("MEDIASOUP_LOG_TAGS", "ice,bogus"),
        ("MEDIASOUP_RTC_MIN_PORT", "70000"),
        ("MEDIASOUP_RTC_PORT", "0"),
        ("MEDIASOUP_RTC_PORT", "70000"),
        ("MEDIASOUP_RTC_PORT", "forty"),
        ("MEDIASOUP_ANNOUNCED_IP", "not an ip"),
        ("MEDIASOUP_STATS_INTERVAL_SECS", "0"),
    ] {
        let error = config(&[(name, value)]).expect_err(value);
        assert_eq!(error.variable, name, "{error}");
        assert!(error.to_string().contains(value), "{error}");
    }
}

#[test]
fn refuses_min_port_above_max_port() {
    let error = config(&[
        ("MEDIASOUP_RTC_MIN_PORT", "20000"),
        ("MEDIASOUP_RTC_MAX_PORT", "10000"),
    ])
    .expect_err("inverted range");
    assert_eq!(error.variable, "MEDIASOUP_RTC_MAX_PORT");
    assert!(error.accepted.contains("MEDIASOUP_RTC_MIN_PORT"));
}

/// Single-port mode: an empty value is range mode; each worker's port must be a port, outside
/// the range (the default one included).
#[test]
fn checks_the_single_media_port() {
    let empty = config(&[("MEDIASOUP_RTC_PORT", " ")]).expect("empty is unset");
    assert_eq!(empty.rtc_port, None);

    let highest = config(&[
        ("MEDIASOUP_RTC_PORT", "65534"),
        ("MEDIASOUP_NUM_WORKERS", "2"),
    ])
    .expect("65534 and 65535");
    assert_eq!(highest.media_port(1), Some(65535));
    let error = config(&[
        ("MEDIASOUP_RTC_PORT", "65535"),
        ("MEDIASOUP_NUM_WORKERS", "2"),
    ])
    .expect_err("worker 1 would need 65536");
    assert_eq!(error.variable, "MEDIASOUP_RTC_PORT");
    assert!(error.accepted.contains("from 1 to 65534"), "{error}");
    assert!(
        error.accepted.contains("MEDIASOUP_NUM_WORKERS=2"),
        "{error}"
    );

    for (port, workers) in [
        ("10000", "1"),
        ("10100", "1"),
        ("10050", "1"),
        ("9999", "2"),
    ] {
        let error = config(&[
            ("MEDIASOUP_RTC_PORT", port),
            ("MEDIASOUP_NUM_WORKERS", workers),
        ])
        .expect_err(port);
        assert_eq!(error.variable, "MEDIASOUP_RTC_PORT");
        assert_eq!(error.value, port);
        assert!(error.accepted.contains("10000-10100"), "{error}");
        assert!(error.accepted.contains("pick a port outside it"), "{error}");
    }
    for (port, workers) in [("9999", "1"), ("10101", "1"), ("9998", "2"), ("40000", "4")] {
        let config = config(&[
            ("MEDIASOUP_RTC_PORT", port),
            ("MEDIASOUP_NUM_WORKERS", workers),
        ])
        .unwrap_or_else(|e| panic!("{port} with {workers} workers: {e}"));
        assert_eq!(
            config.rtc_port.map(|p| p.to_string()).as_deref(),
            Some(port)
        );
    }
    // A moved range is the one checked.
    let moved = config(&[
        ("MEDIASOUP_RTC_PORT", "10050"),
        ("MEDIASOUP_RTC_MIN_PORT", "20000"),
        ("MEDIASOUP_RTC_MAX_PORT", "20100"),
    ]);
    assert_eq!(
        moved.expect("outside the moved range").rtc_port,
        Some(10050)
    );
}
