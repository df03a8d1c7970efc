//! `mediasoup-server`: reads the configuration, sets up logging, runs the server.
//! Exit codes: 0 after SIGINT/SIGTERM, 78 (EX_CONFIG) for a bad configuration value, 1 otherwise.

use std::process::ExitCode;

use mediasoup_server::config::Config;
use mediasoup_server::fatal_signal;
use mediasoup_server::server;
use mediasoup_server::telemetry;

/// EX_CONFIG from sysexits.h: systemd's unit does not restart on it.
const EXIT_CONFIG: u8 = 78;

fn main() -> ExitCode {
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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("mediasoup-server: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
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
                ExitCode::FAILURE
            }
        }
    })
}
