//! A process-wide bound on password checks. argon2 is slow and memory-hard on purpose (about 19 MiB and tens
//! of milliseconds per check with the recommended parameters), so wrong passwords sent as fast as a client
//! can send them must not take every core, or memory for one check per blocking-pool thread. At most half the
//! cores (at least one) check passwords at once; a request waits its turn for up to `timeouts.header` and is
//! then refused with `503 auth_busy`. Headers checked before, right or wrong, are answered from a cache
//! without a turn (see `ClientGroups::known`).
//!
//! Each client address may have at most [`PER_SOURCE`] checks pending (waiting for a turn or running): one
//! client flooding wrong passwords over hundreds of connections then holds a few places in the queue, not all
//! of them, and fresh logins from other clients wait behind at most that many of its checks. A check over the
//! share is refused at once (`auth_busy`), without waiting.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

/// Pending password checks allowed per client address.
pub const PER_SOURCE: usize = 4;

/// Pending checks by client address.
#[derive(Default)]
struct Pending(Mutex<HashMap<IpAddr, usize>>);

/// One pending check of a client address; the place is given back when it is dropped.
struct Place<'a> {
    pending: &'a Pending,
    source: IpAddr,
}

impl Pending {
    fn take(&self, source: IpAddr, limit: usize) -> Option<Place<'_>> {
        let source = source.to_canonical();
        let mut m = self.0.lock().ok()?;
        let n = m.entry(source).or_default();
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(Place {
            pending: self,
            source,
        })
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        if let Ok(mut m) = self.pending.0.lock() {
            if let Some(n) = m.get_mut(&self.source) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&self.source);
                }
            }
        }
    }
}

static PENDING: LazyLock<Pending> = LazyLock::new(Pending::default);

static TURNS: LazyLock<Arc<Semaphore>> = LazyLock::new(|| {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    Arc::new(Semaphore::new((cores / 2).max(1)))
});

/// Run `check` for a request from `source` on the blocking pool once one of the process's turns is free
/// within `wait`; `None` when no turn came in time, or at once when `source` already has [`PER_SOURCE`]
/// checks pending.
pub async fn run<T: Send + 'static>(
    source: IpAddr,
    wait: Duration,
    check: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let _place = PENDING.take(source, PER_SOURCE)?;
    run_with(TURNS.clone(), wait, check).await
}

async fn run_with<T: Send + 'static>(
    turns: Arc<Semaphore>,
    wait: Duration,
    check: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let turn = tokio::time::timeout(wait, turns.acquire_owned())
        .await
        .ok()?
        .ok()?;
    tokio::task::spawn_blocking(move || {
        let _turn = turn;
        check()
    })
    .await
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_check_waits_for_a_free_turn_and_gives_up_after_the_wait() {
        let turns = Arc::new(Semaphore::new(1));
        let held = turns.clone().acquire_owned().await.unwrap();
        let waited = run_with(turns.clone(), Duration::from_millis(50), || 1).await;
        assert_eq!(waited, None, "no turn was free");
        // A waiting check gets the turn as soon as it is released.
        let waiting = tokio::spawn(run_with(turns.clone(), Duration::from_secs(10), || 2));
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(held);
        assert_eq!(waiting.await.unwrap(), Some(2));
        // The turn is given back once the check is done.
        assert_eq!(turns.available_permits(), 1);
    }

    #[tokio::test]
    async fn one_source_holds_a_bounded_share_of_pending_checks() {
        let pending = Pending::default();
        let flood: IpAddr = "10.0.0.9".parse().unwrap();
        let other: IpAddr = "10.0.0.10".parse().unwrap();
        let places: Vec<_> = (0..3).map(|_| pending.take(flood, 3)).collect();
        assert!(places.iter().all(Option::is_some));
        assert!(pending.take(flood, 3).is_none(), "over the share");
        // The same client over IPv4-mapped IPv6 shares its share.
        assert!(pending
            .take("::ffff:10.0.0.9".parse().unwrap(), 3)
            .is_none());
        // Other clients are not affected.
        let fresh = pending.take(other, 3);
        assert!(fresh.is_some());
        // A finished check gives its place back.
        drop(places);
        assert!(pending.take(flood, 3).is_some());
        drop(fresh);
        assert!(
            pending.0.lock().unwrap().get(&other).is_none(),
            "no entry kept"
        );
    }
}
