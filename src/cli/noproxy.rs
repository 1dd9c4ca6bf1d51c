//! `egressd noproxy`: how Go, curl and Python clients read a NO_PROXY value.

use super::{parse_cidr, parse_cluster_domain, print_or_fail};
use clap::Subcommand;
use egressd::noproxy;
use ipnet::IpNet;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// For each URL and client: direct or through the proxy, and the entry that decided it.
    Explain {
        #[arg(long, allow_hyphen_values = true)]
        no_proxy: String,
        /// go, curl, python (urllib and requests), urllib, requests or all.
        #[arg(long, default_value = "all")]
        client: String,
        #[arg(required = true)]
        urls: Vec<String>,
    },
    /// Warnings, each with its fix, for known NO_PROXY pitfalls: exit 0 if none, 1 if any.
    Lint {
        #[arg(long, allow_hyphen_values = true)]
        no_proxy: String,
        #[arg(long, value_parser = parse_cidr)]
        pod_cidr: Option<IpNet>,
        #[arg(long, value_parser = parse_cidr)]
        service_cidr: Option<IpNet>,
    },
    /// A NO_PROXY value that works the same for Go, curl and Python clients.
    Suggest {
        #[arg(long, value_parser = parse_cidr)]
        pod_cidr: IpNet,
        #[arg(long, value_parser = parse_cidr)]
        service_cidr: IpNet,
        #[arg(long, default_value = "cluster.local", value_parser = parse_cluster_domain)]
        cluster_domain: String,
    },
    /// Read the proxy variables (both cases) from the environment and explain what each client does.
    FromEnv {
        /// URLs to route with each client's own variables.
        urls: Vec<String>,
    },
}

pub fn run(args: Args) -> ExitCode {
    match args.command {
        Command::Explain {
            no_proxy,
            client,
            urls,
        } => print_or_fail(
            noproxy::Client::parse_set(&client)
                .and_then(|clients| noproxy::explain(&no_proxy, &clients, &urls)),
        ),
        Command::Lint {
            no_proxy,
            pod_cidr,
            service_cidr,
        } => lint(&no_proxy, pod_cidr, service_cidr),
        Command::Suggest {
            pod_cidr,
            service_cidr,
            cluster_domain,
        } => print_or_fail(Ok(format!(
            "{}\n",
            noproxy::suggest(Some(pod_cidr), Some(service_cidr), &cluster_domain)
        ))),
        Command::FromEnv { urls } => {
            let vars = std::env::vars()
                .filter(|(k, _)| noproxy::env::VARIABLES.contains(&k.as_str()))
                .collect();
            print_or_fail(noproxy::from_env(&vars, &urls))
        }
    }
}

/// `egressd noproxy lint`: exit 0 with "no warnings", or 1 with each warning and its fix.
fn lint(no_proxy: &str, pod_cidr: Option<IpNet>, service_cidr: Option<IpNet>) -> ExitCode {
    let warnings = noproxy::lint(no_proxy, pod_cidr, service_cidr);
    print!("{}", noproxy::render_warnings(&warnings));
    if warnings.is_empty() {
        println!("no warnings");
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
