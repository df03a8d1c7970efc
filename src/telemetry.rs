//! The `tracing` subscriber: log lines (text or JSON, filtered by `RUST_LOG`, default `info`)
//! plus the OTLP export layer when configured.
//!
//! Two guards against a client filling the journal: a text line never contains a raw control
//! character (client text in a field cannot forge a line), and the mediasoup crate's lines
//! (the workers' own log, which bad requests can trigger) are rate-limited.

use std::io::{self, IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::{Level, Metadata, Subscriber};
use tracing_subscriber::filter::{FilterExt, LevelFilter};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Filter};

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
    let filter = filter.and(WorkerLogLimit);
    let lines: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(EscapedStderr)
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

/// stderr for text lines, each line written with the control characters inside it escaped.
struct EscapedStderr;

impl<'a> MakeWriter<'a> for EscapedStderr {
    type Writer = OneLine<io::Stderr>;

    fn make_writer(&'a self) -> Self::Writer {
        OneLine(io::stderr())
    }
}

/// Takes one formatted line per write (tracing-subscriber writes each event with one
/// `write_all`) and writes it with `\n`, `\r` and other control characters escaped, except the
/// final newline and the escape character of colours (only used on a terminal).
struct OneLine<W>(W);

fn escaped(line: &[u8]) -> Option<Vec<u8>> {
    let (body, end) = match line.strip_suffix(b"\n") {
        Some(body) => (body, &b"\n"[..]),
        None => (line, &b""[..]),
    };
    let needs_escape = |b: u8| (b < 0x20 && b != b'\t' && b != 0x1b) || b == 0x7f;
    if !body.iter().any(|&b| needs_escape(b)) {
        return None;
    }
    let mut out = Vec::with_capacity(line.len() + 16);
    for &b in body {
        match b {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b if needs_escape(b) => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
            b => out.push(b),
        }
    }
    out.extend_from_slice(end);
    Some(out)
}

impl<W: Write> Write for OneLine<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match escaped(buf) {
            Some(line) => self.0.write_all(&line),
            None => self.0.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// Lines of the mediasoup crate (its workers' log) allowed per window; the rest are dropped and
/// counted, and [`take_suppressed_worker_lines`] reports them.
const WORKER_LINES_PER_WINDOW: u32 = 60;
const WORKER_LOG_WINDOW: Duration = Duration::from_secs(60);

static WORKER_LINES: Mutex<Option<(Instant, u32)>> = Mutex::new(None);
static WORKER_LINES_SUPPRESSED: AtomicU64 = AtomicU64::new(0);

/// Worker log lines dropped since the last call.
pub fn take_suppressed_worker_lines() -> u64 {
    WORKER_LINES_SUPPRESSED.swap(0, Ordering::Relaxed)
}

/// Rate limit for the mediasoup crate's warnings and errors (target `mediasoup::...`, not
/// ours): the lines a client's bad request can cause. Its debug lines, which only an operator
/// turns on, are left alone.
struct WorkerLogLimit;

fn is_limited(meta: &Metadata<'_>) -> bool {
    meta.is_event() && *meta.level() <= Level::WARN && meta.target().starts_with("mediasoup::")
}

impl<S: Subscriber> Filter<S> for WorkerLogLimit {
    fn enabled(&self, meta: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        if !is_limited(meta) {
            return true;
        }
        let now = Instant::now();
        let mut window = WORKER_LINES.lock().unwrap_or_else(|e| e.into_inner());
        let (started, lines) = window.get_or_insert((now, 0));
        if now.duration_since(*started) >= WORKER_LOG_WINDOW {
            *started = now;
            *lines = 0;
        }
        if *lines < WORKER_LINES_PER_WINDOW {
            *lines += 1;
            true
        } else {
            WORKER_LINES_SUPPRESSED.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// Every level passes. Without a hint the combined filter would have none, the `log` crate's
    /// level would stay at trace, and each of the mediasoup crate's debug lines (several per
    /// request) would be built and offered to the subscriber only to be dropped.
    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::TRACE)
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> tracing::subscriber::Interest {
        if is_limited(meta) {
            tracing::subscriber::Interest::sometimes()
        } else {
            tracing::subscriber::Interest::always()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_inside_a_line_are_escaped() {
        let line = b"ERROR x: bad apt \"1\nINFO forged line\r\x07\" end\n";
        let out = escaped(line).expect("needs escaping");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "ERROR x: bad apt \"1\\nINFO forged line\\r\\x07\" end\n"
        );
        assert!(escaped(b"plain line\twith tab\n").is_none());
        assert!(escaped(b"\x1b[32m INFO\x1b[0m coloured\n").is_none());
    }

    #[test]
    fn the_worker_log_limit_keeps_the_level_of_the_filter_it_joins() {
        let filter = EnvFilter::new("info").and(WorkerLogLimit);
        assert_eq!(
            Filter::<Registry>::max_level_hint(&filter),
            Some(LevelFilter::INFO)
        );
    }
}
