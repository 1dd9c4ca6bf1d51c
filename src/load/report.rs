//! The results of one harness run, as JSON (every raw number) and as a Markdown table with ratios against
//! `direct` and the best peer (Squid, Smokescreen, g3proxy, ...) from the same run.

use super::stats::{Bulk, BulkCase, Idle, Rate};
use serde::{Deserialize, Serialize};

/// Settings the run used, recorded with the results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub smoke: bool,
    pub clients: usize,
    pub duration_secs: f64,
    pub latency_duration_secs: f64,
    pub bulk_bytes: u64,
    #[serde(default)]
    pub bulk_write: usize,
    #[serde(default)]
    pub bulk_read: usize,
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
    /// One result per bulk case, in the order they ran.
    #[serde(default)]
    pub bulk: Vec<Bulk>,
    pub deny: Option<Rate>,
}

impl TargetResult {
    pub fn new(name: impl Into<String>) -> Self {
        TargetResult {
            name: name.into(),
            ..Default::default()
        }
    }

    /// The result of one bulk case, if it ran.
    pub fn bulk_case(&self, case: BulkCase) -> Option<&Bulk> {
        self.bulk.iter().find(|b| b.case == case)
    }

    /// Errors across every scenario.
    pub fn error_count(&self) -> u64 {
        let rates = [&self.tunnels, &self.single, &self.deny];
        rates
            .iter()
            .filter_map(|r| r.as_ref())
            .map(|r| r.errors.count)
            .sum::<u64>()
            + self.bulk.iter().map(|b| b.errors.count).sum::<u64>()
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

/// How a column's values compare: for rates more is better, for costs less is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Better {
    More,
    Less,
}

/// Reads one measured value of a target.
type Value<'a> = Box<dyn Fn(&TargetResult) -> Option<f64> + 'a>;

/// A table column.
enum Column<'a> {
    /// A measured value, followed by its ratio against `direct` (when `vs_direct` and `direct` ran) and
    /// against the best peer (when a peer ran).
    Measure {
        head: String,
        value: Value<'a>,
        show: fn(f64) -> String,
        better: Better,
        vs_direct: bool,
    },
    /// Text with no ratio.
    Text {
        head: &'static str,
        text: Box<dyn Fn(&TargetResult) -> String + 'a>,
    },
}

impl<'a> Column<'a> {
    fn measure(
        head: impl Into<String>,
        value: impl Fn(&TargetResult) -> Option<f64> + 'a,
        show: fn(f64) -> String,
        better: Better,
        vs_direct: bool,
    ) -> Column<'a> {
        Column::Measure {
            head: head.into(),
            value: Box::new(value),
            show,
            better,
            vs_direct,
        }
    }

    fn text(head: &'static str, text: impl Fn(&TargetResult) -> String + 'a) -> Column<'a> {
        Column::Text {
            head,
            text: Box::new(text),
        }
    }
}

impl Report {
    fn find(&self, name: &str) -> Option<&TargetResult> {
        self.targets
            .iter()
            .find(|t| t.name == name && t.unavailable.is_none())
    }

    /// The peers: every measured target that is neither `direct` nor egressd itself (squid, smokescreen,
    /// g3proxy, a proxy given as ip:port).
    fn peers(&self) -> impl Iterator<Item = &TargetResult> {
        self.targets
            .iter()
            .filter(|t| t.unavailable.is_none())
            .filter(|t| t.name != "direct" && !t.name.starts_with("egressd"))
    }

    /// A Markdown table with one row per target in `rows` and the given columns.
    fn render(&self, rows: &[&TargetResult], columns: &[Column<'_>]) -> String {
        let direct = self.find("direct");
        let has_peers = self.peers().next().is_some();
        let mut head = vec!["target".to_string()];
        for c in columns {
            match c {
                Column::Measure {
                    head: h, vs_direct, ..
                } => {
                    head.push(h.clone());
                    if *vs_direct && direct.is_some() {
                        head.push("vs direct".into());
                    }
                    if has_peers {
                        head.push("vs best peer".into());
                    }
                }
                Column::Text { head: h, .. } => head.push(h.to_string()),
            }
        }
        let mut out = format!("| {} |\n|{}\n", head.join(" | "), "---|".repeat(head.len()));
        for t in rows {
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
            for c in columns {
                match c {
                    Column::Measure {
                        value,
                        show,
                        better,
                        vs_direct,
                        ..
                    } => {
                        let v = value(t);
                        row.push(opt(v.map(show)));
                        if let Some(d) = direct.filter(|_| *vs_direct) {
                            row.push(ratio(v, value(d)));
                        }
                        if has_peers {
                            let peers = self.peers().filter_map(value);
                            let best = match better {
                                Better::More => peers.reduce(f64::max),
                                Better::Less => peers.reduce(f64::min),
                            };
                            row.push(ratio(v, best));
                        }
                    }
                    Column::Text { text, .. } => row.push(text(t)),
                }
            }
            out.push_str(&format!("| {} |\n", row.join(" | ")));
        }
        out
    }

    fn all(&self) -> Vec<&TargetResult> {
        self.targets.iter().collect()
    }

    /// The main Markdown table, one row per target: tunnel rate, latency, refusals and idle memory, with
    /// ratios against `direct` and the best peer (the highest rate, the lowest cost) when they ran.
    pub fn table(&self) -> String {
        let p50 = |t: &TargetResult| {
            t.single
                .as_ref()
                .and_then(|r| r.latency.as_ref())
                .map(|l| l.p50_us)
        };
        let direct_p50 = self.find("direct").and_then(p50);
        let columns = [
            Column::measure(
                format!("tunnels/s ({} clients)", self.run.clients),
                |t| t.tunnels.as_ref().map(|r| r.per_sec),
                rate,
                Better::More,
                true,
            ),
            Column::text("p50 / p99", |t| {
                opt(t
                    .tunnels
                    .as_ref()
                    .and_then(|r| r.latency.as_ref())
                    .map(|l| format!("{} / {}", micros(l.p50_us), micros(l.p99_us))))
            }),
            Column::text("+p50, 1 client", move |t| match (p50(t), direct_p50) {
                (Some(v), Some(d)) if t.name != "direct" => {
                    let delta = v - d;
                    let sign = if delta >= 0.0 { "+" } else { "−" };
                    format!("{sign}{}", micros(delta.abs()))
                }
                (Some(v), _) => format!("(p50 {})", micros(v)),
                _ => "—".into(),
            }),
            Column::measure(
                format!("denies/s ({} clients)", self.run.clients),
                |t| t.deny.as_ref().map(|r| r.per_sec),
                rate,
                Better::More,
                false,
            ),
            Column::measure(
                "RSS per idle tunnel",
                |t| t.idle.as_ref().and_then(|i| i.rss_per_tunnel_bytes),
                kib,
                Better::Less,
                false,
            ),
            Column::text("idle tunnels held", |t| {
                opt(t
                    .idle
                    .as_ref()
                    .map(|i| format!("{} / {}", i.opened, i.requested)))
            }),
            Column::text("errors", |t| t.error_count().to_string()),
        ];
        self.render(&self.all(), &columns)
    }

    /// The bulk cases that ran, in their order.
    fn bulk_cases(&self) -> Vec<BulkCase> {
        let mut cases = Vec::new();
        for b in self.targets.iter().flat_map(|t| &t.bulk) {
            if !cases.contains(&b.case) {
                cases.push(b.case);
            }
        }
        cases
    }

    /// A Markdown table of bulk throughput (MB/s of TLS payload), one column per bulk case, with ratios
    /// against `direct` and the best peer. Empty when no bulk case ran.
    pub fn bulk_table(&self) -> String {
        let cases = self.bulk_cases();
        if cases.is_empty() {
            return String::new();
        }
        let columns: Vec<Column<'_>> = cases
            .into_iter()
            .map(|case| {
                Column::measure(
                    format!("MB/s {case}"),
                    move |t| t.bulk_case(case).map(|b| b.mb_per_sec),
                    rate,
                    Better::More,
                    true,
                )
            })
            .collect();
        self.render(&self.all(), &columns)
    }

    /// A Markdown table of the CPU time each proxy (with its child processes) used per tunnel, per refusal and
    /// per gigabyte of each bulk case, with ratios against the best peer (the lowest). Empty when no proxy's
    /// CPU time could be read. CPU per operation depends far less on how busy the host was than the rates do.
    pub fn cpu_table(&self) -> String {
        let per_tunnel = |t: &TargetResult| t.tunnels.as_ref().and_then(|r| r.proxy_cpu_us_per_op);
        let measured: Vec<&TargetResult> = self
            .targets
            .iter()
            .filter(|t| t.unavailable.is_none() && per_tunnel(t).is_some())
            .collect();
        if measured.is_empty() {
            return String::new();
        }
        let mut columns = vec![
            Column::measure(
                "proxy CPU per tunnel",
                per_tunnel,
                micros,
                Better::Less,
                false,
            ),
            Column::measure(
                "proxy CPU per deny",
                |t| t.deny.as_ref().and_then(|r| r.proxy_cpu_us_per_op),
                micros,
                Better::Less,
                false,
            ),
        ];
        for case in self.bulk_cases() {
            columns.push(Column::measure(
                format!("CPU per GB {case}"),
                move |t| t.bulk_case(case).and_then(|b| b.proxy_cpu_ms_per_gb),
                |ms| format!("{ms:.0} ms"),
                Better::Less,
                false,
            ));
        }
        self.render(&measured, &columns)
    }

    /// Notes under the table: unavailable targets, per-target notes and the first error messages.
    pub fn notes(&self) -> String {
        let mut out = String::new();
        for t in &self.targets {
            for n in &t.notes {
                out.push_str(&format!("- {}: {n}\n", t.name));
            }
            let bulk_names: Vec<String> = t
                .bulk
                .iter()
                .map(|b| format!("bulk ({})", b.case))
                .collect();
            let mut scenarios = vec![
                ("tunnels", t.tunnels.as_ref().map(|r| &r.errors)),
                ("single", t.single.as_ref().map(|r| &r.errors)),
                ("deny", t.deny.as_ref().map(|r| &r.errors)),
                ("idle", t.idle.as_ref().map(|i| &i.errors)),
            ];
            scenarios.extend(
                bulk_names
                    .iter()
                    .map(String::as_str)
                    .zip(t.bulk.iter().map(|b| Some(&b.errors))),
            );
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
    use crate::load::stats::{Direction, Errors, Latency};
    use std::time::Duration;

    const DOWN: BulkCase = BulkCase {
        direction: Direction::Download,
        streams: 1,
    };
    const UP8: BulkCase = BulkCase {
        direction: Direction::Upload,
        streams: 8,
    };

    fn info() -> RunInfo {
        RunInfo {
            smoke: true,
            clients: 32,
            duration_secs: 1.0,
            latency_duration_secs: 1.0,
            bulk_bytes: 1 << 20,
            bulk_write: 256 << 10,
            bulk_read: 256 << 10,
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

    fn bulk(case: BulkCase, mb: f64) -> Bulk {
        Bulk::new(
            case,
            (mb * 1e6) as u64,
            Duration::from_secs(1),
            Errors::default(),
        )
    }

    /// A target with a tunnel rate, a one-client p50 and the two bulk cases at `mb` and `mb / 2` MB/s.
    fn target(name: &str, tunnels: u64, p50: f64, mb: f64) -> TargetResult {
        TargetResult {
            name: name.into(),
            tunnels: Some(rate(tunnels, 1000.0)),
            single: Some(rate(100, p50)),
            bulk: vec![bulk(DOWN, mb), bulk(UP8, mb / 2.0)],
            ..TargetResult::new(name)
        }
    }

    fn peers_report() -> Report {
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
        // The best peer differs per column: g3proxy opens more tunnels and refuses faster, Squid holds idle
        // tunnels in less memory.
        let mut g3 = target("g3proxy", 2400, 300.0, 900.0);
        g3.deny = Some(rate(4500, 50.0));
        g3.idle = Some(Idle::new(10, 10, Errors::default(), Some(0), Some(491_520)));
        Report {
            run: info(),
            targets: vec![direct, egressd, squid, g3],
        }
    }

    #[test]
    fn table_has_ratios_against_direct_and_the_best_peer() {
        let report = peers_report();
        let table = report.table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 6, "{table}");
        assert!(
            lines[0].starts_with("| target | tunnels/s (32 clients) | vs direct | vs best peer |"),
            "{table}"
        );
        let egressd_row = lines[3];
        // 3600 against direct's 4000 and the best peer's 2400 (g3proxy, not Squid).
        assert!(
            egressd_row.starts_with("| egressd | 3600 | 0.90 | 1.50 |"),
            "{egressd_row}"
        );
        assert!(egressd_row.contains("| +50 µs |"), "{egressd_row}");
        // Refusals against g3proxy's 4500; memory against Squid's 32 KiB (the lowest).
        assert!(egressd_row.contains("| 9000 | 2.00 |"), "{egressd_row}");
        assert!(egressd_row.contains("| 2.0 KiB | 0.06 |"), "{egressd_row}");
        assert!(egressd_row.ends_with("| 10 / 10 | 0 |"), "{egressd_row}");
        assert!(
            lines[4].starts_with("| squid | 2000 | 0.50 | 0.83 |"),
            "{table}"
        );
        assert!(lines[2].contains("(p50 100 µs)"), "{}", lines[2]);
        let columns = |l: &str| l.matches('|').count();
        assert!(
            lines.iter().all(|l| columns(l) == columns(lines[0])),
            "{table}"
        );
    }

    #[test]
    fn bulk_table_has_one_column_per_case() {
        let report = peers_report();
        let table = report.bulk_table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "| target | MB/s download, 1 stream | vs direct | vs best peer | MB/s upload, 8 streams | \
             vs direct | vs best peer |"
        );
        // Download 1900 against direct's 2000 and Squid's 1000; upload 950 against 1000 and 500.
        assert_eq!(
            lines[3],
            "| egressd | 1900 | 0.95 | 1.90 | 950 | 0.95 | 1.90 |"
        );
        let empty = Report {
            run: info(),
            targets: vec![TargetResult::new("egressd")],
        };
        assert_eq!(empty.bulk_table(), "");
    }

    #[test]
    fn without_peers_there_are_no_peer_ratios() {
        let report = Report {
            run: info(),
            targets: vec![
                target("direct", 4000, 100.0, 2000.0),
                target("egressd", 3600, 150.0, 1900.0),
            ],
        };
        assert!(!report.table().contains("best peer"), "{}", report.table());
        assert!(report.table().contains("| egressd | 3600 | 0.90 |"));
    }

    #[test]
    fn cpu_table_lists_measured_proxies_with_ratios_against_the_cheapest_peer() {
        let mut report = peers_report();
        let cpu = |ms: u64| Some(Duration::from_millis(ms));
        for (t, tunnel, deny, down, up) in [
            (1, 720, 270, 190, 95),
            (2, 1000, 300, 1000, 500),
            (3, 960, 225, 1800, 900),
        ] {
            let t = &mut report.targets[t];
            t.tunnels = t.tunnels.take().map(|r| r.with_proxy_cpu(cpu(tunnel)));
            t.deny = t.deny.take().map(|r| r.with_proxy_cpu(cpu(deny)));
            t.bulk[0] = t.bulk[0].clone().with_proxy_cpu(cpu(down));
            t.bulk[1] = t.bulk[1].clone().with_proxy_cpu(cpu(up));
        }
        let table = report.cpu_table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 5, "direct has no CPU row:\n{table}");
        assert!(
            lines[0].starts_with(
                "| target | proxy CPU per tunnel | vs best peer | proxy CPU per deny |"
            ),
            "{table}"
        );
        // egressd: 720 ms over 3600 tunnels against g3proxy's 400 µs (960 ms / 2400); 270 ms over 9000
        // refusals against g3proxy's 50 µs; 190 ms over 1.9 GB against Squid's 1000 ms per GB; 95 ms over
        // 0.95 GB against Squid's 1000 ms.
        assert_eq!(
            lines[2], "| egressd | 200 µs | 0.50 | 30 µs | 0.60 | 100 ms | 0.10 | 100 ms | 0.10 |",
            "{table}"
        );
        assert!(
            lines[3].starts_with("| squid | 500 µs | 1.25 | 100 µs |"),
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
        assert!(!table.contains("vs best peer"), "{table}");
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
