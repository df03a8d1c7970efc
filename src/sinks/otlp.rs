//! OTLP trace export: on when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set,
//! absent otherwise. It is a `tracing` layer: the core's spans (room, peer session, signaling
//! request) become OTLP spans, and the log sink's lifecycle events inside them become span
//! events. Export runs on the SDK's own thread with a bounded queue, so an unreachable collector
//! costs dropped spans, never service.
//!
//! Protocol: OTLP over HTTP with protobuf (`http://host:4318`). `OTEL_SERVICE_NAME` and
//! `OTEL_RESOURCE_ATTRIBUTES` are honoured; the service name defaults to `mediasoup-server`.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing::Subscriber;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

const ENDPOINT_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
];

/// Keeps the exporter alive; flushes what is queued when dropped.
pub struct OtlpGuard(SdkTracerProvider);

impl Drop for OtlpGuard {
    fn drop(&mut self) {
        // Best effort at exit: the collector may be gone.
        let _ = self.0.shutdown();
    }
}

#[derive(Debug, thiserror::Error)]
#[error("could not set up OTLP trace export: {0}; check OTEL_EXPORTER_OTLP_ENDPOINT (like http://127.0.0.1:4318)")]
pub struct OtlpError(String);

fn service_name_configured() -> bool {
    std::env::var_os("OTEL_SERVICE_NAME").is_some()
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|a| a.contains("service.name="))
}

/// The export layer, when an endpoint is configured.
#[allow(clippy::type_complexity)]
pub fn layer<S>() -> Result<Option<(Box<dyn Layer<S> + Send + Sync>, OtlpGuard)>, OtlpError>
where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    if !ENDPOINT_VARS.iter().any(|v| std::env::var_os(v).is_some()) {
        return Ok(None);
    }
    let exporter = SpanExporter::builder()
        .with_http()
        .with_timeout(std::time::Duration::from_secs(5))
        .build()
        .map_err(|e| OtlpError(e.to_string()))?;
    let mut resource = Resource::builder();
    if !service_name_configured() {
        resource = resource.with_service_name(env!("CARGO_PKG_NAME"));
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    let tracer = provider.tracer(env!("CARGO_PKG_NAME"));
    // Our own spans and lifecycle events (debug), whatever RUST_LOG says for the log lines.
    let filter = Targets::new()
        .with_target(env!("CARGO_CRATE_NAME"), LevelFilter::DEBUG)
        .with_default(LevelFilter::OFF);
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(filter)
        .boxed();
    Ok(Some((layer, OtlpGuard(provider))))
}
