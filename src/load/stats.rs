//! Latency samples, percentiles and the per-scenario results.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Nearest-rank percentile (`p` in 0..=100) of an ascending slice; `None` when empty.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let p = p.clamp(0.0, 100.0);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.saturating_sub(1).min(sorted.len() - 1)])
}

/// Latency distribution of the successful operations of a scenario, in microseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

impl Latency {
    /// Summarize samples given in nanoseconds (sorted in place); `None` when there are none.
    pub fn from_nanos(samples: &mut [u64]) -> Option<Latency> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let us = |ns: u64| ns as f64 / 1000.0;
        let sum: u128 = samples.iter().map(|&s| u128::from(s)).sum();
        Some(Latency {
            count: samples.len() as u64,
            mean_us: sum as f64 / samples.len() as f64 / 1000.0,
            p50_us: us(percentile(samples, 50.0)?),
            p90_us: us(percentile(samples, 90.0)?),
            p99_us: us(percentile(samples, 99.0)?),
            max_us: us(*samples.last()?),
        })
    }
}

/// Keeps the first few distinct error messages of a scenario, with a count of all errors.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Errors {
    pub count: u64,
    pub samples: Vec<String>,
}

impl Errors {
    const MAX_SAMPLES: usize = 5;

    pub fn record(&mut self, message: impl Into<String>) {
        self.count += 1;
        let message = message.into();
        if self.samples.len() < Self::MAX_SAMPLES && !self.samples.contains(&message) {
            self.samples.push(message);
        }
    }

    pub fn merge(&mut self, other: Errors) {
        self.count += other.count;
        for s in other.samples {
            if self.samples.len() < Self::MAX_SAMPLES && !self.samples.contains(&s) {
                self.samples.push(s);
            }
        }
    }
}

/// Outcome of a rate scenario: operations completed per second by `clients` concurrent clients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rate {
    pub clients: usize,
    pub ok: u64,
    pub errors: Errors,
    pub secs: f64,
    pub per_sec: f64,
    pub latency: Option<Latency>,
    /// CPU time the proxy (and its child processes) used per successful operation, in microseconds; none
    /// for `direct` or a proxy given without `--pid`.
    #[serde(default)]
    pub proxy_cpu_us_per_op: Option<f64>,
}

impl Rate {
    /// Build from raw samples (nanoseconds per successful operation), the errors and the elapsed time.
    pub fn new(clients: usize, mut samples: Vec<u64>, errors: Errors, elapsed: Duration) -> Rate {
        let secs = elapsed.as_secs_f64();
        let ok = samples.len() as u64;
        Rate {
            clients,
            ok,
            errors,
            secs,
            per_sec: if secs > 0.0 { ok as f64 / secs } else { 0.0 },
            latency: Latency::from_nanos(&mut samples),
            proxy_cpu_us_per_op: None,
        }
    }

    /// Record the CPU time the proxy used over the whole scenario.
    pub fn with_proxy_cpu(mut self, cpu: Option<Duration>) -> Rate {
        self.proxy_cpu_us_per_op = cpu
            .filter(|_| self.ok > 0)
            .map(|c| c.as_secs_f64() * 1e6 / self.ok as f64);
        self
    }
}

/// Which way the bulk bytes flow: from the origin to the client (an image pull) or from the client to the
/// origin (a backup agent's upload to object storage).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Download,
    Upload,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Download => "download",
            Direction::Upload => "upload",
        }
    }
}

impl std::str::FromStr for Direction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "download" | "down" => Ok(Direction::Download),
            "upload" | "up" => Ok(Direction::Upload),
            other => Err(format!("direction {other:?}: expected download or upload")),
        }
    }
}

/// One bulk case: a direction and a number of concurrent tunnels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BulkCase {
    pub direction: Direction,
    pub streams: usize,
}

impl std::fmt::Display for BulkCase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let streams = if self.streams == 1 {
            "stream"
        } else {
            "streams"
        };
        write!(f, "{}, {} {streams}", self.direction.as_str(), self.streams)
    }
}

/// Bulk transfer through `case.streams` tunnels at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bulk {
    pub case: BulkCase,
    pub bytes: u64,
    pub secs: f64,
    /// Decimal megabytes (10^6 bytes) per second of TLS payload.
    pub mb_per_sec: f64,
    pub errors: Errors,
    /// CPU time the proxy (and its child processes) used per decimal gigabyte moved, in milliseconds.
    #[serde(default)]
    pub proxy_cpu_ms_per_gb: Option<f64>,
}

impl Bulk {
    pub fn new(case: BulkCase, bytes: u64, elapsed: Duration, errors: Errors) -> Bulk {
        let secs = elapsed.as_secs_f64();
        Bulk {
            case,
            bytes,
            secs,
            mb_per_sec: if secs > 0.0 {
                bytes as f64 / 1e6 / secs
            } else {
                0.0
            },
            errors,
            proxy_cpu_ms_per_gb: None,
        }
    }

    /// Record the CPU time the proxy used over the whole transfer.
    pub fn with_proxy_cpu(mut self, cpu: Option<Duration>) -> Bulk {
        self.proxy_cpu_ms_per_gb = cpu
            .filter(|_| self.bytes > 0)
            .map(|c| c.as_secs_f64() * 1e3 / (self.bytes as f64 / 1e9));
        self
    }
}

/// Idle tunnels held open at once, and what they cost the proxy in resident memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Idle {
    pub requested: usize,
    pub opened: usize,
    pub errors: Errors,
    /// Resident memory of the proxy (and its children) before and while the tunnels were open.
    pub baseline_rss_bytes: Option<u64>,
    pub loaded_rss_bytes: Option<u64>,
    pub rss_per_tunnel_bytes: Option<f64>,
}

impl Idle {
    pub fn new(
        requested: usize,
        opened: usize,
        errors: Errors,
        baseline: Option<u64>,
        loaded: Option<u64>,
    ) -> Idle {
        let per = match (baseline, loaded) {
            (Some(b), Some(l)) if opened > 0 => Some((l as f64 - b as f64) / opened as f64),
            _ => None,
        };
        Idle {
            requested,
            opened,
            errors,
            baseline_rss_bytes: baseline,
            loaded_rss_bytes: loaded,
            rss_per_tunnel_bytes: per,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&v, 0.0), Some(1));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[1, 2, 3], 50.0), Some(2));
    }

    #[test]
    fn latency_summary_sorts_and_converts_to_micros() {
        let mut s = vec![3_000, 1_000, 2_000, 4_000];
        let l = Latency::from_nanos(&mut s).unwrap();
        assert_eq!(l.count, 4);
        assert_eq!(l.p50_us, 2.0);
        assert_eq!(l.p99_us, 4.0);
        assert_eq!(l.max_us, 4.0);
        assert_eq!(l.mean_us, 2.5);
        assert!(Latency::from_nanos(&mut []).is_none());
    }

    #[test]
    fn rate_and_bulk_divide_by_elapsed() {
        let r = Rate::new(
            2,
            vec![1; 50],
            Errors::default(),
            Duration::from_millis(500),
        );
        assert_eq!(r.ok, 50);
        assert_eq!(r.per_sec, 100.0);
        let case = BulkCase {
            direction: Direction::Upload,
            streams: 8,
        };
        let b = Bulk::new(case, 10_000_000, Duration::from_secs(2), Errors::default());
        assert_eq!(b.mb_per_sec, 5.0);
        assert_eq!(b.case.to_string(), "upload, 8 streams");
        assert_eq!("down".parse::<Direction>(), Ok(Direction::Download));
        assert!("sideways".parse::<Direction>().is_err());
        let z = Rate::new(1, vec![], Errors::default(), Duration::ZERO);
        assert_eq!(z.per_sec, 0.0);
        assert!(z.latency.is_none());
    }

    #[test]
    fn errors_keep_a_few_distinct_samples() {
        let mut e = Errors::default();
        for i in 0..20 {
            e.record(format!("e{}", i % 7));
        }
        assert_eq!(e.count, 20);
        assert_eq!(e.samples, vec!["e0", "e1", "e2", "e3", "e4"]);
        let mut f = Errors::default();
        f.record("x");
        f.merge(e);
        assert_eq!(f.count, 21);
        assert_eq!(f.samples.len(), 5);
    }

    #[test]
    fn idle_divides_the_growth_by_the_tunnels_opened() {
        let i = Idle::new(100, 50, Errors::default(), Some(1_000_000), Some(1_500_000));
        assert_eq!(i.rss_per_tunnel_bytes, Some(10_000.0));
        let none = Idle::new(100, 0, Errors::default(), Some(1), Some(2));
        assert_eq!(none.rss_per_tunnel_bytes, None);
        let unknown = Idle::new(100, 100, Errors::default(), None, None);
        assert_eq!(unknown.rss_per_tunnel_bytes, None);
    }
}
