//! One harness run: start the origin and every target, hold the idle set on each proxy in turn, then run the
//! timed scenarios in rounds that alternate between the targets, and collect a [`Report`].

use super::client::{self, Error, Via};
use super::dns;
use super::origin::{self, Origin};
use super::process_tree::{tree_cpu, tree_rss};
use super::report::{Report, RunInfo, TargetResult};
use super::stats::{Bulk, BulkCase, Errors, Idle, Rate};
use super::targets::{self, Launched};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// What the clients are pointed at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSpec {
    /// No proxy: the baseline.
    Direct,
    /// egressd, started by the harness from `Options::egressd_bin`.
    Egressd,
    /// Squid, started by the harness if it is installed.
    Squid,
    /// egressd with a Squid of its own as its parent proxy (`parents:`): what the hop costs.
    EgressdViaSquid,
    /// Stripe's Smokescreen, started from `Options::smokescreen_bin` if given.
    Smokescreen,
    /// ByteDance's g3proxy, started from `Options::g3proxy_bin` if given.
    G3proxy,
    /// A proxy that is already running.
    Addr(SocketAddr),
}

impl TargetSpec {
    /// The target's name in the report.
    pub fn name(&self) -> String {
        match self {
            TargetSpec::Direct => "direct".into(),
            TargetSpec::Egressd => "egressd".into(),
            TargetSpec::Squid => "squid".into(),
            TargetSpec::EgressdViaSquid => "egressd-via-squid".into(),
            TargetSpec::Smokescreen => "smokescreen".into(),
            TargetSpec::G3proxy => "g3proxy".into(),
            TargetSpec::Addr(a) => a.to_string(),
        }
    }
}

impl FromStr for TargetSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "direct" => Ok(TargetSpec::Direct),
            "egressd" => Ok(TargetSpec::Egressd),
            "squid" => Ok(TargetSpec::Squid),
            "egressd-via-squid" => Ok(TargetSpec::EgressdViaSquid),
            "smokescreen" => Ok(TargetSpec::Smokescreen),
            "g3proxy" => Ok(TargetSpec::G3proxy),
            other => other.parse().map(TargetSpec::Addr).map_err(|_| {
                format!(
                    "target {other:?}: expected direct, egressd, squid, egressd-via-squid, smokescreen, \
                     g3proxy or ip:port"
                )
            }),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub targets: Vec<TargetSpec>,
    pub clients: usize,
    pub duration: Duration,
    pub latency_duration: Duration,
    /// Bytes each bulk case moves per target (split over its streams and rounds).
    pub bulk_bytes: u64,
    /// The sending side's write size and the receiving side's read buffer in the bulk cases, in bytes.
    pub bulk_write: usize,
    pub bulk_read: usize,
    /// The bulk cases, run in this order.
    pub bulk_cases: Vec<BulkCase>,
    pub idle: usize,
    pub smoke: bool,
    pub egressd_bin: PathBuf,
    pub squid_bin: String,
    /// Smokescreen's binary (`--smokescreen-bin`, `EGRESSD_LOAD_SMOKESCREEN`), if given.
    pub smokescreen_bin: Option<PathBuf>,
    /// g3proxy's binary (`--g3proxy-bin`, `EGRESSD_LOAD_G3PROXY`), if given.
    pub g3proxy_bin: Option<PathBuf>,
    /// Processes whose RSS and CPU time are measured for the `Addr` targets, in their order.
    pub pids: Vec<u32>,
    /// Fixed origin ports (echo, and bulk on the next port) instead of ephemeral ones.
    pub origin_port: Option<u16>,
}

pub const ECHO_BYTES: usize = 64;
/// Idle tunnels opened at once while building up the idle set.
const IDLE_OPENERS: usize = 64;

/// A directory for the run's generated files, removed at the end.
struct WorkDir(PathBuf);

impl WorkDir {
    fn new() -> std::io::Result<WorkDir> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("egressd-load-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(WorkDir(dir))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Raise the descriptor limit as far as the process may; returns the limit now in force.
pub fn raise_nofile_limit() -> u64 {
    crate::fd_limit::raise()
}

/// A rate scenario's samples (nanoseconds per successful operation), errors and time, summed over rounds.
#[derive(Default)]
struct Tally {
    samples: Vec<u64>,
    errors: Errors,
    elapsed: Duration,
    /// The proxy's CPU time over every round, when every round could read it.
    cpu: Option<Duration>,
}

impl Tally {
    fn measuring_cpu() -> Tally {
        Tally {
            cpu: Some(Duration::ZERO),
            ..Tally::default()
        }
    }

    fn into_rate(self, clients: usize) -> Rate {
        Rate::new(clients, self.samples, self.errors, self.elapsed).with_proxy_cpu(self.cpu)
    }
}

/// Run `work` and return its output with the CPU time `pid`'s process tree used meanwhile: none without a
/// pid or when /proc cannot be read.
async fn with_cpu<T>(pid: Option<u32>, work: impl Future<Output = T>) -> (T, Option<Duration>) {
    let read = || pid.and_then(|p| tree_cpu(p).ok());
    let before = read();
    let out = work.await;
    let used = before.zip(read()).map(|(b, a)| a.saturating_sub(b));
    (out, used)
}

/// Add `more` to a CPU sum that stays unknown once one part is unknown.
fn add_cpu(sum: &mut Option<Duration>, more: Option<Duration>) {
    *sum = sum.zip(more).map(|(a, b)| a + b);
}

/// Run `op` from `clients` concurrent clients, each starting a new operation until `duration` has passed;
/// add what happened to `tally`.
async fn rate<F, Fut>(clients: usize, duration: Duration, op: F, tally: &mut Tally)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Duration, Error>> + Send,
{
    let op = Arc::new(op);
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut errors = Errors::default();
            while Instant::now() < deadline {
                match op().await {
                    Ok(took) => samples.push(took.as_nanos() as u64),
                    Err(e) => {
                        errors.record(e);
                        // A refusing target must not turn into a busy loop.
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
            (samples, errors)
        }));
    }
    for t in tasks {
        match t.await {
            Ok((s, e)) => {
                tally.samples.extend(s);
                tally.errors.merge(e);
            }
            Err(e) => tally.errors.record(format!("client task failed: {e}")),
        }
    }
    tally.elapsed += start.elapsed();
}

/// Open `n` echo tunnels (handshake + one echo each), hold them, and measure the proxy's RSS growth.
async fn idle(
    via: Via,
    origin: &Arc<Origin>,
    n: usize,
    pid: Option<u32>,
    settle: Duration,
) -> Idle {
    let payload = [0x61u8; ECHO_BYTES];
    let rss = || pid.and_then(|p| tree_rss(p).ok());
    let baseline = rss();
    let gate = Arc::new(Semaphore::new(IDLE_OPENERS));
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let (gate, origin) = (gate.clone(), origin.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await;
            client::echo_tunnel(via, &origin, &payload).await
        }));
    }
    let mut held = Vec::with_capacity(n);
    let mut errors = Errors::default();
    for t in tasks {
        match t.await {
            Ok(Ok(tls)) => held.push(tls),
            Ok(Err(e)) => errors.record(e),
            Err(e) => errors.record(format!("client task failed: {e}")),
        }
    }
    tokio::time::sleep(settle).await;
    let loaded = rss();
    // Every tunnel must still work after being idle.
    let mut alive = Vec::with_capacity(held.len());
    for mut tls in held {
        match client::echo(&mut tls, &payload).await {
            Ok(()) => alive.push(tls),
            Err(e) => errors.record(format!("after idling: {e}")),
        }
    }
    let opened = alive.len();
    drop(alive);
    Idle::new(n, opened, errors, baseline, loaded)
}

/// One operation of a timed scenario: how long it took, or why it failed.
type OpFuture = std::pin::Pin<Box<dyn Future<Output = Result<Duration, Error>> + Send>>;
/// What each client of a timed scenario runs in a loop.
type Op = Box<dyn Fn() -> OpFuture + Send + Sync>;

/// A target being measured.
struct Subject {
    via: Via,
    pid: Option<u32>,
    launched: Option<Launched>,
    result: TargetResult,
}

impl Subject {
    /// The status the proxy answers a refused CONNECT with (403 unless the harness started a proxy that says
    /// otherwise).
    fn deny_status(&self) -> u16 {
        self.launched
            .as_ref()
            .map_or(targets::FORBIDDEN, |l| l.deny_status)
    }

    fn tunnel_op(&self, origin: &Arc<Origin>, payload: &Arc<[u8]>) -> Op {
        let (via, origin, payload) = (self.via, origin.clone(), payload.clone());
        Box::new(move || {
            let (origin, payload) = (origin.clone(), payload.clone());
            Box::pin(async move { client::tunnel_once(via, &origin, &payload).await })
        })
    }
}

/// The order targets take in round `round`: forwards, then backwards, so no target always goes first.
fn round_order(round: usize, n: usize) -> Vec<usize> {
    if round.is_multiple_of(2) {
        (0..n).collect()
    } else {
        (0..n).rev().collect()
    }
}

/// Run one timed scenario on every target in interleaved rounds (see [`ROUNDS`]).
async fn rounds<F>(
    subjects: &[&Subject],
    rounds: usize,
    clients: usize,
    duration: Duration,
    op_for: F,
) -> Vec<Rate>
where
    F: Fn(&Subject) -> Op,
{
    let mut tallies: Vec<Tally> = subjects.iter().map(|_| Tally::measuring_cpu()).collect();
    let slice = duration / rounds as u32;
    for round in 0..rounds {
        for i in round_order(round, subjects.len()) {
            let op = op_for(subjects[i]);
            let tally = &mut tallies[i];
            let ((), cpu) = with_cpu(subjects[i].pid, rate(clients, slice, op, tally)).await;
            add_cpu(&mut tally.cpu, cpu);
        }
    }
    tallies.into_iter().map(|t| t.into_rate(clients)).collect()
}

/// Timed scenarios alternate between the targets in this many rounds, so that a machine whose speed drifts
/// during the run (shared hosts) shifts every target alike and the ratios stay fair.
const ROUNDS: usize = 5;

/// Every scenario against every available target: the idle set one target at a time, the timed scenarios
/// in interleaved rounds.
async fn scenarios(
    opts: &Options,
    origin: &Arc<Origin>,
    subjects: &mut [Subject],
    idle_n: usize,
    progress: &dyn Fn(&str),
) {
    let settle = if opts.smoke {
        Duration::from_millis(300)
    } else {
        Duration::from_secs(1)
    };
    let rounds_n = if opts.smoke { 1 } else { ROUNDS };
    let payload: Arc<[u8]> = Arc::from(vec![0x61u8; ECHO_BYTES]);

    // Warm-up, so the idle baseline and the rates do not include first-use costs.
    for s in subjects.iter() {
        let mut discard = Tally::default();
        rate(
            4,
            Duration::from_millis(300),
            s.tunnel_op(origin, &payload),
            &mut discard,
        )
        .await;
    }
    tokio::time::sleep(settle).await;

    for s in subjects.iter_mut() {
        if let Via::Proxy(_) = s.via {
            let name = s.result.name.clone();
            progress(&format!("{name}: {idle_n} idle tunnels"));
            let r = idle(s.via, origin, idle_n, s.pid, settle).await;
            progress(&format!(
                "{name}:   {} / {} held, {} errors, RSS per tunnel {}",
                r.opened,
                r.requested,
                r.errors.count,
                r.rss_per_tunnel_bytes
                    .map_or("—".into(), super::report::kib)
            ));
            s.result.idle = Some(r);
            tokio::time::sleep(settle).await;
        }
    }

    let all: Vec<&Subject> = subjects.iter().collect();
    let tunnel_op = |s: &Subject| s.tunnel_op(origin, &payload);
    progress(&format!(
        "tunnel rate, {} clients, {rounds_n} rounds across the targets",
        opts.clients
    ));
    let tunnels = rounds(&all, rounds_n, opts.clients, opts.duration, tunnel_op).await;
    progress("single-client latency");
    let single = rounds(&all, rounds_n, 1, opts.latency_duration, tunnel_op).await;

    let bulks = bulk_rounds(opts, origin, &all, rounds_n, progress).await;

    let proxies: Vec<usize> = (0..all.len())
        .filter(|&i| matches!(all[i].via, Via::Proxy(_)))
        .collect();
    progress(&format!(
        "deny rate, {} clients, {rounds_n} rounds across the proxies",
        opts.clients
    ));
    let deny_subjects: Vec<&Subject> = proxies.iter().map(|&i| all[i]).collect();
    let deny = rounds(&deny_subjects, rounds_n, opts.clients, opts.duration, |s| {
        let Via::Proxy(proxy) = s.via else {
            unreachable!("only proxies are asked to deny")
        };
        let expect = s.deny_status();
        Box::new(move || Box::pin(client::deny_once(proxy, expect)))
    })
    .await;

    drop(all);
    let mut deny = deny.into_iter();
    for ((s, (t, l)), b) in subjects
        .iter_mut()
        .zip(tunnels.into_iter().zip(single))
        .zip(bulks)
    {
        let name = &s.result.name;
        let rates: Vec<String> = b
            .iter()
            .map(|b| format!("{} {:.0} MB/s", b.case, b.mb_per_sec))
            .collect();
        progress(&format!(
            "{name}: {:.0} tunnels/s ({} errors), p50 at one client {}; {}",
            t.per_sec,
            t.errors.count,
            l.latency
                .as_ref()
                .map_or("—".into(), |l| super::report::micros(l.p50_us)),
            rates.join(", ")
        ));
        s.result.tunnels = Some(t);
        s.result.single = Some(l);
        s.result.bulk = b;
        if let Via::Proxy(_) = s.via {
            let d = deny.next().expect("one deny rate per proxy");
            progress(&format!(
                "{name}: {:.0} denies/s, {} errors",
                d.per_sec, d.errors.count
            ));
            s.result.deny = Some(d);
        }
    }
}

/// Every bulk case on every target, in interleaved rounds like the timed scenarios: per target, one
/// [`Bulk`] per case, in the order of `opts.bulk_cases`.
async fn bulk_rounds(
    opts: &Options,
    origin: &Arc<Origin>,
    all: &[&Subject],
    rounds_n: usize,
    progress: &dyn Fn(&str),
) -> Vec<Vec<Bulk>> {
    let mut out: Vec<Vec<Bulk>> = all.iter().map(|_| Vec::new()).collect();
    let slice = opts.bulk_bytes.div_ceil(rounds_n as u64);
    for &case in &opts.bulk_cases {
        progress(&format!(
            "bulk, {case}: {} MiB, {} KiB writes, {} KiB reads",
            opts.bulk_bytes >> 20,
            opts.bulk_write >> 10,
            opts.bulk_read >> 10
        ));
        let shape = client::BulkShape {
            case,
            write: opts.bulk_write,
            read: opts.bulk_read,
        };
        let mut sums: Vec<(u64, Duration, Errors, Option<Duration>)> = all
            .iter()
            .map(|_| (0, Duration::ZERO, Errors::default(), Some(Duration::ZERO)))
            .collect();
        for round in 0..rounds_n {
            for i in round_order(round, all.len()) {
                let t0 = Instant::now();
                let (moved, cpu) =
                    with_cpu(all[i].pid, client::bulk(all[i].via, origin, shape, slice)).await;
                let sum = &mut sums[i];
                add_cpu(&mut sum.3, cpu);
                match moved {
                    Ok((bytes, took)) => {
                        sum.0 += bytes;
                        sum.1 += took;
                    }
                    Err(e) => {
                        sum.1 += t0.elapsed();
                        sum.2.record(e);
                    }
                }
            }
        }
        for (target, (bytes, took, errors, cpu)) in out.iter_mut().zip(sums) {
            target.push(Bulk::new(case, bytes, took, errors).with_proxy_cpu(cpu));
        }
    }
    out
}

/// The pid given for each target, in target order: `--pid` lists one per `ip:port` target, in their order, or
/// none at all.
pub fn addr_pids(targets: &[TargetSpec], pids: &[u32]) -> Result<Vec<Option<u32>>, String> {
    let addrs = targets
        .iter()
        .filter(|t| matches!(t, TargetSpec::Addr(_)))
        .count();
    if !pids.is_empty() && pids.len() != addrs {
        return Err(format!(
            "--pid names {} processes for {addrs} ip:port targets; give one pid per ip:port target, in the \
             same order",
            pids.len()
        ));
    }
    let mut given = pids.iter().copied();
    Ok(targets
        .iter()
        .map(|t| match t {
            TargetSpec::Addr(_) => given.next(),
            _ => None,
        })
        .collect())
}

/// Run every scenario against every target (see [`scenarios`]). `progress` receives one line per step.
pub async fn run(opts: &Options, progress: &dyn Fn(&str)) -> Result<Report, String> {
    let nofile = raise_nofile_limit();
    // Each idle tunnel costs two descriptors in the harness (client and origin ends) and two in the proxy.
    let max_idle = (nofile.saturating_sub(512) / 2) as usize;
    let idle_n = opts.idle.min(max_idle);
    let work = WorkDir::new().map_err(|e| format!("temporary directory: {e}"))?;
    let origin = Arc::new(
        origin::start(origin::ORIGIN_NAME, opts.origin_port)
            .await
            .map_err(|e| format!("cannot start the origin: {e}"))?,
    );
    progress(&format!(
        "origin {} on {} (echo) and {} (bulk)",
        origin.name, origin.echo, origin.bulk
    ));
    let mut report = Report {
        run: RunInfo {
            smoke: opts.smoke,
            clients: opts.clients,
            duration_secs: opts.duration.as_secs_f64(),
            latency_duration_secs: opts.latency_duration.as_secs_f64(),
            bulk_bytes: opts.bulk_bytes,
            bulk_write: opts.bulk_write,
            bulk_read: opts.bulk_read,
            echo_bytes: ECHO_BYTES,
            idle_requested: opts.idle,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        },
        targets: Vec::new(),
    };
    // The peers that resolve names through a DNS server ask this one, which knows only the origin's name.
    let dns = if opts
        .targets
        .iter()
        .any(|t| matches!(t, TargetSpec::Smokescreen | TargetSpec::G3proxy))
    {
        let zone = dns::Zone::new(&origin.name, std::net::Ipv4Addr::LOCALHOST)?;
        let stub = dns::start(zone)
            .await
            .map_err(|e| format!("cannot start the DNS responder: {e}"));
        if let Ok(s) = &stub {
            progress(&format!("DNS responder on {} (udp)", s.addr));
        }
        stub
    } else {
        Err("no DNS responder".to_string())
    };
    // Every target is started before any is measured; the report keeps the order they were given in.
    let mut subjects = Vec::new();
    let mut unavailable = Vec::new();
    let pids = addr_pids(&opts.targets, &opts.pids)?;
    for (index, spec) in opts.targets.iter().enumerate() {
        let name = spec.name();
        let mut result = TargetResult::new(&name);
        if idle_n < opts.idle && !matches!(spec, TargetSpec::Direct) {
            result.notes.push(format!(
                "{idle_n} idle tunnels instead of {}: the descriptor limit is {nofile} and each tunnel \
                 needs two in the harness and two in the proxy",
                opts.idle
            ));
        }
        let dir = work.0.join(&name);
        let _ = std::fs::create_dir_all(&dir);
        let launched: Result<Option<Launched>, String> = match spec {
            TargetSpec::Direct | TargetSpec::Addr(_) => Ok(None),
            TargetSpec::Egressd => targets::start_egressd(
                &opts.egressd_bin,
                &dir,
                &origin,
                idle_n + 4 * opts.clients + 100,
                None,
            )
            .await
            .map(Some),
            // The parent is measured with egressd only in the rates; CPU and memory are egressd's (`--pid`
            // reads its process tree, which the parent is not part of).
            TargetSpec::EgressdViaSquid => {
                match targets::start_squid(&opts.squid_bin, &dir, &origin, nofile).await {
                    Ok(squid) => targets::start_egressd(
                        &opts.egressd_bin,
                        &dir,
                        &origin,
                        idle_n + 4 * opts.clients + 100,
                        Some(squid),
                    )
                    .await
                    .map(Some),
                    Err(e) => Err(format!("its parent: {e}")),
                }
            }
            TargetSpec::Squid => targets::start_squid(&opts.squid_bin, &dir, &origin, nofile)
                .await
                .map(Some),
            TargetSpec::Smokescreen | TargetSpec::G3proxy => match &dns {
                Err(e) => Err(e.clone()),
                Ok(stub) if *spec == TargetSpec::Smokescreen => targets::start_smokescreen(
                    opts.smokescreen_bin.as_deref(),
                    &dir,
                    &origin,
                    stub.addr,
                )
                .await
                .map(Some),
                Ok(stub) => {
                    targets::start_g3proxy(opts.g3proxy_bin.as_deref(), &dir, &origin, stub.addr)
                        .await
                        .map(Some)
                }
            },
        };
        let launched = match launched {
            Ok(l) => l,
            Err(e) => {
                progress(&format!("{name}: unavailable: {e}"));
                result.unavailable = Some(e);
                unavailable.push((index, result));
                continue;
            }
        };
        let (via, pid) = match (spec, &launched) {
            (TargetSpec::Direct, _) => (Via::Direct, None),
            (TargetSpec::Addr(a), _) => (Via::Proxy(*a), pids[index]),
            (_, Some(l)) => (Via::Proxy(l.addr), Some(l.pid)),
            (_, None) => unreachable!("every other target is launched"),
        };
        if let Some(l) = &launched {
            result.proxy_addr = Some(l.addr.to_string());
            result.pid = Some(l.pid);
            result.version = l.version.clone();
        } else if let Via::Proxy(a) = via {
            result.proxy_addr = Some(a.to_string());
            result.pid = pid;
        }
        progress(&format!("{name}: ready"));
        subjects.push((
            index,
            Subject {
                via,
                pid,
                launched,
                result,
            },
        ));
    }
    let (order, mut measured): (Vec<usize>, Vec<Subject>) = subjects.into_iter().unzip();
    scenarios(opts, &origin, &mut measured, idle_n, progress).await;
    let mut results: Vec<(usize, TargetResult)> = order
        .into_iter()
        .zip(measured)
        .map(|(i, mut s)| {
            if let Some(l) = s.launched.as_mut() {
                l.stop();
            }
            (i, s.result)
        })
        .chain(unavailable)
        .collect();
    results.sort_by_key(|(i, _)| *i);
    report.targets = results.into_iter().map(|(_, r)| r).collect();
    Ok(report)
}

#[cfg(test)]
#[path = "run_tests.rs"]
mod tests;
