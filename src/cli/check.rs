//! `egressd check`: the decision for each target, one tab-separated line each.

use egressd::check::{check, CheckResult};
use egressd::policy::verdict::Client;
use egressd::proxy::dial::Dialer;
use egressd::Settings;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Also resolve names and apply the destination address checks.
    #[arg(long)]
    pub resolve: bool,
    /// Evaluate as a member of this client group (from `clients:`), or as a pod running as the service account
    /// `NAMESPACE/SERVICEACCOUNT` (in the groups whose workload selectors match it); without it, as an
    /// unidentified client.
    #[arg(long, value_name = "NAME", conflicts_with = "from")]
    pub client: Option<String>,
    /// Evaluate as a client connecting from this address: its client groups are those whose cidrs contain
    /// it, as the proxy would find them.
    #[arg(long, value_name = "ADDR")]
    pub from: Option<std::net::IpAddr>,
    #[arg(required = true)]
    pub targets: Vec<String>,
}

pub fn run(args: Args, runtime: &tokio::runtime::Runtime) -> ExitCode {
    let settings = match super::load(args.config.as_deref()) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let client = match client(&settings, args.client.as_deref(), args.from) {
        Ok(c) => c,
        Err(code) => return code,
    };
    runtime.block_on(async {
        let dialer = args
            .resolve
            .then(|| Dialer::new(&settings.listeners, &settings.runtime));
        let mut all_allowed = true;
        for t in &args.targets {
            let r = check(&settings, dialer.as_ref(), &client, t).await;
            all_allowed &= r.allowed();
            println!("{}", line(&r));
        }
        if all_allowed {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        }
    })
}

/// `--client NAME` or `--from ADDR` (see [`egressd::check::client_for`]), or exit code 2.
fn client(
    settings: &Settings,
    group: Option<&str>,
    from: Option<std::net::IpAddr>,
) -> Result<Client, ExitCode> {
    egressd::check::client_for(settings, group, from).map_err(|e| {
        eprintln!("--client {e}");
        ExitCode::from(2)
    })
}

/// `input  decision  rule=…  reason=…`, then the resolved addresses and the detail when there are any, and
/// last, with parents configured, the route of an allowed request (`via=direct`, `via=corp,backup`).
fn line(r: &CheckResult) -> String {
    let mut line = format!(
        "{}\t{}\trule={}\treason={}",
        r.input,
        r.decision,
        r.rule.as_deref().unwrap_or("-"),
        r.reason
    );
    if !r.resolved.is_empty() {
        let addrs: Vec<String> = r.resolved.iter().map(|a| a.to_string()).collect();
        line.push_str(&format!("\tresolved={}", addrs.join(",")));
    }
    if let Some(d) = &r.detail {
        line.push_str(&format!("\t{d}"));
    }
    if let Some(via) = &r.via {
        line.push_str(&format!("\tvia={via}"));
    }
    line
}
