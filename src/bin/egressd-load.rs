//! egressd-load: drives a proxy (or no proxy) with TLS clients against its own loopback origin and prints
//! one table for all targets, plus every raw number as JSON. See README "Performance".

use clap::Parser;
use egressd::load::origin::MAX_CHUNK;
use egressd::load::run::{run, Options, TargetSpec};
use egressd::load::stats::{BulkCase, Direction};
use egressd::load::targets::Peer;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "egressd-load",
    about = "Load harness: tunnel rate, latency, bulk throughput (download and upload), deny rate and idle-tunnel memory of a proxy"
)]
struct Cli {
    /// Targets, run in sequence: direct, egressd, squid, egressd-via-squid, smokescreen, g3proxy, or the ip:port
    /// of a running proxy.
    #[arg(
        long = "targets",
        visible_alias = "target",
        value_delimiter = ',',
        default_value = "direct,egressd"
    )]
    targets: Vec<TargetSpec>,
    /// Concurrent clients for the tunnel and deny rates.
    #[arg(long)]
    clients: Option<usize>,
    /// Duration of the tunnel and deny rate scenarios [default: 10s; 1.5s with --smoke].
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Duration of the single-client latency scenario [default: 5s; 1s with --smoke].
    #[arg(long, value_parser = humantime::parse_duration)]
    latency_duration: Option<Duration>,
    /// MiB each bulk case moves per target, split over its streams [default: 1024; 32 with --smoke].
    #[arg(long)]
    bulk_mib: Option<u64>,
    /// KiB per write of the sending side in the bulk cases (the origin when downloading, the client when
    /// uploading).
    #[arg(long, default_value_t = 256)]
    bulk_write_kib: usize,
    /// KiB of the receiving side's read buffer in the bulk cases.
    #[arg(long, default_value_t = 256)]
    bulk_read_kib: usize,
    /// Bulk directions: download (origin to client), upload (client to origin).
    #[arg(long, value_delimiter = ',', default_value = "download,upload")]
    bulk_directions: Vec<Direction>,
    /// Concurrent tunnels in the bulk cases; every direction runs with each count.
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    bulk_streams: Vec<usize>,
    /// Idle tunnels held at once [default: 10000; 50 with --smoke].
    #[arg(long)]
    idle: Option<usize>,
    /// Seconds-long run of every scenario (what the test suite runs).
    #[arg(long)]
    smoke: bool,
    /// The egressd binary for the `egressd` target [default: egressd next to this binary].
    #[arg(long)]
    egressd_bin: Option<PathBuf>,
    /// The squid binary for the `squid` target.
    #[arg(long, default_value = "squid")]
    squid_bin: String,
    /// The Smokescreen binary for the `smokescreen` target [default: $EGRESSD_LOAD_SMOKESCREEN].
    #[arg(long, value_name = "PATH")]
    smokescreen_bin: Option<PathBuf>,
    /// The g3proxy binary for the `g3proxy` target [default: $EGRESSD_LOAD_G3PROXY].
    #[arg(long, value_name = "PATH")]
    g3proxy_bin: Option<PathBuf>,
    /// Pids of the proxies given as ip:port, in the same order, for their RSS per idle tunnel and their CPU
    /// time.
    #[arg(long, value_delimiter = ',')]
    pid: Vec<u32>,
    /// Fixed origin ports: echo on PORT, bulk on PORT+1 (for a proxy given as ip:port, whose allowlist must
    /// name them) [default: two ephemeral ports].
    #[arg(long, value_name = "PORT")]
    origin_port: Option<u16>,
    /// Also write every raw number to this file as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// The largest write or read size, in KiB, the origin accepts.
const MAX_CHUNK_KIB: usize = (MAX_CHUNK >> 10) as usize;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let smoke = cli.smoke;
    let egressd_bin = cli.egressd_bin.unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| Some(p.parent()?.join("egressd")))
            .unwrap_or_else(|| PathBuf::from("target/release/egressd"))
    });
    let opts = Options {
        targets: cli.targets,
        clients: cli.clients.unwrap_or(32).max(1),
        duration: cli.duration.unwrap_or(if smoke {
            Duration::from_millis(1500)
        } else {
            Duration::from_secs(10)
        }),
        latency_duration: cli.latency_duration.unwrap_or(if smoke {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(5)
        }),
        bulk_bytes: cli.bulk_mib.unwrap_or(if smoke { 32 } else { 1024 }) << 20,
        bulk_write: cli.bulk_write_kib.clamp(1, MAX_CHUNK_KIB) << 10,
        bulk_read: cli.bulk_read_kib.clamp(1, MAX_CHUNK_KIB) << 10,
        bulk_cases: cli
            .bulk_streams
            .iter()
            .flat_map(|&streams| {
                cli.bulk_directions.iter().map(move |&direction| BulkCase {
                    direction,
                    streams: streams.max(1),
                })
            })
            .collect(),
        idle: cli.idle.unwrap_or(if smoke { 50 } else { 10_000 }),
        smoke,
        egressd_bin,
        squid_bin: cli.squid_bin,
        smokescreen_bin: Peer::Smokescreen.bin(
            cli.smokescreen_bin,
            std::env::var_os(Peer::Smokescreen.env()),
        ),
        g3proxy_bin: Peer::G3proxy.bin(cli.g3proxy_bin, std::env::var_os(Peer::G3proxy.env())),
        pids: cli.pid,
        origin_port: cli.origin_port,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let report = match runtime.block_on(run(&opts, &|line| eprintln!("{line}"))) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("egressd-load: {e}");
            return ExitCode::from(1);
        }
    };
    println!("{}", report.table());
    let bulk = report.bulk_table();
    if !bulk.is_empty() {
        println!("{bulk}");
    }
    let cpu = report.cpu_table();
    if !cpu.is_empty() {
        println!("{cpu}");
    }
    let notes = report.notes();
    if !notes.is_empty() {
        println!("{notes}");
    }
    if let Some(path) = &cli.json {
        let json = serde_json::to_string_pretty(&report).expect("report serializes");
        if let Err(e) = std::fs::write(path, json + "\n") {
            eprintln!("cannot write {}: {e}", path.display());
            return ExitCode::from(1);
        }
    }
    // Runtime tasks of idle origin connections end with the runtime.
    runtime.shutdown_timeout(Duration::from_secs(1));
    ExitCode::SUCCESS
}
