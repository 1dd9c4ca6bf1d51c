//! `egressd check`: the decision for each target, one tab-separated line each.

use egressd::check::{check, CheckResult};
use egressd::policy::Identity;
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
    /// Evaluate as a member of this client group (from `clients:`); without it, as an unidentified client.
    #[arg(long, value_name = "NAME")]
    pub client: Option<String>,
    #[arg(required = true)]
    pub targets: Vec<String>,
}

pub fn run(args: Args, runtime: &tokio::runtime::Runtime) -> ExitCode {
    let settings = match super::load(args.config.as_deref()) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let identity = match identity(&settings, args.client.as_deref()) {
        Ok(id) => id,
        Err(code) => return code,
    };
    runtime.block_on(async {
        let dialer = args.resolve.then(|| Dialer::new(&settings));
        let mut all_allowed = true;
        for t in &args.targets {
            let r = check(&settings, dialer.as_ref(), &identity, t).await;
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

/// `--client NAME`: the identity of a member of that group; without it, an unidentified client.
fn identity(settings: &Settings, client: Option<&str>) -> Result<Identity, ExitCode> {
    let clients = &settings.policy.clients;
    match client.map(|n| (n, clients.member_of(n))) {
        None => Ok(Default::default()),
        Some((_, Some(id))) => Ok(id),
        Some((name, None)) => {
            let known: Vec<&str> = clients.names().collect();
            eprintln!(
                "--client {name:?} is not a client group; the configuration defines: {}",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            );
            Err(ExitCode::from(2))
        }
    }
}

/// `input  decision  rule=…  reason=…`, then the resolved addresses and the detail when there are any.
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
    line
}
