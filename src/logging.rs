//! Logging: `tracing` set up from `-v` and `--logging-format`, writing to stderr.
//!
//! `-v` keeps klog's meaning, mapped onto `tracing` levels; metrics-bridge's own events get
//! more detail first, the libraries' (kube, hyper, rustls …) later:
//!
//! | `-v` | metrics-bridge | libraries |
//! |---|---|---|
//! | 0–1 | info | warn |
//! | 2–3 | debug | warn |
//! | 4–5 | trace | info |
//! | 6–7 | trace | debug |
//! | 8+  | trace | trace |
//!
//! `--logging-format=json` writes one object per line with `ts` (Unix seconds, as klog's JSON
//! does), `level`, `msg`, `target`, `caller`, and the span and event fields.
//!
//! The `log` health check ([`check_not_blocked`]) fails when writing logs has been blocked
//! for two minutes, as k8s.io/apiserver's does: a background thread flushes stderr every
//! minute and records when it got through.

use std::io::{IsTerminal as _, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::options::{LogFormat, LoggingOptions};

/// The crate whose events `-v` opens up first.
const OWN_TARGET: &str = "metrics_bridge";

/// How often the heartbeat thread flushes stderr, and how stale it may get.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(60);
const BLOCKED_AFTER: Duration = Duration::from_secs(120);

/// When the heartbeat last got through, in milliseconds since the Unix epoch; 0 before
/// [`init`] started it.
static HEARTBEAT_MS: AtomicU64 = AtomicU64::new(0);

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("cannot install the log subscriber: {0}")]
    Install(#[source] tracing_subscriber::util::TryInitError),
    #[error("cannot start the log heartbeat thread: {0}")]
    Heartbeat(#[source] std::io::Error),
}

/// Installs the global subscriber for `options`, writing to stderr, and starts the heartbeat
/// behind the `log` health check. Call once, before anything logs.
pub fn init(options: &LoggingOptions) -> Result<(), LoggingError> {
    let ansi = options.format == LogFormat::Text && std::io::stderr().is_terminal();
    tracing_subscriber::registry()
        .with(layer(options, std::io::stderr, ansi))
        .try_init()
        .map_err(LoggingError::Install)?;
    beat();
    std::thread::Builder::new()
        .name("log-heartbeat".into())
        .spawn(|| {
            loop {
                std::thread::sleep(HEARTBEAT_EVERY);
                // Blocks for as long as a log write holds stderr, which is the point.
                let _ = std::io::stderr().lock().flush();
                beat();
            }
        })
        .map_err(LoggingError::Heartbeat)?;
    Ok(())
}

/// The formatting and filtering layer for `options`, writing to `writer`. [`init`] uses it
/// with stderr; tests use it with a buffer.
pub fn layer<S, W>(
    options: &LoggingOptions,
    writer: W,
    ansi: bool,
) -> Box<dyn Layer<S> + Send + Sync + 'static>
where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = targets(options.verbosity);
    match options.format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_ansi(ansi)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .fmt_fields(JsonFields::new())
            .event_format(KlogJson)
            .with_filter(filter)
            .boxed(),
    }
}

/// What each `-v` level lets through (see the module docs).
pub fn targets(verbosity: u8) -> Targets {
    let (own, libraries) = match verbosity {
        0..=1 => (Level::INFO, Level::WARN),
        2..=3 => (Level::DEBUG, Level::WARN),
        4..=5 => (Level::TRACE, Level::INFO),
        6..=7 => (Level::TRACE, Level::DEBUG),
        _ => (Level::TRACE, Level::TRACE),
    };
    Targets::new()
        .with_default(libraries)
        .with_target(OWN_TARGET, own)
}

/// The `log` health check: fails once writing logs has been blocked for two minutes. Passes
/// when logging was never set up through [`init`] (tests, embedders).
pub fn check_not_blocked() -> Result<(), String> {
    check_heartbeat(HEARTBEAT_MS.load(Ordering::Relaxed), now_ms())
}

fn check_heartbeat(last_ms: u64, now_ms: u64) -> Result<(), String> {
    let blocked_ms = u64::try_from(BLOCKED_AFTER.as_millis()).unwrap_or(u64::MAX);
    if last_ms == 0 || now_ms.saturating_sub(last_ms) < blocked_ms {
        Ok(())
    } else {
        Err("logging blocked".into())
    }
}

fn beat() {
    HEARTBEAT_MS.store(now_ms().max(1), Ordering::Relaxed);
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One JSON object per event, in the shape of Kubernetes components' JSON logs.
struct KlogJson;

impl<S, N> FormatEvent<S, N> for KlogJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        // Keys in the order readers expect them (ts, level, msg first); a later field with
        // the same key replaces the earlier one in place.
        let mut object = Fields::default();
        object.put("ts", Value::from(ts));
        object.put(
            "level",
            Value::from(meta.level().as_str().to_ascii_lowercase()),
        );
        object.put("msg", Value::from(""));
        object.put("target", Value::from(meta.target()));
        if let (Some(file), Some(line)) = (meta.file(), meta.line()) {
            object.put("caller", Value::from(format!("{file}:{line}")));
        }
        // Span fields, outermost first, so that inner spans and the event override them.
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<FormattedFields<N>>()
                    && let Ok(Value::Object(map)) = serde_json::from_str::<Value>(&fields.fields)
                {
                    for (key, value) in map {
                        object.put(&key, value);
                    }
                }
            }
        }
        event.record(&mut object);
        writer.write_char('{')?;
        for (i, (key, value)) in object.0.iter().enumerate() {
            if i > 0 {
                writer.write_char(',')?;
            }
            let key = serde_json::to_string(key).map_err(|_| std::fmt::Error)?;
            let value = serde_json::to_string(value).map_err(|_| std::fmt::Error)?;
            write!(writer, "{key}:{value}")?;
        }
        writer.write_str("}\n")
    }
}

/// An event's keys and values, in order.
#[derive(Default)]
struct Fields(Vec<(String, Value)>);

impl Fields {
    fn put(&mut self, key: &str, value: Value) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key.to_string(), value)),
        }
    }

    fn field(&mut self, field: &Field, value: Value) {
        let key = match field.name() {
            "message" => "msg",
            name => name,
        };
        self.put(key, value);
    }
}

impl Visit for Fields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.field(field, Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field, Value::from(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field, Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.field(field, Value::from(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.field(field, Value::from(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A writer that keeps everything written, for inspecting log lines.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if let Ok(mut b) = self.0.lock() {
                b.extend_from_slice(buf);
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    impl Buffer {
        fn text(&self) -> String {
            let bytes = self.0.lock().map(|b| b.clone()).unwrap_or_default();
            String::from_utf8_lossy(&bytes).into_owned()
        }
    }

    fn capture(format: LogFormat, verbosity: u8, f: impl FnOnce()) -> String {
        let buffer = Buffer::default();
        let options = LoggingOptions { verbosity, format };
        let subscriber =
            tracing_subscriber::registry().with(layer(&options, buffer.clone(), false));
        tracing::subscriber::with_default(subscriber, f);
        buffer.text()
    }

    #[test]
    fn verbosity_opens_our_events_before_the_libraries() {
        let cases = [
            (0, Level::INFO, Level::WARN),
            (1, Level::INFO, Level::WARN),
            (2, Level::DEBUG, Level::WARN),
            (3, Level::DEBUG, Level::WARN),
            (4, Level::TRACE, Level::INFO),
            (5, Level::TRACE, Level::INFO),
            (6, Level::TRACE, Level::DEBUG),
            (8, Level::TRACE, Level::TRACE),
            (255, Level::TRACE, Level::TRACE),
        ];
        let levels = [
            Level::ERROR,
            Level::WARN,
            Level::INFO,
            Level::DEBUG,
            Level::TRACE,
        ];
        for (v, own, libs) in cases {
            let t = targets(v);
            for level in levels {
                assert_eq!(
                    t.would_enable("metrics_bridge::scrape", &level),
                    level <= own,
                    "-v {v}: ours at {level}"
                );
                assert_eq!(
                    t.would_enable("hyper::proto", &level),
                    level <= libs,
                    "-v {v}: libraries at {level}"
                );
            }
        }
    }

    #[test]
    fn json_lines_carry_klog_keys_and_fields() {
        let out = capture(LogFormat::Json, 0, || {
            let span = tracing::info_span!("scrape", node = "node-1", attempt = 1);
            let _guard = span.enter();
            tracing::warn!(target: "metrics_bridge::scrape", status = 500_u16, ok = false, ratio = 0.5, "kubelet \"said\" no");
            tracing::debug!(target: "metrics_bridge::scrape", "hidden at -v 0");
        });
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 1, "{out}");
        assert!(
            lines[0].starts_with("{\"ts\":") && lines[0].contains(",\"level\":\"warn\",\"msg\":"),
            "ts, level and msg come first: {out}"
        );
        let v: Value = serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("{e}: {out}"));
        assert_eq!(v["level"], "warn");
        assert_eq!(v["msg"], "kubelet \"said\" no");
        assert_eq!(v["target"], "metrics_bridge::scrape");
        assert_eq!(v["node"], "node-1");
        assert_eq!(v["attempt"], 1);
        assert_eq!(v["status"], 500);
        assert_eq!(v["ok"], false);
        assert_eq!(v["ratio"], 0.5);
        assert!(v["ts"].as_f64().is_some_and(|ts| ts > 1.6e9), "{v}");
        assert!(
            v["caller"]
                .as_str()
                .is_some_and(|c| c.starts_with("src/logging.rs:")),
            "{v}"
        );
    }

    #[test]
    fn text_lines_are_plain_without_a_terminal() {
        let out = capture(LogFormat::Text, 2, || {
            tracing::info!(target: "metrics_bridge::server", port = 443, "serving");
            tracing::debug!(target: "metrics_bridge::server", "tick");
            tracing::info!(target: "kube_runtime::watcher", "library info, hidden at -v 2");
        });
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert!(
            lines[0].contains(" INFO metrics_bridge::server: serving port=443"),
            "{out}"
        );
        assert!(
            lines[1].contains(" DEBUG metrics_bridge::server: tick"),
            "{out}"
        );
        assert!(!out.contains('\u{1b}'), "no ANSI colours: {out:?}");
    }

    #[test]
    fn the_log_check_fails_after_two_minutes_without_a_heartbeat() {
        let now = 1_700_000_000_000;
        assert_eq!(check_heartbeat(0, now), Ok(()), "never started");
        assert_eq!(check_heartbeat(now - 60_000, now), Ok(()));
        assert_eq!(check_heartbeat(now - 119_999, now), Ok(()));
        assert_eq!(
            check_heartbeat(now - 120_000, now),
            Err("logging blocked".to_string())
        );
        // A clock that went backwards is not a blocked log.
        assert_eq!(check_heartbeat(now + 5_000, now), Ok(()));
    }
}
