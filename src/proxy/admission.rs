//! Admission of accepted connections: one of `limits.max_connections` slots (all listeners together) and one
//! of the client's `limits.max_connections_per_client` (by source address; by verified client certificate on
//! the TLS listener once its handshake is done), and which refusals get a decision line.
//!
//! A client that floods the proxy with connections holding a slot without finishing anything (half-open
//! tunnels, slow request heads, stalled handshakes) runs into its own limit long before it can take every
//! slot. Refusals made before a request is read are counted one by one, but logged once per burst: the first
//! refusal has its decision line, the ones after it within `LOG_INTERVAL` are only counted, and the next line
//! says how many those were. A flood therefore costs a counter increment per connection, not a log line.

use super::accept::WarnEvery;
use crate::config::Limits;
use crate::reason::{Reason, Refusal};
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// At most one decision line per this interval for refusals of one kind (and, per client, of one client).
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Who a per-client limit counts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// The source address (IPv4-mapped addresses arrive as IPv4 already).
    Addr(IpAddr),
    /// The first name of a verified client certificate (TLS listener).
    Cert(Arc<str>),
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientKey::Addr(ip) => write!(f, "address {ip}"),
            ClientKey::Cert(name) => write!(f, "certificate {name}"),
        }
    }
}

/// A connection refused before its request was read.
#[derive(Debug)]
pub struct Refused {
    pub refusal: Refusal,
    /// Whether this refusal gets a decision line (the first of a burst) or is only counted.
    pub logged: bool,
}

impl Refused {
    /// `held_back`: `Some(n)` logs this refusal, saying that `n` were counted without a line since the last
    /// one; `None` counts it only.
    fn new(reason: Reason, mut detail: String, held_back: Option<u64>) -> Box<Self> {
        if let Some(n) = held_back.filter(|n| *n > 0) {
            detail.push_str(&format!(
                "; {n} more refused for this since the last such line (counted in \
                 egressd_connections_rejected_total, not logged)"
            ));
        }
        Box::new(Refused {
            refusal: Refusal::new(reason, detail),
            logged: held_back.is_some(),
        })
    }
}

struct Entry {
    open: usize,
    refusals: WarnEvery,
}

/// The connections each client holds now. A client's entry (and its burst state) lives while it holds at
/// least one, so the map is bounded by the open connections.
#[derive(Default)]
struct ClientSlots {
    open: Mutex<HashMap<ClientKey, Entry>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ClientSlots {
    /// One more connection for `key`, unless it holds `limit` already: then `Err(held_back)`, see
    /// [`Refused::new`].
    fn take(&self, key: &ClientKey, limit: usize, now: Instant) -> Result<(), Option<u64>> {
        let mut open = lock(&self.open);
        match open.get_mut(key) {
            Some(e) if e.open >= limit => Err(e.refusals.due(now)),
            Some(e) => {
                e.open += 1;
                Ok(())
            }
            None if limit == 0 => Err(Some(0)),
            None => {
                open.insert(
                    key.clone(),
                    Entry {
                        open: 1,
                        refusals: WarnEvery::new(LOG_INTERVAL),
                    },
                );
                Ok(())
            }
        }
    }

    fn give_back(&self, key: &ClientKey) {
        let mut open = lock(&self.open);
        if let Some(e) = open.get_mut(key) {
            e.open = e.open.saturating_sub(1);
            if e.open == 0 {
                open.remove(key);
            }
        }
    }

    #[cfg(test)]
    fn held(&self, key: &ClientKey) -> usize {
        lock(&self.open).get(key).map_or(0, |e| e.open)
    }
}

/// A connection's place in its client's count, given back when dropped.
struct ClientSlot {
    slots: Arc<ClientSlots>,
    key: ClientKey,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.slots.give_back(&self.key);
    }
}

/// What an admitted connection holds until it closes.
pub struct Slots {
    client: ClientSlot,
    _global: OwnedSemaphorePermit,
}

impl fmt::Debug for Slots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Slots({})", self.client.key)
    }
}

/// Admitted with its slots, or refused.
pub type Admitted = Result<Slots, Box<Refused>>;

/// The per-client counts and the burst state of `connection_limit`, outliving reloads.
#[derive(Default)]
pub struct Gate {
    clients: Arc<ClientSlots>,
    over_limit: Mutex<Option<WarnEvery>>,
}

impl Gate {
    /// Admit a connection from `client`: its own limit first (a client at its limit is refused as the one at
    /// fault, even when every slot is taken too), then a slot of `global`.
    pub fn admit(&self, global: &Arc<Semaphore>, limits: &Limits, client: IpAddr) -> Admitted {
        let now = Instant::now();
        let key = ClientKey::Addr(client);
        let client = self.take(key, limits.max_connections_per_client, now)?;
        match global.clone().try_acquire_owned() {
            Ok(permit) => Ok(Slots {
                client,
                _global: permit,
            }),
            Err(_) => {
                let held_back = lock(&self.over_limit)
                    .get_or_insert_with(|| WarnEvery::new(LOG_INTERVAL))
                    .due(now);
                Err(Refused::new(
                    Reason::ConnectionLimit,
                    format!(
                        "{} connections already open (limits.max_connections)",
                        limits.max_connections
                    ),
                    held_back,
                ))
            }
        }
    }

    /// Count an admitted connection against `key` from now on (a verified client certificate), instead of
    /// what it was counted against. Refused when `key` holds `limit` already; the old slot is kept then.
    pub fn rekey(
        &self,
        slots: &mut Slots,
        key: ClientKey,
        limit: usize,
    ) -> Result<(), Box<Refused>> {
        if slots.client.key == key {
            return Ok(());
        }
        slots.client = self.take(key, limit, Instant::now())?;
        Ok(())
    }

    fn take(&self, key: ClientKey, limit: usize, now: Instant) -> Result<ClientSlot, Box<Refused>> {
        match self.clients.take(&key, limit, now) {
            Ok(()) => Ok(ClientSlot {
                slots: self.clients.clone(),
                key,
            }),
            Err(held_back) => Err(Refused::new(
                Reason::ClientConnectionLimit,
                format!(
                    "this client ({key}) already has {limit} connections open \
                     (limits.max_connections_per_client)"
                ),
                held_back,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize, per_client: usize) -> Limits {
        Limits {
            max_connections: max,
            max_connections_per_client: per_client,
            max_header_bytes: 32768,
        }
    }

    #[test]
    fn each_client_is_held_to_its_own_limit_and_gets_its_slots_back() {
        let gate = Gate::default();
        let global = Arc::new(Semaphore::new(10));
        let l = limits(10, 2);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let a1 = gate.admit(&global, &l, a).unwrap();
        let _a2 = gate.admit(&global, &l, a).unwrap();
        let refused = gate.admit(&global, &l, a).unwrap_err();
        assert_eq!(refused.refusal.reason, Reason::ClientConnectionLimit);
        assert!(
            refused.refusal.detail.contains("address 10.0.0.1"),
            "{refused:?}"
        );
        assert!(refused.logged, "the first of a burst is logged");
        // The refusal took no global slot; another client is served.
        assert_eq!(global.available_permits(), 8);
        let _b1 = gate.admit(&global, &l, b).unwrap();
        drop(a1);
        assert_eq!(gate.clients.held(&ClientKey::Addr(a)), 1);
        let _a3 = gate.admit(&global, &l, a).unwrap();
    }

    #[test]
    fn refusals_are_logged_once_per_burst_and_the_next_line_counts_the_rest() {
        let slots = ClientSlots::default();
        let key = ClientKey::Addr("10.0.0.1".parse().unwrap());
        let t0 = Instant::now();
        slots.take(&key, 1, t0).unwrap();
        assert_eq!(slots.take(&key, 1, t0), Err(Some(0)));
        for i in 1..=5 {
            assert_eq!(slots.take(&key, 1, t0 + Duration::from_secs(i)), Err(None));
        }
        assert_eq!(slots.take(&key, 1, t0 + LOG_INTERVAL), Err(Some(5)));
        let r = Refused::new(Reason::ClientConnectionLimit, "x".into(), Some(5));
        assert!(
            r.logged && r.refusal.detail.contains("5 more refused"),
            "{r:?}"
        );
        // The entry goes with the client's last connection, and its burst with it.
        slots.give_back(&key);
        assert!(lock(&slots.open).is_empty());
    }

    #[test]
    fn the_global_limit_refuses_when_the_client_is_under_its_own() {
        let gate = Gate::default();
        let global = Arc::new(Semaphore::new(1));
        let l = limits(1, 5);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let held = gate
            .admit(&global, &l, "10.0.0.9".parse().unwrap())
            .unwrap();
        let refused = gate.admit(&global, &l, a).unwrap_err();
        assert_eq!(refused.refusal.reason, Reason::ConnectionLimit);
        assert!(refused.logged);
        assert!(
            !gate.admit(&global, &l, a).unwrap_err().logged,
            "same burst"
        );
        // The refused connections gave their client slot back.
        assert_eq!(gate.clients.held(&ClientKey::Addr(a)), 0);
        drop(held);
        gate.admit(&global, &l, a).unwrap();
    }

    #[test]
    fn a_certificate_has_its_own_count() {
        let gate = Gate::default();
        let global = Arc::new(Semaphore::new(10));
        let l = limits(10, 1);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let cert = ClientKey::Cert("spiffe://a".into());
        let mut first = gate.admit(&global, &l, ip).unwrap();
        gate.rekey(&mut first, cert.clone(), 1).unwrap();
        // The address's slot was handed over: the address may start another handshake.
        let mut second = gate.admit(&global, &l, ip).unwrap();
        let refused = gate.rekey(&mut second, cert.clone(), 1).unwrap_err();
        assert_eq!(refused.refusal.reason, Reason::ClientConnectionLimit);
        assert!(
            refused.refusal.detail.contains("certificate spiffe://a"),
            "{refused:?}"
        );
        assert_eq!(gate.clients.held(&ClientKey::Addr(ip)), 1);
        drop(first);
        gate.rekey(&mut second, cert.clone(), 1).unwrap();
        assert_eq!(gate.clients.held(&ClientKey::Addr(ip)), 0);
        assert_eq!(gate.clients.held(&cert), 1);
    }
}
