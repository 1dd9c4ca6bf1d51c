//! `egressd probe`: reach every endpoint of a vendor profile as an agent would, and say what it sees.

use clap::ValueEnum;
use egressd::probe::{self, Request};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// The embedded vendor profile whose endpoints are probed (`egressd vendors` lists them).
    #[arg(long, value_name = "NAME")]
    pub vendor: String,
    /// Profile parameter NAME=VALUE (lists comma-separated); repeatable.
    #[arg(long = "param", value_name = "KEY=VALUE")]
    pub params: Vec<String>,
    /// The configuration whose DNS settings, destination checks and policy apply (default: the embedded one).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Probe through this proxy (http://[USER:PASSWORD@]HOST:PORT): CONNECT, then TLS inside the tunnel.
    #[arg(long, value_name = "PROXY_URL")]
    pub via: Option<String>,
    /// Verify server certificates against this PEM bundle instead of the built-in Mozilla roots.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Connect to HOST2:PORT2 instead of HOST1:PORT1 (curl's --connect-to; empty parts match any or keep the
    /// original); the TLS name and the policy stay HOST1's. Repeatable; the first match wins.
    #[arg(long = "connect-to", value_name = "HOST1:PORT1:HOST2:PORT2")]
    pub connect_to: Vec<String>,
    /// Time allowed for each step: DNS, connect, the proxy's answer, the TLS handshake.
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Evaluate the policy as a member of this client group, or as NAMESPACE/SERVICEACCOUNT (as `check`).
    #[arg(long, value_name = "NAME", conflicts_with = "from")]
    pub client: Option<String>,
    /// Evaluate the policy as a client connecting from this address (as `check`).
    #[arg(long, value_name = "ADDR")]
    pub from: Option<std::net::IpAddr>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: ReportFormat,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ReportFormat {
    Table,
    Json,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration such as 5s or 1m: {e}"))
}

pub fn run(args: Args, runtime: &tokio::runtime::Runtime) -> ExitCode {
    let prepared = probe::prepare(&Request {
        vendor: &args.vendor,
        params: &args.params,
        connect_to: &args.connect_to,
        via: args.via.as_deref(),
        ca: args.ca.as_deref(),
        timeout: args.timeout,
    });
    let prepared = match prepared {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let settings = match super::load(args.config.as_deref()) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let client = match egressd::check::client_for(&settings, args.client.as_deref(), args.from) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("--client {e}");
            return ExitCode::from(2);
        }
    };
    let config = args
        .config
        .as_ref()
        .map_or("the embedded default".to_string(), |p| {
            p.display().to_string()
        });
    let report = runtime.block_on(probe::run(prepared, settings, &client, config));
    print!(
        "{}",
        match args.format {
            ReportFormat::Table => report.render_table(),
            ReportFormat::Json => report.render_json(),
        }
    );
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
