//! Following the raw request heads of a client connection that hyper serves (pure; fed the bytes as hyper
//! reads them). hyper repairs what it parses (it drops a Content-Length beside Transfer-Encoding, folds
//! repeated fields), so the checks that refuse ambiguous framing must see each head as the client sent it,
//! on every request of a kept-alive connection, not only the first.
//!
//! [`HeadWatch`] walks the stream request by request: the head, then the body as its (unambiguous) framing
//! says, then the next head. Each complete head yields one verdict, in order, for the handler of that request
//! to take. After a head it refuses, or one it cannot follow (CONNECT, a malformed body), it stops: no later
//! request gets a verdict, and a handler that finds none refuses, so the proxy never guesses.

use super::request_head::framing_problem;
use std::collections::VecDeque;

/// Longest chunk-size or trailer line followed.
const MAX_LINE: usize = 4096;
const MAX_HEADERS: usize = 128;

/// `Err` holds why the head is refused.
pub type Verdict = Result<(), String>;

#[derive(Debug)]
enum State {
    Head,
    /// Body bytes still to come.
    Fixed(u64),
    /// A chunk-size line (its bytes so far).
    ChunkSize,
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    /// Trailer lines after the last chunk.
    Trailer,
    /// Nothing more is followed.
    Stopped,
}

#[derive(Debug)]
pub struct HeadWatch {
    state: State,
    /// The head or line being gathered.
    buf: Vec<u8>,
    max_head: usize,
    verdicts: VecDeque<Verdict>,
}

impl HeadWatch {
    pub fn new(max_head: usize) -> Self {
        HeadWatch {
            state: State::Head,
            buf: Vec::new(),
            max_head,
            verdicts: VecDeque::new(),
        }
    }

    /// The verdict on the next request head not yet taken; `None` if there is none (see the module comment).
    pub fn take(&mut self) -> Option<Verdict> {
        self.verdicts.pop_front()
    }

    /// Follow these bytes, the next the client sent.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            bytes = match self.state {
                State::Stopped => return,
                State::Head => self.head(bytes),
                State::Fixed(left) => {
                    let n = left.min(bytes.len() as u64);
                    self.state = match left - n {
                        0 => State::Head,
                        rest => State::Fixed(rest),
                    };
                    &bytes[n as usize..]
                }
                State::ChunkSize | State::Trailer | State::ChunkEnd => self.line(bytes),
                State::ChunkData(left) => {
                    let n = left.min(bytes.len() as u64);
                    self.state = match left - n {
                        0 => State::ChunkEnd,
                        rest => State::ChunkData(rest),
                    };
                    &bytes[n as usize..]
                }
            };
        }
    }

    fn stop(&mut self, verdict: Option<Verdict>) {
        if let Some(v) = verdict {
            self.verdicts.push_back(v);
        }
        self.state = State::Stopped;
        self.buf = Vec::new();
    }

    /// Gather a head; once complete, judge it and set up its body.
    fn head<'b>(&mut self, bytes: &'b [u8]) -> &'b [u8] {
        let before = self.buf.len();
        self.buf.extend_from_slice(bytes);
        let too_large = |w: &mut Self| {
            w.stop(Some(Err(format!(
                "request head larger than {} bytes",
                w.max_head
            ))))
        };
        // Only a new line feed can complete (or break) a head, and only the bytes up to the last one are
        // parsed: the verdict is then the same however the bytes were split into reads.
        let Some(last_lf) = bytes.iter().rposition(|b| *b == b'\n') else {
            if self.buf.len() > self.max_head {
                too_large(self);
            }
            return &[];
        };
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let len = match req.parse(&self.buf[..=before + last_lf]) {
            Ok(httparse::Status::Partial) if self.buf.len() > self.max_head => {
                too_large(self);
                return &[];
            }
            Ok(httparse::Status::Partial) => return &[],
            Ok(httparse::Status::Complete(n)) if n > self.max_head => {
                too_large(self);
                return &[];
            }
            Ok(httparse::Status::Complete(n)) => n,
            Err(e) => {
                self.stop(Some(Err(format!("malformed request head: {e}"))));
                return &[];
            }
        };
        let fields = || req.headers.iter().map(|h| (h.name, h.value));
        if let Some(problem) = framing_problem(fields(), req.version == Some(0)) {
            self.stop(Some(Err(problem)));
            return &[];
        }
        let chunked = fields().any(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"));
        let length = fields()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| {
                std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
            });
        let connect = req.method == Some("CONNECT");
        let rest = &bytes[len - before..];
        self.buf.clear();
        self.state = match length {
            Some(None) => {
                self.stop(Some(Err("Content-Length is not a number".into())));
                return &[];
            }
            _ if connect => {
                // The rest of the connection is a tunnel.
                self.stop(Some(Ok(())));
                return &[];
            }
            _ if chunked => State::ChunkSize,
            Some(Some(0)) | None => State::Head,
            Some(Some(n)) => State::Fixed(n),
        };
        self.verdicts.push_back(Ok(()));
        rest
    }

    /// Gather one line of the chunked body; once complete, act on it.
    fn line<'b>(&mut self, bytes: &'b [u8]) -> &'b [u8] {
        let (part, rest, done) = match bytes.iter().position(|b| *b == b'\n') {
            Some(i) => (&bytes[..i], &bytes[i + 1..], true),
            None => (bytes, &[][..], false),
        };
        self.buf.extend_from_slice(part);
        if self.buf.len() > MAX_LINE {
            self.stop(None);
            return &[];
        }
        if !done {
            return rest;
        }
        let line = std::mem::take(&mut self.buf);
        let line = line.strip_suffix(b"\r").unwrap_or(&line);
        self.state = match self.state {
            State::ChunkEnd if line.is_empty() => State::ChunkSize,
            State::ChunkSize => {
                let size = line.split(|b| *b == b';').next().unwrap_or_default();
                let size = std::str::from_utf8(size)
                    .ok()
                    .and_then(|s| u64::from_str_radix(s.trim(), 16).ok());
                match size {
                    Some(0) => State::Trailer,
                    Some(n) => State::ChunkData(n),
                    None => {
                        self.stop(None);
                        return &[];
                    }
                }
            }
            State::Trailer if line.is_empty() => State::Head,
            State::Trailer => State::Trailer,
            _ => {
                self.stop(None);
                return &[];
            }
        };
        rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdicts(stream: &[u8], chunk: usize) -> Vec<Verdict> {
        let mut w = HeadWatch::new(8192);
        for part in stream.chunks(chunk) {
            w.feed(part);
        }
        std::iter::from_fn(|| w.take()).collect()
    }

    fn every_split(stream: &str) -> Vec<Verdict> {
        let all = verdicts(stream.as_bytes(), stream.len());
        for chunk in [1, 2, 3, 7, 64] {
            assert_eq!(verdicts(stream.as_bytes(), chunk), all, "chunk {chunk}");
        }
        all
    }

    #[test]
    fn follows_kept_alive_requests_through_their_bodies() {
        let stream = "GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n\
             POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
             POST http://a/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
             3;x=y\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nTrailer: v\r\n\r\n\
             \r\nGET http://a/last HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(every_split(stream), vec![Ok(()); 4]);
    }

    #[test]
    fn an_ambiguous_later_head_is_refused_and_nothing_after_it_is_judged() {
        for bad in [
            "POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST http://a/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            "POST http://a/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET http://a/ HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "POST http://a/ HTTP/1.1\r\nContent-Length: x\r\n\r\n",
            "GET http://a/ HTTP/1.1\r\nbad header\r\n\r\n",
        ] {
            let stream = format!(
                "GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n{bad}0\r\n\r\nGET http://a/ HTTP/1.1\r\n\r\n"
            );
            let got = every_split(&stream);
            assert_eq!(got.len(), 2, "{bad:?}: {got:?}");
            assert_eq!(got[0], Ok(()));
            assert!(got[1].is_err(), "{bad:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn streams_of_requests_split_anyhow_judge_the_same(
            parts in proptest::collection::vec(
                proptest::sample::select(vec![
                    "GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
                    "POST http://a/ HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
                    "POST http://a/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n",
                    "POST http://a/ HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                    "\r\n",
                    "garbage",
                ]),
                0..8,
            ),
            noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        ) {
            let mut data = parts.concat().into_bytes();
            data.extend_from_slice(&noise);
            crate::fuzzing::request_stream(&data);
            crate::fuzzing::server_answer(&data);
        }
    }

    #[test]
    fn connect_and_broken_bodies_end_the_walk() {
        let stream = "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\nGET http://a/ HTTP/1.1\r\n\r\n";
        assert_eq!(every_split(stream), vec![Ok(())]);
        let stream = "POST http://a/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n\
             GET http://a/ HTTP/1.1\r\n\r\n";
        assert_eq!(every_split(stream), vec![Ok(())]);
        let mut w = HeadWatch::new(64);
        w.feed(&[b'a'; 100]);
        assert!(w.take().unwrap().is_err(), "an endless head is refused");
    }
}
