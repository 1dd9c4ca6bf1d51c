//! Reaching parent proxies, for tunnels (`parent`) and plain HTTP (`parent_http`, `upstream`): the
//! destination check before any parent is asked, the order a route's parents are tried in with their health
//! (`parent_health`), and a connection to one (TCP, then TLS for an `https://` parent).

use super::dial::{tune_socket, DialInfo, Dialer};
use super::parent_health::Down;
use super::upstream_io::UpstreamIo;
use crate::policy::route::Parent;
use crate::reason::{Reason, Refusal};
use crate::target::Target;
use rustls::pki_types::ServerName;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Before any parent is asked: resolve the name and check every address like a direct connection would,
/// unless every parent of the route resolves for itself (`resolve: parent`). Records which was done.
pub(super) async fn check_destination(
    dialer: &Dialer,
    parents: &[Arc<Parent>],
    target: &Target,
    info: &mut DialInfo,
) -> Result<(), Refusal> {
    if parents.iter().all(|p| p.resolve_at_parent) {
        info.resolve = Some("parent");
        Ok(())
    } else {
        info.resolve = Some("local");
        dialer.resolve(target, info).await.map(drop)
    }
}

/// Why a parent could not be reached.
#[derive(Debug, Clone)]
pub(super) struct Unreached {
    /// The word in `parent_status`: `refused`, `unreachable`, `timeout` or `tls_error`.
    pub word: &'static str,
    pub detail: String,
}

/// The route's parents in order, passing over those that failed recently, and what became of each.
pub(super) struct Failover<'a> {
    parents: &'a [Arc<Parent>],
    down: &'a Down,
    next: usize,
    /// Every parent failed recently: all are tried again (one that came back is used at once).
    all_down: bool,
    tried: usize,
    timeouts: usize,
    last_error: Option<String>,
}

impl<'a> Failover<'a> {
    pub(super) fn new(parents: &'a [Arc<Parent>], down: &'a Down, info: &mut DialInfo) -> Self {
        info.via = Some(crate::policy::route::names(parents));
        Failover {
            parents,
            down,
            next: 0,
            all_down: parents.iter().all(|p| down.is_down(&p.name)),
            tried: 0,
            timeouts: 0,
            last_error: None,
        }
    }

    /// The next parent to try, if any is left.
    pub(super) fn next(&mut self, info: &mut DialInfo) -> Option<&'a Arc<Parent>> {
        while let Some(parent) = self.parents.get(self.next) {
            self.next += 1;
            if !self.all_down && self.down.is_down(&parent.name) {
                info.parent_status.push(format!("{}=skipped", parent.name));
                continue;
            }
            self.tried += 1;
            return Some(parent);
        }
        None
    }

    /// `parent` could not be reached: it is passed over for a while.
    pub(super) fn failed(&mut self, parent: &Parent, why: Unreached, info: &mut DialInfo) {
        self.down.mark(&parent.name);
        if why.word == "timeout" {
            self.timeouts += 1;
        }
        info.parent_status
            .push(format!("{}={}", parent.name, why.word));
        self.last_error = Some(format!("{}: {}", parent.name, why.detail));
    }

    /// `parent` took the connection: it is the route.
    pub(super) fn reached(&self, parent: &Parent, info: &mut DialInfo) {
        self.down.clear(&parent.name);
        info.via = Some(parent.name.to_string());
    }

    /// No parent could be reached: the refusal.
    pub(super) fn exhausted(&self, info: &DialInfo) -> Refusal {
        let attempts = info.parent_status.join(", ");
        let last = self
            .last_error
            .as_ref()
            .map(|e| format!("; {e}"))
            .unwrap_or_default();
        if self.tried > 0 && self.timeouts == self.tried {
            Refusal::new(
                Reason::ParentTimeout,
                format!("no parent accepted the connection in time ({attempts}){last}"),
            )
        } else {
            Refusal::new(
                Reason::ParentUnreachable,
                format!("no parent could be reached ({attempts}){last}"),
            )
        }
    }
}

/// A connection to `parent` (TCP, then TLS for an `https://` parent), within its `connect_timeout`.
pub(super) async fn connect(parent: &Parent, info: &mut DialInfo) -> Result<UpstreamIo, Unreached> {
    let started = Instant::now();
    let host = parent.host.trim_start_matches('[').trim_end_matches(']');
    let connected = tokio::time::timeout(parent.connect_timeout, async {
        let tcp = TcpStream::connect((host, parent.port))
            .await
            .map_err(|e| Unreached {
                word: if e.kind() == std::io::ErrorKind::ConnectionRefused {
                    "refused"
                } else {
                    "unreachable"
                },
                detail: e.to_string(),
            })?;
        tune_socket(socket2::SockRef::from(&tcp));
        info.upstream = tcp.peer_addr().ok();
        let Some(tls) = &parent.tls else {
            return Ok(UpstreamIo::Tcp(tcp));
        };
        let name = ServerName::try_from(host.to_string()).map_err(|e| Unreached {
            word: "tls_error",
            detail: format!("{host:?} is not a name a certificate can be checked against: {e}"),
        })?;
        let stream = TlsConnector::from(tls.config.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| Unreached {
                word: "tls_error",
                detail: format!("TLS handshake: {e}"),
            })?;
        Ok(UpstreamIo::Tls(Box::new(stream)))
    })
    .await;
    info.connect_ms = Some(crate::telemetry::log::elapsed_ms(started.elapsed()));
    connected.unwrap_or_else(|_| {
        Err(Unreached {
            word: "timeout",
            detail: format!("no connection within {:?}", parent.connect_timeout),
        })
    })
}
