//! Fail-closed parser for the TLS ClientHello a client sends first inside a
//! CONNECT tunnel.
//!
//! The proxy authorises a tunnel by the CONNECT authority, but a client could
//! name an allowed host there and then ask the TLS server for another one
//! (domain fronting). Reading the SNI from the first bytes of the tunnel lets
//! the caller check that both names agree before forwarding anything.
//!
//! [`peek_client_hello`] is meant to be called on a growing buffer of peeked
//! bytes: every strict prefix of a valid hello yields [`Peek::Incomplete`], so
//! the caller keeps reading (up to its own size and time caps) until it gets
//! [`Peek::Complete`], or a definite [`Peek::NotTls`] / [`Peek::Invalid`].
//! Anything the parser cannot vouch for is reported as invalid rather than
//! guessed at, because a lenient parser that disagrees with the real server
//! about which name was asked for is exactly what fronting exploits.
//!
//! The parser borrows the input and only copies the handshake message when it
//! is split across several records.

use std::borrow::Cow;

/// What the ClientHello says about where the client wants to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelloInfo {
    /// `host_name` from the server_name extension, exactly as sent (not
    /// lowercased); `None` if the extension is absent.
    pub sni: Option<String>,
    /// Protocol names from the ALPN extension, in the client's order.
    pub alpn: Vec<String>,
    /// Whether an encrypted_client_hello extension is present; `sni` is then
    /// the outer (public) name.
    pub ech: bool,
    /// Number of TLS records the ClientHello spanned.
    pub records: usize,
    /// Bytes of the records that carried the hello, record headers included.
    pub hello_len: usize,
    /// `ClientHello.legacy_version`.
    pub legacy_version: u16,
    /// Versions from the supported_versions extension, GREASE removed.
    pub supported_versions: Vec<u16>,
}

impl HelloInfo {
    /// What the policy judges of the hello.
    pub fn hello(&self) -> crate::policy::tls::Hello<'_> {
        crate::policy::tls::Hello {
            sni: self.sni.as_deref(),
            ech: self.ech,
        }
    }
}

/// Verdict on the bytes seen so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peek {
    /// A whole, well-formed ClientHello.
    Complete(HelloInfo),
    /// A valid prefix of a ClientHello; more bytes are needed.
    Incomplete,
    /// The stream does not start with a TLS handshake record.
    NotTls,
    /// Looks like TLS but is malformed; the reason is for logs.
    Invalid(&'static str),
}

const CONTENT_TYPE_HANDSHAKE: u8 = 0x16;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const RECORD_HEADER_LEN: usize = 5;
const HANDSHAKE_HEADER_LEN: usize = 4;
/// RFC 8446 §5.1: a plaintext record never exceeds 2^14 bytes.
const MAX_RECORD_LEN: usize = 16384;
/// Real hellos, even with post-quantum key shares, stay well below this; the
/// bound keeps a hostile length from making the caller buffer without limit.
const MAX_HELLO_LEN: usize = 64 * 1024;
const MAX_SESSION_ID_LEN: usize = 32;
const RANDOM_LEN: usize = 32;

const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;
const EXT_SUPPORTED_VERSIONS: u16 = 43;
/// encrypted_client_hello: the final codepoint (0xfe0d) and the drafts' (0xfe0a–0xfe0c); and ESNI's
/// encrypted_server_name (0xffce). Each hides the real server name from the proxy.
const EXT_ENCRYPTED_CLIENT_HELLO: u16 = 0xfe0d;
const EXT_ECH_DRAFTS: std::ops::RangeInclusive<u16> = 0xfe0a..=0xfe0c;
const EXT_ENCRYPTED_SERVER_NAME: u16 = 0xffce;
const NAME_TYPE_HOST_NAME: u8 = 0;

/// Classifies `buf`, the first bytes a client sent, as a ClientHello.
///
/// Never panics. Bytes after the records that carry the hello (for example a
/// ChangeCipherSpec or early data) are not examined.
pub fn peek_client_hello(buf: &[u8]) -> Peek {
    let framing = match frame(buf) {
        Ok(framing) => framing,
        Err(verdict) => return verdict,
    };
    let message = match gather(buf, &framing) {
        Some(message) => message,
        None => return Peek::Invalid("inconsistent record framing"),
    };
    let Some(body) = message.get(HANDSHAKE_HEADER_LEN..) else {
        return Peek::Invalid("inconsistent record framing");
    };
    match parse_client_hello(body) {
        Ok(mut info) => {
            info.records = framing.records;
            info.hello_len = framing.end;
            Peek::Complete(info)
        }
        Err(reason) => Peek::Invalid(reason),
    }
}

/// Where the handshake message sits in the record stream.
struct Framing {
    /// Records carrying the message.
    records: usize,
    /// Offset just past the last of those records.
    end: usize,
    /// Handshake header plus body length.
    message_len: usize,
}

/// Walks the records until they hold one whole handshake message.
///
/// Checks everything that can be judged from a prefix as soon as the deciding
/// byte arrives, so a bad stream is rejected without waiting for more input.
fn frame(buf: &[u8]) -> Result<Framing, Peek> {
    let mut pos = 0;
    let mut records = 0;
    // Handshake bytes in the complete records walked so far.
    let mut got = 0;
    // The handshake header may itself be split across records.
    let mut header = [0u8; HANDSHAKE_HEADER_LEN];
    loop {
        let rest = buf.get(pos..).unwrap_or_default();
        let record_len = record_header(rest, records == 0)?;
        let payload_start = pos + RECORD_HEADER_LEN;
        let payload_end = payload_start + record_len;
        let available = buf
            .get(payload_start..payload_end.min(buf.len()))
            .unwrap_or_default();

        let header_known = got.min(HANDSHAKE_HEADER_LEN);
        for (slot, &byte) in header.iter_mut().skip(header_known).zip(available.iter()) {
            *slot = byte;
        }
        let seen = got + available.len();
        if seen >= 1 && header[0] != HANDSHAKE_CLIENT_HELLO {
            return Err(Peek::Invalid("handshake is not a ClientHello"));
        }
        let mut message_len = None;
        if seen >= HANDSHAKE_HEADER_LEN {
            let body_len =
                usize::from(header[1]) << 16 | usize::from(header[2]) << 8 | usize::from(header[3]);
            if body_len > MAX_HELLO_LEN {
                return Err(Peek::Invalid("ClientHello too long"));
            }
            let len = HANDSHAKE_HEADER_LEN + body_len;
            // Nothing may follow the hello in its last record: the client has
            // no other handshake message to send before the server answers.
            if got + record_len > len {
                return Err(Peek::Invalid("data after ClientHello in its record"));
            }
            message_len = Some(len);
        }
        if available.len() < record_len {
            return Err(Peek::Incomplete);
        }
        got += record_len;
        records += 1;
        pos = payload_end;
        if message_len == Some(got) {
            return Ok(Framing {
                records,
                end: pos,
                message_len: got,
            });
        }
    }
}

/// Validates the (possibly partial) record header at the start of `rest` and
/// returns the record's payload length.
fn record_header(rest: &[u8], first: bool) -> Result<usize, Peek> {
    // On the first record a mismatch means the client is simply not speaking
    // TLS; once a hello has started, it means a broken or hostile stream.
    let Some(&content_type) = rest.first() else {
        return Err(Peek::Incomplete);
    };
    if content_type != CONTENT_TYPE_HANDSHAKE {
        return Err(if first {
            Peek::NotTls
        } else {
            Peek::Invalid("non-handshake record inside ClientHello")
        });
    }
    let Some(&major) = rest.get(1) else {
        return Err(Peek::Incomplete);
    };
    if major != 3 {
        return Err(if first {
            Peek::NotTls
        } else {
            Peek::Invalid("bad record version")
        });
    }
    let Some(&minor) = rest.get(2) else {
        return Err(Peek::Incomplete);
    };
    if !(1..=4).contains(&minor) {
        return Err(Peek::Invalid("unsupported record version"));
    }
    let (Some(&hi), Some(&lo)) = (rest.get(3), rest.get(4)) else {
        return Err(Peek::Incomplete);
    };
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    if len > MAX_RECORD_LEN {
        return Err(Peek::Invalid("record too long"));
    }
    if len == 0 {
        return Err(Peek::Invalid("empty handshake record"));
    }
    Ok(len)
}

/// Returns the handshake message, borrowed when it sits in one record.
fn gather<'a>(buf: &'a [u8], framing: &Framing) -> Option<Cow<'a, [u8]>> {
    if framing.records == 1 {
        return buf.get(RECORD_HEADER_LEN..framing.end).map(Cow::Borrowed);
    }
    let mut message = Vec::with_capacity(framing.message_len);
    let mut pos = 0;
    while pos < framing.end {
        let len_bytes = buf.get(pos + 3..pos + RECORD_HEADER_LEN)?;
        let len = usize::from(u16::from_be_bytes([
            *len_bytes.first()?,
            *len_bytes.get(1)?,
        ]));
        let start = pos + RECORD_HEADER_LEN;
        message.extend_from_slice(buf.get(start..start + len)?);
        pos = start + len;
    }
    (message.len() == framing.message_len).then_some(Cow::Owned(message))
}

/// Parses a complete ClientHello body (after the handshake header).
fn parse_client_hello(body: &[u8]) -> Result<HelloInfo, &'static str> {
    let mut r = Reader::new(body);
    let legacy_version = r.u16().ok_or("ClientHello truncated")?;
    r.take(RANDOM_LEN).ok_or("ClientHello truncated")?;
    let session_id = r.bytes8().ok_or("session_id length overruns")?;
    if session_id.len() > MAX_SESSION_ID_LEN {
        return Err("session_id too long");
    }
    let suites = r.bytes16().ok_or("cipher_suites length overruns")?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err("bad cipher_suites length");
    }
    let compression = r.bytes8().ok_or("compression_methods length overruns")?;
    if compression.is_empty() {
        return Err("no compression methods");
    }

    let mut info = HelloInfo {
        sni: None,
        alpn: Vec::new(),
        ech: false,
        records: 0,
        hello_len: 0,
        legacy_version,
        supported_versions: Vec::new(),
    };
    // RFC 8446 §4.1.2: the extensions block may be omitted entirely, but only
    // then; a partial length field is malformed.
    if r.is_empty() {
        return Ok(info);
    }
    let mut extensions = Reader::new(r.bytes16().ok_or("extension length overruns")?);
    if !r.is_empty() {
        return Err("trailing data after extensions");
    }

    // One bit per extension type: constant time per lookup however many
    // extensions a hostile hello carries.
    let mut seen = [0u64; 1024];
    while !extensions.is_empty() {
        let ext_type = extensions.u16().ok_or("extension length overruns")?;
        let data = extensions.bytes16().ok_or("extension length overruns")?;
        // GREASE values are meaningless by design (RFC 8701) and may repeat.
        if is_grease(ext_type) {
            continue;
        }
        let word = seen
            .get_mut(usize::from(ext_type >> 6))
            .ok_or("extension type out of range")?;
        let bit = 1u64 << (ext_type & 63);
        // RFC 8446 §4.2: duplicates are forbidden, and a server may honour a
        // different copy than the one inspected here.
        if *word & bit != 0 {
            return Err("duplicate extension");
        }
        *word |= bit;
        match ext_type {
            EXT_SERVER_NAME => info.sni = Some(parse_server_name(data)?),
            EXT_ALPN => info.alpn = parse_alpn(data)?,
            EXT_SUPPORTED_VERSIONS => info.supported_versions = parse_supported_versions(data)?,
            EXT_ENCRYPTED_CLIENT_HELLO | EXT_ENCRYPTED_SERVER_NAME => info.ech = true,
            t if EXT_ECH_DRAFTS.contains(&t) => info.ech = true,
            _ => {}
        }
    }
    Ok(info)
}

/// RFC 6066 §3 server_name extension: the single `host_name` entry.
fn parse_server_name(data: &[u8]) -> Result<String, &'static str> {
    let mut outer = Reader::new(data);
    let mut list = Reader::new(outer.bytes16().ok_or("server_name length overruns")?);
    if !outer.is_empty() {
        return Err("trailing data in server_name");
    }
    let mut host = None;
    while !list.is_empty() {
        let name_type = list.u8().ok_or("server_name entry truncated")?;
        let name = list.bytes16().ok_or("server_name entry length overruns")?;
        if name_type != NAME_TYPE_HOST_NAME {
            continue;
        }
        // RFC 6066 allows one name per type; with two, the server might route
        // on the one not checked here.
        if host.is_some() {
            return Err("more than one host_name");
        }
        if name.is_empty() {
            return Err("empty host_name");
        }
        // Spaces, control bytes and non-ASCII never occur in a DNS name and
        // could confuse logs or comparisons downstream.
        if !name.iter().all(|b| (0x21..=0x7e).contains(b)) {
            return Err("SNI contains non-ASCII or control bytes");
        }
        host = Some(name);
    }
    let host = host.ok_or("server_name has no host_name")?;
    Ok(host.iter().copied().map(char::from).collect())
}

/// RFC 7301 ALPN extension: a non-empty list of non-empty protocol names.
fn parse_alpn(data: &[u8]) -> Result<Vec<String>, &'static str> {
    let mut outer = Reader::new(data);
    let mut list = Reader::new(outer.bytes16().ok_or("ALPN length overruns")?);
    if !outer.is_empty() {
        return Err("trailing data in ALPN");
    }
    if list.is_empty() {
        return Err("empty ALPN list");
    }
    let mut protocols = Vec::new();
    while !list.is_empty() {
        let name = list.bytes8().ok_or("ALPN name length overruns")?;
        if name.is_empty() {
            return Err("empty ALPN protocol name");
        }
        protocols.push(String::from_utf8_lossy(name).into_owned());
    }
    Ok(protocols)
}

/// RFC 8446 §4.2.1 supported_versions as sent in a ClientHello.
fn parse_supported_versions(data: &[u8]) -> Result<Vec<u16>, &'static str> {
    let mut outer = Reader::new(data);
    let list = outer.bytes8().ok_or("supported_versions length overruns")?;
    if !outer.is_empty() {
        return Err("trailing data in supported_versions");
    }
    if list.is_empty() || list.len() % 2 != 0 {
        return Err("bad supported_versions length");
    }
    Ok(list
        .chunks_exact(2)
        .map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
        .filter(|&version| !is_grease(version))
        .collect())
}

/// RFC 8701 GREASE values: 0x0a0a, 0x1a1a, ..., 0xfafa.
fn is_grease(value: u16) -> bool {
    let [hi, lo] = value.to_be_bytes();
    hi == lo && lo & 0x0f == 0x0a
}

/// Bounds-checked big-endian reader over a slice; every read that would run
/// past the end returns `None` instead of panicking.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(rest: &'a [u8]) -> Self {
        Self { rest }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let head = self.rest.get(..n)?;
        self.rest = self.rest.get(n..)?;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }

    fn u16(&mut self) -> Option<u16> {
        let bytes = self.take(2)?;
        Some(u16::from_be_bytes([*bytes.first()?, *bytes.get(1)?]))
    }

    /// A vector with a one-byte length prefix.
    fn bytes8(&mut self) -> Option<&'a [u8]> {
        let len = self.u8()?;
        self.take(usize::from(len))
    }

    /// A vector with a two-byte length prefix.
    fn bytes16(&mut self) -> Option<&'a [u8]> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }
}

#[cfg(test)]
#[path = "client_hello_tests.rs"]
mod tests;
