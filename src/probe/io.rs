//! The network side of `egressd probe`: resolve and check with the proxy's own [`Dialer`], connect (or ask a
//! proxy to CONNECT, with `--via`), then a verified TLS handshake. What went wrong is named by
//! [`super::classify`]; nothing here decides.

use super::classify::{
    body_message, dial_failure, expiry, handshake_io_failure, parse_proxy_answer, proxy_failure,
    Failure, Step,
};
use super::plan::Via;
use super::report::{Observed, TlsFacts};
use crate::proxy::dial::{DialInfo, Dialer};
use crate::target::{Host, Target};
use rustls::pki_types::ServerName;
use std::net::IpAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest proxy response head read, and the most of a refusal's body kept.
const MAX_HEAD: usize = 16 * 1024;
const MAX_BODY: usize = 4096;

pub struct Prober {
    /// Built from the configuration with `--timeout` as its DNS and connect timeouts.
    pub dialer: Dialer,
    pub tls: tokio_rustls::TlsConnector,
    /// `--ca` was given (an unknown issuer then means the bundle lacks it).
    pub custom_ca: bool,
    pub via: Option<Via>,
    pub timeout: Duration,
}

impl Prober {
    /// Probe `target` (the name and port an agent asks for) by connecting to `dial`.
    pub async fn probe(&self, target: &Target, dial: &Target) -> Observed {
        let started = Instant::now();
        let mut seen = Observed {
            dialled: (dial != target).then(|| dial.authority()),
            ..Observed::default()
        };
        let stream = match &self.via {
            None => self.direct(target, dial, &mut seen).await,
            Some(via) => self.through(via, dial, &mut seen).await,
        };
        if let Some(stream) = stream {
            self.handshake(target, stream, &mut seen).await;
        }
        seen.ms = Some(crate::telemetry::log::elapsed_ms(started.elapsed()));
        seen
    }

    /// Resolve `dial` as the proxy would (static hosts, then DNS), check the addresses as the proxy checks
    /// `target`'s (so a rule's `private_cidrs` apply to it), and connect.
    async fn direct(
        &self,
        target: &Target,
        dial: &Target,
        seen: &mut Observed,
    ) -> Option<TcpStream> {
        let mut info = DialInfo::default();
        let result = async {
            let addrs = self.dialer.addresses(&dial.host, &mut info).await?;
            self.dialer.check(target, &addrs, &mut info)?;
            self.dialer.connect(&addrs, dial.port, &mut info).await
        }
        .await;
        seen.addresses = info.resolved.clone();
        seen.connected = info.upstream;
        result
            .map_err(|r| seen.failure = Some(dial_failure(&r, &info)))
            .ok()
    }

    /// Reach the proxy (its name resolved by the system, as an agent's would be) and ask it to CONNECT.
    async fn through(&self, via: &Via, dial: &Target, seen: &mut Observed) -> Option<TcpStream> {
        let proxy = via.proxy.authority();
        let unreachable = |error: &str, detail: String| {
            Some(Failure::new(
                Step::Proxy,
                error,
                format!("cannot reach the proxy {proxy}: {detail}"),
            ))
        };
        let addrs: Vec<IpAddr> = match &via.proxy.host {
            Host::Ip(ip) => vec![*ip],
            Host::Name(name) => {
                let lookup = tokio::net::lookup_host((name.as_str(), via.proxy.port));
                match tokio::time::timeout(self.timeout, lookup).await {
                    Ok(Ok(a)) => a.map(|a| a.ip()).collect(),
                    Ok(Err(e)) => {
                        seen.failure = unreachable("dns", e.to_string());
                        return None;
                    }
                    Err(_) => {
                        seen.failure = unreachable("dns", format!("no DNS answer for {name}"));
                        return None;
                    }
                }
            }
        };
        let mut info = DialInfo::default();
        let mut stream = match self.dialer.connect(&addrs, via.proxy.port, &mut info).await {
            Ok(s) => s,
            Err(r) => {
                let f = dial_failure(&r, &info);
                seen.failure = unreachable(&f.error, f.detail);
                return None;
            }
        };
        seen.connected = info.upstream;
        let authority = dial.authority();
        let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
        if let Some(auth) = &via.authorization {
            request.push_str(&format!("Proxy-Authorization: {auth}\r\n"));
        }
        request.push_str("\r\n");
        let asked = async {
            stream.write_all(request.as_bytes()).await?;
            read_answer(&mut stream).await
        };
        let answer = match tokio::time::timeout(self.timeout, asked).await {
            Err(_) => {
                seen.failure = Some(Failure::timeout(
                    Step::Proxy,
                    &format!("the proxy's answer to CONNECT {authority}"),
                    self.timeout,
                ));
                return None;
            }
            Ok(Err(e)) => {
                seen.failure = Some(Failure::new(
                    Step::Proxy,
                    "bad_answer",
                    format!("CONNECT {authority}: {e}"),
                ));
                return None;
            }
            Ok(Ok(a)) => a,
        };
        seen.failure = proxy_failure(&answer);
        seen.proxy = Some(answer);
        seen.failure.is_none().then_some(stream)
    }

    /// The TLS handshake an agent makes: SNI and certificate name from `target` (no SNI for an address).
    async fn handshake(&self, target: &Target, stream: TcpStream, seen: &mut Observed) {
        let name = match &target.host {
            Host::Ip(ip) => ServerName::IpAddress((*ip).into()),
            Host::Name(n) => match ServerName::try_from(n.clone()) {
                Ok(name) => name,
                Err(e) => {
                    seen.failure = Some(Failure::new(Step::Tls, "bad_name", format!("{n}: {e}")));
                    return;
                }
            },
        };
        let mut tls = match tokio::time::timeout(self.timeout, self.tls.connect(name, stream)).await
        {
            Err(_) => {
                seen.failure = Some(Failure::timeout(
                    Step::Tls,
                    "the TLS handshake",
                    self.timeout,
                ));
                return;
            }
            Ok(Err(e)) => {
                seen.failure = Some(handshake_io_failure(&e, self.custom_ca));
                return;
            }
            Ok(Ok(tls)) => tls,
        };
        let (_, conn) = tls.get_ref();
        let version = match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
            Some(v) => format!("{v:?}"),
            None => "unknown".to_string(),
        };
        let cert = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|der| expiry(der, time::OffsetDateTime::now_utc()));
        seen.tls = Some(TlsFacts {
            version,
            alpn: conn
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
            not_after: cert.as_ref().map(|(at, _)| at.clone()),
            days_left: cert.map(|(_, days)| days),
        });
        // close_notify, so the server sees a clean end rather than a reset.
        let _ = tokio::time::timeout(Duration::from_secs(1), tls.shutdown()).await;
    }
}

/// Read the proxy's response head byte by byte (nothing past it: after a 200 the bytes are the tunnel's), and
/// for a refusal the start of its body.
async fn read_answer(stream: &mut TcpStream) -> std::io::Result<super::classify::ProxyAnswer> {
    let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_HEAD {
            return Err(invalid(format!(
                "response head larger than {MAX_HEAD} bytes"
            )));
        }
        if stream.read(&mut byte).await? == 0 {
            return Err(invalid(if head.is_empty() {
                "the proxy closed the connection without answering".into()
            } else {
                "the proxy closed the connection in the middle of its answer".into()
            }));
        }
        head.push(byte[0]);
    }
    let mut answer = parse_proxy_answer(&head).map_err(invalid)?;
    if !(200..300).contains(&answer.status) {
        let mut body = vec![0u8; answer.content_length.unwrap_or(MAX_BODY).min(MAX_BODY)];
        let mut got = 0;
        // A body without a length that the proxy never ends must not cost the answer.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while got < body.len() {
                match stream.read(&mut body[got..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got += n,
                }
            }
        })
        .await;
        answer.message = body_message(&body[..got]);
    }
    Ok(answer)
}
