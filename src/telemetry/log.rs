//! Decision and close events: exactly one decision line per request and one close line per tunnel or
//! forwarded request, made from the same [`Outcome`]. Field names are stable (listed in README).
//! Lines go to a [`EventLog`] sink: stdout in production (in batches), a buffer in tests.

use crate::outcome::{Close, Outcome};
use crate::telemetry::batch::BatchWriter;
use crate::telemetry::metrics::Metrics;
use serde::Serialize;
use serde_json::{Map, Value};
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Clone)]
enum Sink {
    /// Each line written at once (tests, and stdout when the batch thread cannot start).
    Direct(Arc<Mutex<Box<dyn Write + Send>>>),
    /// Lines written in batches by a thread of their own (stdout).
    Batched(BatchWriter),
}

/// Where decision and close lines go. With metrics attached, every line is also counted, so the log and
/// the metrics are made by one call from the same outcome.
#[derive(Clone)]
pub struct EventLog {
    format: LogFormat,
    sink: Sink,
    metrics: Option<Arc<Metrics>>,
}

impl EventLog {
    /// Lines to stdout, written in batches (see [`BatchWriter`]); call [`EventLog::flush`] before exiting.
    pub fn stdout(format: LogFormat) -> Self {
        match BatchWriter::start(Box::new(std::io::stdout())) {
            Ok(w) => EventLog {
                format,
                sink: Sink::Batched(w),
                metrics: None,
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the log writer thread; writing each line at once");
                Self::to_writer(format, Box::new(std::io::stdout()))
            }
        }
    }

    /// Lines to `w`, each written (and flushed) at once.
    pub fn to_writer(format: LogFormat, w: Box<dyn Write + Send>) -> Self {
        EventLog {
            format,
            sink: Sink::Direct(Arc::new(Mutex::new(w))),
            metrics: None,
        }
    }

    /// Write every line made so far.
    pub fn flush(&self) {
        if let Sink::Batched(w) = &self.sink {
            w.flush();
        }
    }

    /// The same log, also recording every decision and close in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    pub fn decision(&self, o: &Outcome) {
        if let Some(m) = &self.metrics {
            m.decision(o);
        }
        self.emit(&decision_line(o));
    }

    pub fn close(&self, c: &Close) {
        if let Some(m) = &self.metrics {
            m.close(c);
        }
        self.emit(&close_line(c));
    }

    fn emit<T: Serialize>(&self, line: &T) {
        let mut buf = match self.format {
            LogFormat::Json => serde_json::to_vec(line).unwrap_or_default(),
            LogFormat::Text => match serde_json::to_value(line) {
                Ok(Value::Object(fields)) => text_line(&fields).into_bytes(),
                _ => Vec::new(),
            },
        };
        buf.push(b'\n');
        match &self.sink {
            // A failed log write must not take the proxy down; there is nowhere better to report it.
            Sink::Direct(w) => {
                if let Ok(mut w) = w.lock() {
                    let _ = w.write_all(&buf);
                    let _ = w.flush();
                }
            }
            Sink::Batched(w) => w.append(&buf),
        }
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

pub fn elapsed_ms(d: Duration) -> f64 {
    ms(d)
}

fn timestamp() -> String {
    let now = time::OffsetDateTime::from(SystemTime::now());
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A value written with its `Display` form, as a JSON string (addresses), without an intermediate `String`.
struct Shown<T>(T);

impl<T: std::fmt::Display> Serialize for Shown<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// The decision line, field by field in its documented order, borrowing from the outcome.
#[derive(Serialize)]
struct DecisionLine<'a> {
    ts: String,
    event: &'static str,
    conn_id: u64,
    request: u32,
    client_addr: Shown<SocketAddr>,
    /// The load balancer the client came through (PROXY protocol); `client_addr` is the address it named.
    #[serde(skip_serializing_if = "Option::is_none")]
    peer_addr: Option<Shown<SocketAddr>>,
    kind: &'static str,
    method: Option<&'a str>,
    host: Option<&'a str>,
    port: Option<u16>,
    decision: &'static str,
    reason: &'static str,
    rule: Option<&'a str>,
    detail: Option<&'a str>,
    resolved_addrs: Vec<Shown<IpAddr>>,
    denied_addr: Option<Shown<IpAddr>>,
    upstream_addr: Option<Shown<SocketAddr>>,
    dns_ms: Option<f64>,
    connect_ms: Option<f64>,
    sni: Option<&'a str>,
    alpn: &'a [String],
    original_dst: Option<Shown<SocketAddr>>,
    client: Vec<&'a str>,
    client_cert: Option<&'a str>,
    user: Option<&'a str>,
    /// The pod behind `client_addr` (workload identity only).
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service_account: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pod: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    via: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    parent_status: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    resolve: Option<&'static str>,
    /// With `shadow:`, where the candidate policy decides otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    shadow_decision: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shadow_reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shadow_rule: Option<&'a str>,
}

fn decision_line(o: &Outcome) -> DecisionLine<'_> {
    let shadow = o.shadow_disagreement();
    DecisionLine {
        ts: timestamp(),
        event: "decision",
        conn_id: o.conn_id,
        request: o.request,
        client_addr: Shown(o.client_addr),
        peer_addr: o.peer_addr.map(Shown),
        kind: o.kind.as_str(),
        method: o.method.as_deref(),
        host: o.host.as_deref(),
        port: o.port,
        decision: o.decision.as_str(),
        reason: o.reason.as_str(),
        rule: o.rule.as_deref(),
        detail: o.detail.as_deref(),
        resolved_addrs: o.resolved_addrs.iter().copied().map(Shown).collect(),
        denied_addr: o.denied_addr.map(Shown),
        upstream_addr: o.upstream_addr.map(Shown),
        dns_ms: o.dns_ms,
        connect_ms: o.connect_ms,
        sni: o.sni.as_deref(),
        alpn: &o.alpn,
        original_dst: o.original_dst.map(Shown),
        client: o.client.groups.iter().map(|c| &**c).collect(),
        client_cert: o.client.cert.as_deref(),
        user: match &o.client.credentials {
            crate::policy::Credentials::Valid { user, .. } => user.as_deref(),
            _ => None,
        },
        namespace: o.client.workload.pod().map(|w| &*w.namespace),
        service_account: o.client.workload.pod().map(|w| &*w.service_account),
        pod: (o.client.workload.pod())
            .map(|w| &*w.pod)
            .filter(|p| !p.is_empty()),
        via: o.via.as_deref(),
        parent_status: &o.parent_status,
        resolve: o.resolve,
        shadow_decision: shadow.map(|s| s.verdict.as_str()),
        shadow_reason: shadow.map(|s| s.reason.as_str()),
        shadow_rule: shadow.and_then(|s| s.rule.as_deref()),
    }
}

/// The close line, in its documented order.
#[derive(Serialize)]
struct CloseLine<'a> {
    ts: String,
    event: &'static str,
    conn_id: u64,
    request: u32,
    kind: &'static str,
    host: Option<&'a str>,
    bytes_up: u64,
    bytes_down: u64,
    duration_ms: f64,
    close_reason: &'static str,
    hello_records: Option<usize>,
    hello_reads: Option<usize>,
}

fn close_line(c: &Close) -> CloseLine<'_> {
    CloseLine {
        ts: timestamp(),
        event: "close",
        conn_id: c.conn_id,
        request: c.request,
        kind: c.kind.as_str(),
        host: c.host.as_deref(),
        bytes_up: c.bytes_up,
        bytes_down: c.bytes_down,
        duration_ms: ms(c.duration),
        close_reason: c.close_reason.as_str(),
        hello_records: c.hello_records,
        hello_reads: c.hello_reads,
    }
}

/// `key=value` pairs for people; nulls and empty lists left out.
fn text_line(fields: &Map<String, Value>) -> String {
    let mut out = String::new();
    for (k, v) in fields {
        let s = match v {
            Value::Null => continue,
            Value::Array(a) if a.is_empty() => continue,
            Value::String(s) if k == "ts" || k == "event" => {
                out.push_str(s);
                out.push(' ');
                continue;
            }
            Value::String(s) if s.contains(' ') => format!("{s:?}"),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        out.push_str(&format!("{k}={s} "));
    }
    out.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::{CloseReason, Kind, Verdict};
    use crate::reason::Reason;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn decision_line_has_stable_fields() {
        let buf = Buf::default();
        let log = EventLog::to_writer(LogFormat::Json, Box::new(buf.clone()));
        let mut o = Outcome::new(7, 1, "127.0.0.1:5555".parse().unwrap(), Kind::Connect);
        o.host = Some("api.cast.ai".into());
        o.port = Some(443);
        o.decision = Verdict::Allow;
        o.reason = Reason::Allowed;
        o.rule = Some("castai-api".into());
        o.resolved_addrs = vec!["104.16.81.56".parse().unwrap()];
        log.decision(&o);
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let v: Value = serde_json::from_str(text.trim()).unwrap();
        for key in [
            "ts",
            "conn_id",
            "client_addr",
            "kind",
            "host",
            "port",
            "decision",
            "reason",
            "rule",
            "resolved_addrs",
            "upstream_addr",
            "dns_ms",
            "connect_ms",
        ] {
            assert!(v.get(key).is_some(), "missing {key} in {v}");
        }
        assert_eq!(v["decision"], "allow");
        assert_eq!(v["rule"], "castai-api");
        assert_eq!(v["resolved_addrs"][0], "104.16.81.56");
        assert_eq!(text.matches('\n').count(), 1);
    }

    #[test]
    fn text_format_is_key_value() {
        let buf = Buf::default();
        let log = EventLog::to_writer(LogFormat::Text, Box::new(buf.clone()));
        log.close(&Close {
            conn_id: 3,
            request: 1,
            kind: Kind::Http,
            host: Some("a.example".into()),
            bytes_up: 10,
            bytes_down: 20,
            duration: Duration::from_millis(5),
            close_reason: CloseReason::Eof,
            hello_records: None,
            hello_reads: None,
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert!(text.contains("close "), "{text}");
        assert!(text.contains("bytes_up=10"), "{text}");
        assert!(text.contains("close_reason=eof"), "{text}");
    }
}
