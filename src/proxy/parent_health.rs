//! Which parent proxies failed recently: a parent that refused or timed out a connection is passed over for
//! [`DOWN_FOR`]. Shared by every configuration generation (`Ctx`; a parent that was down before a reload
//! still is), asked by `parent::Failover`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a parent that refused or timed out a connection is passed over.
pub const DOWN_FOR: Duration = Duration::from_secs(30);
/// Parents that failed recently, by name.
#[derive(Default)]
pub struct Down(Mutex<HashMap<Arc<str>, Instant>>);

impl Down {
    pub(super) fn is_down(&self, name: &Arc<str>) -> bool {
        let down = self.0.lock().unwrap_or_else(|e| e.into_inner());
        down.get(name).is_some_and(|at| at.elapsed() < DOWN_FOR)
    }

    pub(super) fn mark(&self, name: &Arc<str>) {
        let mut down = self.0.lock().unwrap_or_else(|e| e.into_inner());
        down.insert(name.clone(), Instant::now());
    }

    pub(super) fn clear(&self, name: &Arc<str>) {
        let mut down = self.0.lock().unwrap_or_else(|e| e.into_inner());
        down.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_parent_is_down_for_a_while() {
        let down = Down::default();
        let name: Arc<str> = "corp".into();
        assert!(!down.is_down(&name));
        down.mark(&name);
        assert!(down.is_down(&name));
        down.clear(&name);
        assert!(!down.is_down(&name));
    }
}
