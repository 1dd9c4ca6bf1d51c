//! The command line: the top-level parser and one module per subcommand, each with its arguments and its
//! handler. `main.rs` only parses and dispatches; the work is done by the library.

pub mod agent_env;
pub mod audit;
pub mod check;
pub mod hash_password;
pub mod noproxy;
pub mod probe;
pub mod run;
pub mod test;
pub mod validate;
pub mod vendors;

use clap::{Parser, Subcommand, ValueEnum};
use egressd::{agent_env as agents, config};
use ipnet::IpNet;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "egressd", version, about = "Egress allowlisting forward proxy")]
pub struct Cli {
    /// Log format: json (one JSON object per line) or text.
    #[arg(long, global = true, value_enum, default_value = "json")]
    pub log_format: Format,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    Json,
    Text,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the proxy (the default when no subcommand is given).
    Run(run::Args),
    /// Check a configuration: exit 0 if valid, 2 with every error listed if not.
    Validate(validate::Args),
    /// Show the decision for targets (host:port or URL): exit 0 if all allowed, 1 if any denied.
    Check(check::Args),
    /// Run policy cases (expected decisions) against a configuration: exit 0 if every case holds, 1 if any
    /// does not, 2 if a file cannot be read.
    Test(test::Args),
    /// Summarize denied and would_deny decisions in a decision log (JSON lines, plain or gzip).
    Audit(audit::Args),
    /// NO_PROXY tools: how Go, curl and Python clients read a NO_PROXY value.
    Noproxy(noproxy::Args),
    /// List the embedded vendor profiles, or show one profile's endpoints.
    Vendors(vendors::Args),
    /// Hash a password for `clients[].users` (argon2id): reads it from stdin (one trailing newline is dropped)
    /// and prints the PHC string.
    HashPassword,
    /// Print the proxy environment and kubectl commands for a vendor's agents.
    AgentEnv(agent_env::Args),
    /// Reach every endpoint of a vendor profile (DNS, address checks, TCP, TLS with the certificate verified),
    /// directly or through a proxy, and show what the configuration decides: exit 0 if every endpoint is ok,
    /// 1 if any fails or is refused.
    Probe(probe::Args),
}

impl Default for Command {
    /// No subcommand: run the proxy with the embedded default configuration.
    fn default() -> Self {
        Command::Run(run::Args::default())
    }
}

/// The parsed command line, or the exit code once clap has printed help, the version or a usage error.
pub fn parse() -> Result<Cli, ExitCode> {
    Cli::try_parse().map_err(|e| {
        let _ = e.print();
        if e.use_stderr() {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        }
    })
}

/// The multi-threaded runtime the proxy and `egressd check --resolve` run on.
pub fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("cannot start the async runtime: {e}");
            ExitCode::from(1)
        })
}

/// The configuration from `--config` (or the embedded default), or exit code 2 with every error on stderr.
pub fn load(path: Option<&std::path::Path>) -> Result<config::Settings, ExitCode> {
    config::load(path).map_err(|e| {
        eprintln!("configuration error:\n{e}");
        ExitCode::from(2)
    })
}

/// Print a command's output, or its error on stderr with exit code 2.
pub fn print_or_fail(r: Result<String, String>) -> ExitCode {
    match r {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// `--pod-cidr`, `--service-cidr`: a network, with the host bits cleared.
pub fn parse_cidr(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .map(|n| n.trunc())
        .map_err(|_| format!("{s:?} is not a CIDR such as 10.96.0.0/12"))
}

/// `--cluster-domain`: a DNS name (it becomes NO_PROXY entries), without its trailing dot.
pub fn parse_cluster_domain(s: &str) -> Result<String, String> {
    agents::check_cluster_domain(s).map(|()| s.trim_end_matches('.').to_string())
}

/// `--namespace`: a Kubernetes namespace name (it is printed into kubectl commands).
pub fn parse_namespace(s: &str) -> Result<String, String> {
    agents::check_namespace(s).map(|()| s.to_string())
}
