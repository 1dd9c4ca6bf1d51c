//! `egressd probe`: can an agent reach a vendor's endpoints from here, and does the configuration let it?
//! For every endpoint of an embedded vendor profile: resolve it and check its addresses with the proxy's own
//! dialer (so `dns.hosts` and `destinations.allow_cidrs` apply), connect (or CONNECT through `--via`), make
//! the TLS handshake an agent makes (SNI, certificate chain and name), and evaluate the configuration's
//! verdict with the function `egressd check` and the proxy share.
//!
//! [`plan`] (what to probe), [`classify`] (naming a failure) and [`report`] are pure; [`io`] does the
//! network side.

pub mod classify;
pub mod io;
pub mod plan;
pub mod report;

use crate::check::check;
use crate::config::Settings;
use crate::policy::verdict::Client;
use crate::proxy::dial::Dialer;
use crate::vendors;
use plan::{ConnectTo, Planned, Via, What};
use report::{EndpointReport, PolicyView, Report};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The command line of a probe, before anything is read or resolved.
pub struct Request<'a> {
    pub vendor: &'a str,
    pub params: &'a [String],
    pub connect_to: &'a [String],
    pub via: Option<&'a str>,
    pub ca: Option<&'a Path>,
    pub timeout: Duration,
}

/// A probe ready to run: what to probe, through what, verified against which roots.
pub struct Prepared {
    pub vendor: String,
    pub planned: Vec<Planned>,
    pub via: Option<Via>,
    pub tls: Arc<rustls::ClientConfig>,
    pub custom_ca: bool,
    pub timeout: Duration,
}

/// Check the request: the profile exists, its parameters are complete and valid, `--connect-to`, `--via` and
/// `--ca` are usable. Every error says what to write instead (the command exits 2).
pub fn prepare(r: &Request) -> Result<Prepared, String> {
    let profile = vendors::find(r.vendor).ok_or_else(|| {
        format!(
            "{:?} is not a vendor profile; available: {}",
            r.vendor,
            vendors::names().join(", ")
        )
    })?;
    let params = profile.cli_params(r.params).map_err(|e| e.0)?;
    let endpoints = profile.expand(&params).map_err(|errs| {
        let mut lines: Vec<String> = errs.into_iter().map(|e| e.0).collect();
        lines.push("give parameters as --param NAME=VALUE (lists comma-separated)".into());
        lines.join("\n")
    })?;
    let connect_to = r
        .connect_to
        .iter()
        .map(|a| ConnectTo::parse(a))
        .collect::<Result<Vec<_>, _>>()?;
    let planned = plan::plan(&endpoints, &connect_to).map_err(|errs| {
        errs.into_iter()
            .map(|e| format!("--param: {e}"))
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    let via = r.via.map(Via::parse).transpose()?;
    let tls = crate::tls_files::client_config(r.ca, &[b"h2", b"http/1.1"])
        .map_err(|e| format!("--ca: {e}"))?;
    if r.timeout.is_zero() {
        return Err("--timeout must be more than 0s".into());
    }
    Ok(Prepared {
        vendor: profile.name.clone(),
        planned,
        via,
        tls,
        custom_ca: r.ca.is_some(),
        timeout: r.timeout,
    })
}

/// Probe every endpoint at once and report them in profile order. `settings` gives the DNS settings, the
/// destination checks and the policy; `config` names where they come from, for the summary.
pub async fn run(p: Prepared, mut settings: Settings, client: &Client, config: String) -> Report {
    settings.runtime.timeouts.dns = p.timeout;
    settings.runtime.timeouts.connect = p.timeout;
    let prober = io::Prober {
        dialer: Dialer::new(&settings.listeners, &settings.runtime),
        tls: tokio_rustls::TlsConnector::from(p.tls),
        custom_ca: p.custom_ca,
        via: p.via.clone(),
        timeout: p.timeout,
    };
    let (prober, settings) = (&prober, &settings);
    let probes = p.planned.into_iter().map(|planned| async move {
        let Planned {
            endpoint,
            rules,
            what,
        } = planned;
        match what {
            What::NotProbed(why) => EndpointReport::not_probed(endpoint, rules, why),
            What::Probe { target, dial } => {
                let verdict = check(settings, None, client, &target.authority()).await;
                let seen = prober.probe(&target, &dial).await;
                EndpointReport::probed(endpoint, rules, PolicyView::from(&verdict), seen)
            }
        }
    });
    let endpoints = futures_util::future::join_all(probes).await;
    let via = p
        .via
        .map_or_else(|| "direct".to_string(), |v| format!("via {}", v.shown));
    Report::new(&p.vendor, via, config, endpoints)
}
