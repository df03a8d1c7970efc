//! `mediasoup-server`: reads the configuration, sets up logging, runs the server.
//! `mediasoup-server token <room>` prints the MediaSoupVTT URL of a room, token included.
//! `mediasoup-server healthcheck` exits 0 when the running server is ready (container checks).
//! Exit codes: 0 after SIGINT/SIGTERM, 64 (EX_USAGE) for bad arguments, 78 (EX_CONFIG) for a
//! bad configuration value (or a media port in use, see `MEDIASOUP_RTC_PORT`), 1 otherwise
//! (healthcheck: 1 when not ready).

use std::process::ExitCode;

use mediasoup_server::config::Config;
use mediasoup_server::fatal_signal;
use mediasoup_server::healthcheck;
use mediasoup_server::server;
use mediasoup_server::signaling::{admission, room_name};
use mediasoup_server::telemetry;

/// jemalloc, for Rust and (through the unprefixed `malloc`) the mediasoup worker's C++ alike:
/// glibc's malloc keeps what departed peers freed (RSS stayed at its peak after everyone left,
/// 11x the idle RSS), jemalloc's background thread hands it back (benches/churn.rs).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's defaults, read at its start (the `MALLOC_CONF` environment variable still
/// overrides them): purge freed pages from a background thread within about a second, rather
/// than only when the process allocates again; and no per-thread caches, which kept what
/// departed peers freed until their thread allocated again (after-leave RSS 1.25x idle instead
/// of 1.6x, with no measurable cost in CPU per join or per forwarded stream).
#[cfg(feature = "jemalloc")]
#[allow(non_upper_case_globals)]
#[export_name = "malloc_conf"]
pub static malloc_conf: &[u8; 73] =
    b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0,tcache:false\0";

/// EX_CONFIG from sysexits.h: systemd's unit does not restart on it.
const EXIT_CONFIG: u8 = 78;
/// EX_USAGE from sysexits.h.
const EXIT_USAGE: u8 = 64;

const USAGE: &str =
    "usage: mediasoup-server            run the server (configured by MEDIASOUP_* variables)
       mediasoup-server token ROOM  print the URL of ROOM for MediaSoupVTT, with its token
       mediasoup-server healthcheck exit 0 if the server on MEDIASOUP_LISTEN_ADDR is ready";

/// What the command line asks for.
enum Command {
    Serve,
    Token(String),
    Healthcheck,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] => Command::Serve,
        ["token", room] => Command::Token(room.to_owned()),
        ["healthcheck"] => Command::Healthcheck,
        ["--help" | "-h"] => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if let Err(error) = fatal_signal::install() {
        eprintln!("mediasoup-server: cannot install the crash reporter: {error}");
        return ExitCode::FAILURE;
    }
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("mediasoup-server: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match command {
        Command::Serve => run_async(serve(config)),
        Command::Token(room) => print_room_url(&config, &room),
        Command::Healthcheck => run_async(report_health(config)),
    }
}

/// Runs `main` on a multi-threaded tokio runtime (only the commands that need one start it).
fn run_async(main: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(main),
        Err(error) => {
            eprintln!("mediasoup-server: cannot start the async runtime: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> ExitCode {
    // Inside the runtime: the OTLP exporter may need it.
    let _otlp = match telemetry::init(config.log_format) {
        Ok(guard) => guard,
        // A bad RUST_LOG or OTLP endpoint: both configuration.
        Err(error) => {
            eprintln!("mediasoup-server: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match server::run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("mediasoup-server: {error}");
            if error.is_configuration() {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Prints the server's readiness and exits 0 only when it is ready.
async fn report_health(config: Config) -> ExitCode {
    let addr = healthcheck::target(config.listen_addr);
    match healthcheck::check(addr).await {
        Ok(body) => {
            println!("ready: {body}");
            ExitCode::SUCCESS
        }
        Err(unhealthy) => {
            eprintln!("mediasoup-server healthcheck: {unhealthy}");
            ExitCode::FAILURE
        }
    }
}

/// Prints `ws://<announced address>:<port>/<room>?token=...` (the room as the server will name
/// it, percent-encoded).
fn print_room_url(config: &Config, room: &str) -> ExitCode {
    let Some(secret) = &config.access.secret else {
        eprintln!("mediasoup-server: MEDIASOUP_SECRET (or MEDIASOUP_SECRET_FILE) is unset, so rooms need no token: set it first, in the same environment the server runs with");
        return ExitCode::from(EXIT_CONFIG);
    };
    let name = match room_name::from_path(&format!("/{room}")) {
        Ok(name) => name,
        Err(reason) => {
            eprintln!("mediasoup-server: {reason}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let host = config
        .announced_address
        .clone()
        .unwrap_or_else(|| config.listen_addr.ip().to_string());
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    println!(
        "ws://{host}:{}/{}?token={}",
        config.listen_addr.port(),
        room_name::to_path(&name),
        admission::room_token(secret, &name)
    );
    eprintln!("behind a TLS reverse proxy, give MediaSoupVTT wss://<proxy host>/<path to the server>/{}?token=... with the same token", room_name::to_path(&name));
    ExitCode::SUCCESS
}
