//! The `tracing` subscriber: log lines (text or JSON, filtered by `RUST_LOG`, default `info`)
//! plus the OTLP export layer when configured.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::{ConfigError, LogFormat};
use crate::sinks::otlp::{self, OtlpError, OtlpGuard};

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error(transparent)]
    Filter(#[from] ConfigError),
    #[error(transparent)]
    Otlp(#[from] OtlpError),
}

/// Installs the global subscriber. Keep the guard until exit: it flushes queued spans.
pub fn init(format: LogFormat) -> Result<Option<OtlpGuard>, TelemetryError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => EnvFilter::try_new(&directives)
            .map_err(|e| ConfigError {
                variable: "RUST_LOG".into(),
                value: directives.clone(),
                accepted: format!(
                    "tracing filter directives, like info or mediasoup_server=debug ({e})"
                ),
            })?,
        _ => EnvFilter::new("info"),
    };
    let lines: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };
    let (export, guard) = match otlp::layer()? {
        Some((layer, guard)) => (Some(layer), Some(guard)),
        None => (None, None),
    };
    // A second init (tests that run the server in-process) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(lines)
        .with(export)
        .try_init();
    Ok(guard)
}
