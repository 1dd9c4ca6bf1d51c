//! A process-wide bound on password checks. argon2 is slow and memory-hard on purpose (about 19 MiB and tens
//! of milliseconds per check with the recommended parameters), so wrong passwords sent as fast as a client
//! can send them must not take every core, or memory for one check per blocking-pool thread. At most half the
//! cores (at least one) check passwords at once; a request waits its turn for up to `timeouts.header` and is
//! then refused with `503 auth_busy`. Headers checked before, right or wrong, are answered from a cache
//! without a turn (see `ClientGroups::known`).

use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio::sync::Semaphore;

static TURNS: LazyLock<Arc<Semaphore>> = LazyLock::new(|| {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    Arc::new(Semaphore::new((cores / 2).max(1)))
});

/// Run `check` on the blocking pool once one of the process's turns is free within `wait`; `None` when no
/// turn came in time.
pub async fn run<T: Send + 'static>(
    wait: Duration,
    check: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
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
}
