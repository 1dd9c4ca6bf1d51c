//! Decision lines as log pipelines hand them back: egressd writes one JSON object per line, and every way of
//! collecting pod logs wraps it in something of its own. [`Unwrapper`] finds egressd's object inside:
//!
//! | source | line |
//! |---|---|
//! | `kubectl logs` | `{"ts":...,"event":"decision",...}` (as written) |
//! | `kubectl logs --prefix` | `[pod/egressd-7d9f/egressd] {...}` |
//! | kubelet CRI files (`/var/log/pods/...`) | `2026-12-04T03:00:00.1Z stdout F {...}` (`P` parts joined) |
//! | Docker json-file, Fluent Bit, Fluentd, CloudWatch | `{"log":"{...}\n","stream":"stdout",...}` |
//! | Loki `logcli query` | `2026-12-04T03:00:00Z {app="egressd"} {...}`, or `--output jsonl`: `{"line":"{...}",...}` |
//! | Google Cloud Logging export | `{"jsonPayload":{...},"resource":{...},...}` |
//! | `aws logs tail`, other prefixes | `<time> <stream> {...}` |
//!
//! Pure: bytes in, bytes out, so the audit's counting and tests need no files.

use serde_json::Value;

/// Which wrapper a line came in, for the message when a log holds no decision at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Wrapper {
    /// egressd's own line.
    None,
    /// A text prefix before the object (`kubectl --prefix`, CRI, logcli, `aws logs tail`).
    Prefix,
    /// A JSON envelope with the line as a string (`log`, `line`, `message`).
    StringField,
    /// A JSON envelope with the object itself (`jsonPayload`).
    ObjectField,
}

/// Joins CRI partial lines (`P`) and unwraps each complete line.
#[derive(Default)]
pub struct Unwrapper {
    partial: Vec<u8>,
}

/// The outcome for one input line.
#[derive(Debug, PartialEq, Eq)]
pub enum Unwrapped<'a> {
    /// The line as it is: egressd's own line, or no wrapper was recognized.
    Same(&'a [u8]),
    /// The object found inside a wrapper.
    Inner(Vec<u8>, Wrapper),
    /// A CRI partial line, kept until its final part arrives.
    Pending,
}

/// Text-format CRI lines: `<RFC 3339 time> <stdout|stderr> <P|F> <text>`.
fn cri(line: &[u8]) -> Option<(bool, &[u8])> {
    let mut parts = line.splitn(4, |&b| b == b' ');
    let ts = parts.next()?;
    let stream = parts.next()?;
    let tag = parts.next()?;
    let text = parts.next().unwrap_or_default();
    let is_time = ts.len() >= 20 && ts[4] == b'-' && ts[10] == b'T';
    if !is_time || !(stream == b"stdout" || stream == b"stderr") {
        return None;
    }
    match tag {
        b"F" => Some((true, text)),
        b"P" => Some((false, text)),
        _ => None,
    }
}

/// The JSON object found in `line` after a text prefix: the first `{"` from which the rest parses.
fn after_prefix(line: &[u8]) -> Option<&[u8]> {
    let mut from = 0;
    while let Some(i) = line[from..].windows(2).position(|w| w == b"{\"") {
        let at = from + i;
        if at > 0 && serde_json::from_slice::<serde::de::IgnoredAny>(&line[at..]).is_ok() {
            return Some(&line[at..]);
        }
        from = at + 1;
    }
    None
}

/// egressd's object inside a JSON envelope, if `v` is one: a string field holding a JSON object line, or an
/// object field holding the event.
fn from_envelope(v: &Value) -> Option<(Vec<u8>, Wrapper)> {
    let obj = v.as_object()?;
    if obj.contains_key("event") {
        return None;
    }
    if let Some(payload) = obj.get("jsonPayload").filter(|p| p.is_object()) {
        return Some((serde_json::to_vec(payload).ok()?, Wrapper::ObjectField));
    }
    for key in ["log", "line", "message", "msg", "textPayload"] {
        if let Some(text) = obj.get(key).and_then(Value::as_str) {
            let text = text.trim_end_matches(['\n', '\r']);
            if text.starts_with('{') || text.contains("{\"") {
                return Some((text.as_bytes().to_vec(), Wrapper::StringField));
            }
        }
    }
    None
}

impl Unwrapper {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn unwrap<'a>(&mut self, line: &'a [u8]) -> Unwrapped<'a> {
        if let Some((last, text)) = cri(line) {
            self.partial.extend_from_slice(text);
            if !last {
                // Bounded like any line: an endless run of partials is cut.
                if self.partial.len() > super::input::MAX_LINE_BYTES {
                    self.partial.clear();
                }
                return Unwrapped::Pending;
            }
            let whole = std::mem::take(&mut self.partial);
            return match self.unwrap_text(&whole) {
                Unwrapped::Same(_) => Unwrapped::Inner(whole, Wrapper::Prefix),
                Unwrapped::Inner(inner, _) => Unwrapped::Inner(inner, Wrapper::Prefix),
                Unwrapped::Pending => Unwrapped::Pending,
            };
        }
        self.unwrap_text(line)
    }

    fn unwrap_text<'a>(&self, line: &'a [u8]) -> Unwrapped<'a> {
        let (object, prefixed) = match serde_json::from_slice::<Value>(line) {
            Ok(v) => (v, None),
            Err(_) => match after_prefix(line) {
                Some(rest) => match serde_json::from_slice::<Value>(rest) {
                    Ok(v) => (v, Some(rest)),
                    Err(_) => return Unwrapped::Same(line),
                },
                None => return Unwrapped::Same(line),
            },
        };
        // One envelope in another (a shipper's `log` field holding a CRI line is rare; one level of each).
        match from_envelope(&object) {
            Some((inner, wrapper)) => match after_prefix_or_same(&inner) {
                Some(found) => Unwrapped::Inner(found, wrapper),
                None => Unwrapped::Inner(inner, wrapper),
            },
            None => match prefixed {
                Some(rest) => Unwrapped::Inner(rest.to_vec(), Wrapper::Prefix),
                None => Unwrapped::Same(line),
            },
        }
    }
}

/// `inner` is a JSON object line, or a prefixed one (`[pod/...] {...}` inside a `log` field).
fn after_prefix_or_same(inner: &[u8]) -> Option<Vec<u8>> {
    if serde_json::from_slice::<serde::de::IgnoredAny>(inner).is_ok() {
        return None;
    }
    after_prefix(inner).map(<[u8]>::to_vec)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = r#"{"ts":"2026-12-04T03:00:00.123Z","event":"decision","decision":"deny","host":"evil.example","port":443,"client_addr":"10.244.1.7:41234","reason":"denied_no_rule"}"#;

    fn inner(line: &str) -> (serde_json::Value, Wrapper) {
        let mut u = Unwrapper::new();
        match u.unwrap(line.as_bytes()) {
            Unwrapped::Inner(bytes, w) => (serde_json::from_slice(&bytes).unwrap(), w),
            other => panic!("{line}: {other:?}"),
        }
    }

    fn expected() -> serde_json::Value {
        serde_json::from_str(LINE).unwrap()
    }

    #[test]
    fn egressd_lines_pass_unchanged() {
        let mut u = Unwrapper::new();
        assert_eq!(u.unwrap(LINE.as_bytes()), Unwrapped::Same(LINE.as_bytes()));
        assert_eq!(u.unwrap(b"not json"), Unwrapped::Same(&b"not json"[..]));
        // Fluent Bit with Merge_Log: the fields at the top level, with the shipper's own beside them.
        let merged = LINE.replacen('{', r#"{"kubernetes":{"pod_name":"egressd-1"},"#, 1);
        assert_eq!(
            u.unwrap(merged.as_bytes()),
            Unwrapped::Same(merged.as_bytes())
        );
    }

    #[test]
    fn every_wrapper_gives_back_the_decision() {
        let escaped = serde_json::to_string(LINE).unwrap();
        let cases = [
            (
                format!("[pod/egressd-7d9f-abcde/egressd] {LINE}"),
                Wrapper::Prefix,
            ),
            (
                format!("2026-12-04T03:00:00.123456789Z stdout F {LINE}"),
                Wrapper::Prefix,
            ),
            (
                format!(r#"2026-12-04T03:00:00Z {{app="egressd", pod="egressd-1"}} {LINE}"#),
                Wrapper::Prefix,
            ),
            (
                format!("2026-12-04T03:00:00.123000+00:00 egressd/egressd/abc {LINE}"),
                Wrapper::Prefix,
            ),
            (
                format!(
                    r#"{{"log":{},"stream":"stdout","time":"2026-12-04T03:00:00Z"}}"#,
                    serde_json::to_string(&format!("{LINE}\n")).unwrap()
                ),
                Wrapper::StringField,
            ),
            (
                format!(
                    r#"{{"labels":{{"app":"egressd"}},"line":{escaped},"timestamp":"2026-12-04T03:00:00Z"}}"#
                ),
                Wrapper::StringField,
            ),
            (
                format!(
                    r#"{{"insertId":"x","jsonPayload":{LINE},"resource":{{"type":"k8s_container"}}}}"#
                ),
                Wrapper::ObjectField,
            ),
            (
                format!(
                    r#"{{"log":{}}}"#,
                    serde_json::to_string(&format!("[pod/egressd-1/egressd] {LINE}")).unwrap()
                ),
                Wrapper::StringField,
            ),
        ];
        for (line, wrapper) in cases {
            let (got, w) = inner(&line);
            assert_eq!(got, expected(), "{line}");
            assert_eq!(w, wrapper, "{line}");
        }
    }

    #[test]
    fn cri_partial_lines_are_joined() {
        let (a, b) = LINE.split_at(40);
        let mut u = Unwrapper::new();
        assert_eq!(
            u.unwrap(format!("2026-12-04T03:00:00.1Z stdout P {a}").as_bytes()),
            Unwrapped::Pending
        );
        match u.unwrap(format!("2026-12-04T03:00:00.1Z stdout F {b}").as_bytes()) {
            Unwrapped::Inner(bytes, Wrapper::Prefix) => assert_eq!(bytes, LINE.as_bytes()),
            other => panic!("{other:?}"),
        }
    }
}
