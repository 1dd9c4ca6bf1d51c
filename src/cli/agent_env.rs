//! `egressd agent-env`: the proxy environment and kubectl commands for a vendor's agents.

use super::{parse_cidr, parse_cluster_domain, parse_namespace, print_or_fail};
use egressd::{agent_env, vendors};
use ipnet::IpNet;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// egressd's address as the agents reach it, e.g. http://egressd.egressd.svc:3128.
    #[arg(long)]
    pub proxy_url: String,
    /// Vendor profile (see `egressd vendors`).
    #[arg(long)]
    pub vendor: String,
    #[arg(long, value_parser = parse_cidr)]
    pub pod_cidr: Option<IpNet>,
    #[arg(long, value_parser = parse_cidr)]
    pub service_cidr: Option<IpNet>,
    #[arg(long, default_value = "cluster.local", value_parser = parse_cluster_domain)]
    pub cluster_domain: String,
    /// Namespace of the agent workloads, where the vendor documents do not name it.
    #[arg(long, value_parser = parse_namespace)]
    pub namespace: Option<String>,
}

pub fn run(args: Args) -> ExitCode {
    let Some(profile) = vendors::find(&args.vendor) else {
        return print_or_fail(Err(format!(
            "{:?} is not a vendor profile; available: {}",
            args.vendor,
            vendors::names().join(", ")
        )));
    };
    print_or_fail(agent_env::render(&agent_env::Request {
        proxy_url: &args.proxy_url,
        profile,
        pod_cidr: args.pod_cidr,
        service_cidr: args.service_cidr,
        cluster_domain: &args.cluster_domain,
        namespace: args.namespace.as_deref(),
    }))
}
