//! The results of one harness run, as JSON (every raw number) and as a Markdown table with ratios against
//! `direct` and `squid` from the same run.

use super::stats::{Bulk, Idle, Rate};
use serde::{Deserialize, Serialize};

/// Settings the run used, recorded with the results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub smoke: bool,
    pub clients: usize,
    pub duration_secs: f64,
    pub latency_duration_secs: f64,
    pub bulk_bytes: u64,
    pub echo_bytes: usize,
    pub idle_requested: usize,
    pub cpus: usize,
    pub started_unix: u64,
}

/// Everything measured for one target (`direct`, `egressd`, `squid` or a proxy address).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TargetResult {
    pub name: String,
    pub proxy_addr: Option<String>,
    pub pid: Option<u32>,
    pub version: Option<String>,
    /// Set when the target could not be started or reached; no scenario ran.
    pub unavailable: Option<String>,
    pub notes: Vec<String>,
    pub idle: Option<Idle>,
    pub tunnels: Option<Rate>,
    pub single: Option<Rate>,
    pub bulk: Option<Bulk>,
    pub deny: Option<Rate>,
}

impl TargetResult {
    pub fn new(name: impl Into<String>) -> Self {
        TargetResult {
            name: name.into(),
            ..Default::default()
        }
    }

    /// Errors across every scenario.
    pub fn error_count(&self) -> u64 {
        let rates = [&self.tunnels, &self.single, &self.deny];
        rates
            .iter()
            .filter_map(|r| r.as_ref())
            .map(|r| r.errors.count)
            .sum::<u64>()
            + self.bulk.as_ref().map_or(0, |b| b.errors.count)
            + self.idle.as_ref().map_or(0, |i| i.errors.count)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub run: RunInfo,
    pub targets: Vec<TargetResult>,
}

// --- formatting ---

fn rate(v: f64) -> String {
    format!("{v:.0}")
}

fn ratio(v: Option<f64>, base: Option<f64>) -> String {
    match (v, base) {
        (Some(v), Some(b)) if b > 0.0 => format!("{:.2}", v / b),
        _ => "—".into(),
    }
}

/// Microseconds, switching to milliseconds from 10 ms on.
pub fn micros(us: f64) -> String {
    if us.abs() >= 10_000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

/// Bytes as KiB with one decimal (negative when the proxy shrank, which is noise).
pub fn kib(bytes: f64) -> String {
    format!("{:.1} KiB", bytes / 1024.0)
}

fn opt(v: Option<String>) -> String {
    v.unwrap_or_else(|| "—".into())
}

/// A column of the CPU table: its heading, its value for a target, and how the value is shown.
type CpuColumn = (
    &'static str,
    fn(&TargetResult) -> Option<f64>,
    fn(f64) -> String,
);

impl Report {
    fn find(&self, name: &str) -> Option<&TargetResult> {
        self.targets
            .iter()
            .find(|t| t.name == name && t.unavailable.is_none())
    }

    /// A Markdown table, one row per target, with ratios against `direct` and `squid` when they ran.
    pub fn table(&self) -> String {
        let direct = self.find("direct");
        let squid = self.find("squid");
        let tunnels = |t: &TargetResult| t.tunnels.as_ref().map(|r| r.per_sec);
        let bulk = |t: &TargetResult| t.bulk.as_ref().map(|b| b.mb_per_sec);
        let deny = |t: &TargetResult| t.deny.as_ref().map(|r| r.per_sec);
        let idle = |t: &TargetResult| t.idle.as_ref().and_then(|i| i.rss_per_tunnel_bytes);
        let p50 = |t: &TargetResult| {
            t.single
                .as_ref()
                .and_then(|r| r.latency.as_ref())
                .map(|l| l.p50_us)
        };

        let mut head = vec![
            format!("target"),
            format!("tunnels/s ({} clients)", self.run.clients),
        ];
        if direct.is_some() {
            head.push("vs direct".into());
        }
        if squid.is_some() {
            head.push("vs squid".into());
        }
        head.push("p50 / p99".into());
        head.push("+p50, 1 client".into());
        head.push("1-stream MB/s".into());
        if direct.is_some() {
            head.push("vs direct".into());
        }
        if squid.is_some() {
            head.push("vs squid".into());
        }
        head.push(format!("denies/s ({} clients)", self.run.clients));
        if squid.is_some() {
            head.push("vs squid".into());
        }
        head.push("RSS per idle tunnel".into());
        if squid.is_some() {
            head.push("vs squid".into());
        }
        head.push("idle tunnels held".into());
        head.push("errors".into());

        let mut out = String::new();
        out.push_str(&format!("| {} |\n", head.join(" | ")));
        out.push_str(&format!("|{}\n", "---|".repeat(head.len())));
        for t in &self.targets {
            let mut row = vec![match &t.version {
                Some(v) => format!("{} ({v})", t.name),
                None => t.name.clone(),
            }];
            if let Some(why) = &t.unavailable {
                row[0] = format!("{} (unavailable: {why})", row[0]);
                row.extend(std::iter::repeat_n("—".to_string(), head.len() - 1));
                out.push_str(&format!("| {} |\n", row.join(" | ")));
                continue;
            }
            row.push(opt(tunnels(t).map(rate)));
            if let Some(d) = direct {
                row.push(ratio(tunnels(t), tunnels(d)));
            }
            if let Some(s) = squid {
                row.push(ratio(tunnels(t), tunnels(s)));
            }
            row.push(opt(t
                .tunnels
                .as_ref()
                .and_then(|r| r.latency.as_ref())
                .map(|l| format!("{} / {}", micros(l.p50_us), micros(l.p99_us)))));
            row.push(match (p50(t), direct.and_then(p50)) {
                (Some(v), Some(d)) if t.name != "direct" => {
                    let delta = v - d;
                    format!(
                        "{}{}",
                        if delta >= 0.0 { "+" } else { "−" },
                        micros(delta.abs())
                    )
                }
                (Some(v), _) => format!("(p50 {})", micros(v)),
                _ => "—".into(),
            });
            row.push(opt(bulk(t).map(rate)));
            if let Some(d) = direct {
                row.push(ratio(bulk(t), bulk(d)));
            }
            if let Some(s) = squid {
                row.push(ratio(bulk(t), bulk(s)));
            }
            row.push(opt(deny(t).map(rate)));
            if let Some(s) = squid {
                row.push(ratio(deny(t), deny(s)));
            }
            row.push(opt(idle(t).map(kib)));
            if let Some(s) = squid {
                row.push(ratio(idle(t), idle(s)));
            }
            row.push(opt(t
                .idle
                .as_ref()
                .map(|i| format!("{} / {}", i.opened, i.requested))));
            row.push(t.error_count().to_string());
            out.push_str(&format!("| {} |\n", row.join(" | ")));
        }
        out
    }

    /// A Markdown table of the CPU time each proxy (with its child processes) used per tunnel, per refusal and
    /// per gigabyte of bulk transfer, with ratios against `squid` when it ran. Empty when no proxy's CPU time
    /// could be read. CPU per operation depends far less on how busy the host was than the rates do.
    pub fn cpu_table(&self) -> String {
        let squid = self.find("squid");
        let per_tunnel = |t: &TargetResult| t.tunnels.as_ref().and_then(|r| r.proxy_cpu_us_per_op);
        let measured: Vec<&TargetResult> = self
            .targets
            .iter()
            .filter(|t| t.unavailable.is_none() && per_tunnel(t).is_some())
            .collect();
        if measured.is_empty() {
            return String::new();
        }
        let columns: [CpuColumn; 3] = [
            ("proxy CPU per tunnel", per_tunnel, micros),
            (
                "proxy CPU per deny",
                |t| t.deny.as_ref().and_then(|r| r.proxy_cpu_us_per_op),
                micros,
            ),
            (
                "proxy CPU per GB (bulk)",
                |t| t.bulk.as_ref().and_then(|b| b.proxy_cpu_ms_per_gb),
                |ms| format!("{ms:.0} ms"),
            ),
        ];
        let mut head = vec!["target".to_string()];
        for (name, _, _) in &columns {
            head.push(name.to_string());
            if squid.is_some() {
                head.push("vs squid".into());
            }
        }
        let mut out = format!("| {} |\n|{}\n", head.join(" | "), "---|".repeat(head.len()));
        for t in measured {
            let mut row = vec![t.name.clone()];
            for (_, value, show) in &columns {
                row.push(opt(value(t).map(show)));
                if let Some(s) = squid {
                    row.push(ratio(value(t), value(s)));
                }
            }
            out.push_str(&format!("| {} |\n", row.join(" | ")));
        }
        out
    }

    /// Notes under the table: unavailable targets, per-target notes and the first error messages.
    pub fn notes(&self) -> String {
        let mut out = String::new();
        for t in &self.targets {
            for n in &t.notes {
                out.push_str(&format!("- {}: {n}\n", t.name));
            }
            let scenarios = [
                ("tunnels", t.tunnels.as_ref().map(|r| &r.errors)),
                ("single", t.single.as_ref().map(|r| &r.errors)),
                ("deny", t.deny.as_ref().map(|r| &r.errors)),
                ("bulk", t.bulk.as_ref().map(|b| &b.errors)),
                ("idle", t.idle.as_ref().map(|i| &i.errors)),
            ];
            for (name, errors) in scenarios {
                if let Some(e) = errors.filter(|e| e.count > 0) {
                    out.push_str(&format!(
                        "- {} {name}: {} errors, e.g. {}\n",
                        t.name,
                        e.count,
                        e.samples.join("; ")
                    ));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::stats::{Errors, Latency};
    use std::time::Duration;

    fn info() -> RunInfo {
        RunInfo {
            smoke: true,
            clients: 32,
            duration_secs: 1.0,
            latency_duration_secs: 1.0,
            bulk_bytes: 1 << 20,
            echo_bytes: 64,
            idle_requested: 10,
            cpus: 2,
            started_unix: 0,
        }
    }

    fn rate(per_sec: u64, p50_us: f64) -> Rate {
        let mut r = Rate::new(32, vec![], Errors::default(), Duration::from_secs(1));
        r.ok = per_sec;
        r.per_sec = per_sec as f64;
        r.latency = Some(Latency {
            count: per_sec,
            mean_us: p50_us,
            p50_us,
            p90_us: p50_us,
            p99_us: p50_us * 2.0,
            max_us: p50_us * 3.0,
        });
        r
    }

    fn target(name: &str, tunnels: u64, p50: f64, mb: f64) -> TargetResult {
        TargetResult {
            name: name.into(),
            tunnels: Some(rate(tunnels, 1000.0)),
            single: Some(rate(100, p50)),
            bulk: Some(Bulk::new(
                (mb * 1e6) as u64,
                Duration::from_secs(1),
                Errors::default(),
            )),
            ..TargetResult::new(name)
        }
    }

    #[test]
    fn table_has_ratios_against_direct_and_squid() {
        let direct = target("direct", 4000, 100.0, 2000.0);
        let mut egressd = target("egressd", 3600, 150.0, 1900.0);
        egressd.deny = Some(rate(9000, 50.0));
        egressd.idle = Some(Idle::new(
            10,
            10,
            Errors::default(),
            Some(1 << 20),
            Some((1 << 20) + 20_480),
        ));
        let mut squid = target("squid", 2000, 400.0, 1000.0);
        squid.deny = Some(rate(3000, 50.0));
        squid.idle = Some(Idle::new(10, 10, Errors::default(), Some(0), Some(327_680)));
        let report = Report {
            run: info(),
            targets: vec![direct, egressd, squid],
        };
        let table = report.table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 5, "{table}");
        assert!(lines[0].starts_with("| target | tunnels/s (32 clients) | vs direct | vs squid |"));
        let egressd_row = lines[3];
        assert!(
            egressd_row.starts_with("| egressd | 3600 | 0.90 | 1.80 |"),
            "{egressd_row}"
        );
        assert!(egressd_row.contains("| +50 µs |"), "{egressd_row}");
        assert!(
            egressd_row.contains("| 1900 | 0.95 | 1.90 |"),
            "{egressd_row}"
        );
        assert!(egressd_row.contains("| 9000 | 3.00 |"), "{egressd_row}");
        assert!(egressd_row.contains("| 2.0 KiB | 0.06 |"), "{egressd_row}");
        assert!(egressd_row.ends_with("| 10 / 10 | 0 |"), "{egressd_row}");
        assert!(lines[2].contains("(p50 100 µs)"), "{}", lines[2]);
        let columns = |l: &str| l.matches('|').count();
        assert!(
            lines.iter().all(|l| columns(l) == columns(lines[0])),
            "{table}"
        );
    }

    #[test]
    fn cpu_table_lists_measured_proxies_with_ratios_against_squid() {
        let direct = target("direct", 4000, 100.0, 2000.0);
        let mut egressd = target("egressd", 3600, 150.0, 1900.0);
        egressd.tunnels = egressd
            .tunnels
            .map(|r| r.with_proxy_cpu(Some(Duration::from_millis(720))));
        egressd.deny = Some(rate(9000, 50.0).with_proxy_cpu(Some(Duration::from_millis(270))));
        egressd.bulk = egressd
            .bulk
            .map(|b| b.with_proxy_cpu(Some(Duration::from_millis(190))));
        let mut squid = target("squid", 2000, 400.0, 1000.0);
        squid.tunnels = squid
            .tunnels
            .map(|r| r.with_proxy_cpu(Some(Duration::from_millis(1000))));
        squid.deny = Some(rate(3000, 50.0).with_proxy_cpu(Some(Duration::from_millis(300))));
        squid.bulk = squid
            .bulk
            .map(|b| b.with_proxy_cpu(Some(Duration::from_millis(1000))));
        let report = Report {
            run: info(),
            targets: vec![direct, egressd, squid],
        };
        let table = report.cpu_table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "direct has no CPU row:\n{table}");
        assert!(lines[0].starts_with("| target | proxy CPU per tunnel | vs squid |"));
        // 720 ms over 3600 tunnels, 270 ms over 9000 denies, 190 ms over 1.9 GB.
        assert_eq!(
            lines[2], "| egressd | 200 µs | 0.40 | 30 µs | 0.30 | 100 ms | 0.10 |",
            "{table}"
        );
        assert!(
            lines[3].starts_with("| squid | 500 µs | 1.00 | 100 µs |"),
            "{table}"
        );

        let unmeasured = Report {
            run: info(),
            targets: vec![target("egressd", 10, 1.0, 1.0)],
        };
        assert_eq!(unmeasured.cpu_table(), "");
    }

    #[test]
    fn unavailable_targets_and_errors_are_noted() {
        let mut squid = TargetResult::new("squid");
        squid.unavailable = Some("squid is not installed".into());
        let mut egressd = target("egressd", 10, 1.0, 1.0);
        let mut errors = Errors::default();
        errors.record("connect refused");
        egressd.deny = Some(Rate::new(1, vec![5], errors, Duration::from_secs(1)));
        let report = Report {
            run: info(),
            targets: vec![egressd, squid],
        };
        let table = report.table();
        assert!(!table.contains("vs squid"), "{table}");
        assert!(!table.contains("vs direct"), "{table}");
        assert!(table.contains("squid (unavailable: squid is not installed) | —"));
        assert!(table.lines().nth(2).unwrap().ends_with("| 1 |"), "{table}");
        assert!(report
            .notes()
            .contains("egressd deny: 1 errors, e.g. connect refused"));
        let json = serde_json::to_string(&report).unwrap();
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(back, report);
    }

    #[test]
    fn units() {
        assert_eq!(micros(356.4), "356 µs");
        assert_eq!(micros(43_000.0), "43.0 ms");
        assert_eq!(kib(32_768.0), "32.0 KiB");
        assert_eq!(kib(-512.0), "-0.5 KiB");
    }
}
