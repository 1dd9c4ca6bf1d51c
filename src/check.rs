//! `egressd check`: evaluate targets with the same normalization, policy and (optionally) destination
//! checks as the proxy, without sending any traffic.

use crate::config::Settings;
use crate::policy::verdict::{decide, Client, Verdict};
use crate::proxy::dial::{DialInfo, Dialer};
use crate::reason::{Reason, Refusal};
use crate::target::{parse_authority, Target};
use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    pub input: String,
    pub target: Option<String>,
    pub decision: &'static str,
    pub rule: Option<String>,
    pub reason: Reason,
    pub detail: Option<String>,
    pub resolved: Vec<IpAddr>,
    /// With parents configured, the route of an allowed request: `direct` or its parents (`a,b`).
    pub via: Option<String>,
}

impl CheckResult {
    pub fn allowed(&self) -> bool {
        self.decision != "deny"
    }
}

/// `host:port`, `[v6]:port`, or a URL (`https://host/path`, default port from the scheme).
pub fn parse_target_arg(arg: &str) -> Result<Target, Refusal> {
    let to_reason = |e: crate::target::TargetError| Refusal::new(e.reason(), e.to_string());
    if let Some((scheme, rest)) = arg.split_once("://") {
        let default = match scheme.to_ascii_lowercase().as_str() {
            "https" | "wss" => 443,
            "http" | "ws" => 80,
            other => {
                return Err(Refusal::new(
                    Reason::UnsupportedScheme,
                    format!("unknown scheme {other:?}; use http(s):// or host:port"),
                ))
            }
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        return parse_authority(authority, Some(default)).map_err(to_reason);
    }
    parse_authority(arg, None).map_err(to_reason)
}

/// The path of an `http://` URL (what a plain-HTTP request would carry, so `paths` rules apply); `None` for
/// `https://` URLs and `host:port`, which reach egressd as CONNECT.
pub fn plain_http_path(arg: &str) -> Option<String> {
    let (scheme, rest) = arg.split_once("://")?;
    if !scheme.eq_ignore_ascii_case("http") {
        return None;
    }
    Some(match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => rest[i..].to_string(),
        Some(i) => format!("/{}", &rest[i..]),
        None => "/".to_string(),
    })
}

/// The client a check is made as: a member of the group `group` (`--client NAME`), a pod running as a service
/// account (`--client NAMESPACE/SERVICEACCOUNT`: its groups are those whose workload selectors match it), a
/// client connecting from `from` (its groups are those whose cidrs contain it, as the proxy finds them), or,
/// without either, an unidentified client.
pub fn client_for(
    settings: &Settings,
    group: Option<&str>,
    from: Option<IpAddr>,
) -> Result<Client, String> {
    let policy = &settings.runtime.policy;
    if let Some(addr) = from {
        return Ok(Client::identify(
            policy,
            addr,
            crate::policy::Credentials::None,
            &[],
            crate::policy::workload::WorkloadFact::Unused,
        ));
    }
    match group.map(|n| (n, Client::member_of(policy, n))) {
        None => Ok(Client::default()),
        Some((_, Some(c))) => Ok(c),
        Some((name, None)) => {
            let known: Vec<&str> = policy.clients.names().collect();
            Err(format!(
                "{name:?} is not a client group nor NAMESPACE/SERVICEACCOUNT; the configuration defines: {}",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ))
        }
    }
}

/// Evaluate `arg` for `client` with the verdict the proxy uses for a request: the same normalization, the
/// same [`crate::policy::verdict::decide`], and (with a `dialer`) the same resolution and destination check.
pub async fn check(
    settings: &Settings,
    dialer: Option<&Dialer>,
    client: &Client,
    arg: &str,
) -> CheckResult {
    let mut r = CheckResult {
        input: arg.to_string(),
        target: None,
        decision: Verdict::Deny.as_str(),
        rule: None,
        reason: Reason::InvalidTarget,
        detail: None,
        resolved: Vec::new(),
        via: None,
    };
    let target = match parse_target_arg(arg) {
        Ok(t) => t,
        Err(e) => {
            r.reason = e.reason;
            r.detail = Some(e.detail);
            return r;
        }
    };
    r.target = Some(target.authority());
    let ruling = decide(
        &settings.runtime.policy,
        client,
        &target,
        plain_http_path(arg).as_deref(),
    );
    r.rule = ruling.rule.as_ref().map(|s| s.to_string());
    r.reason = ruling.reason;
    r.detail = ruling.detail.clone();
    r.decision = ruling.verdict.as_str();
    if !ruling.proceeds() {
        return r;
    }
    let routes = &settings.runtime.routes;
    let via = routes.choose(r.rule.as_deref(), &target);
    if routes.any() {
        r.via = Some(via.name());
    }
    // A route whose parents all resolve for themselves is not resolved here either, as in the proxy.
    let resolves_locally = match &via {
        crate::policy::route::Via::Direct => true,
        crate::policy::route::Via::Parents(list) => list.iter().any(|p| !p.resolve_at_parent),
    };
    if let Some(dialer) = dialer.filter(|_| resolves_locally) {
        let mut info = DialInfo::default();
        let res = dialer.resolve(&target, &mut info).await;
        r.resolved = info.resolved;
        if let Err(e) = res {
            r.decision = Verdict::Deny.as_str();
            r.reason = e.reason;
            r.detail = Some(e.detail);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_paths() {
        assert_eq!(plain_http_path("http://h/a/b?q").as_deref(), Some("/a/b?q"));
        assert_eq!(plain_http_path("HTTP://h").as_deref(), Some("/"));
        assert_eq!(plain_http_path("http://h?q=1").as_deref(), Some("/?q=1"));
        assert_eq!(plain_http_path("https://h/a"), None);
        assert_eq!(plain_http_path("h:80"), None);
    }

    #[tokio::test]
    async fn check_shows_the_route_with_parents_only() {
        let s = crate::config::from_yaml_str(
            "parents:\n  - {name: corp, url: \"http://127.0.0.1:3128\"}\nparents_bypass: [direct.example]\nallow:\n  - {name: a, hosts: [a.example, direct.example]}\n  - {name: b, hosts: [b.example], via: direct}\n",
        )
        .unwrap();
        let via = |arg: &'static str| {
            let s = &s;
            async move { check(s, None, &Client::default(), arg).await.via }
        };
        assert_eq!(via("a.example:443").await.as_deref(), Some("corp"));
        assert_eq!(via("b.example:443").await.as_deref(), Some("direct"));
        assert_eq!(via("direct.example:443").await.as_deref(), Some("direct"));
        assert_eq!(via("refused.example:443").await, None, "refused: no route");
        let plain =
            crate::config::from_yaml_str("allow:\n  - {name: a, hosts: [a.example]}\n").unwrap();
        assert_eq!(
            check(&plain, None, &Client::default(), "a.example:443")
                .await
                .via,
            None
        );
    }

    #[tokio::test]
    async fn check_applies_paths_to_http_urls_only() {
        let s = crate::config::from_yaml_str(
            "allow:\n  - name: b\n    hosts: [storage.example]\n    ports: [80, 443]\n    paths: [\"/bucket/\"]\n",
        )
        .unwrap();
        assert!(check(
            &s,
            None,
            &Client::default(),
            "http://storage.example/bucket/x"
        )
        .await
        .allowed());
        let r = check(
            &s,
            None,
            &Client::default(),
            "http://storage.example/other/x",
        )
        .await;
        assert_eq!((r.allowed(), r.reason), (false, Reason::DeniedPath));
        // https:// is a CONNECT: the path is not visible, the host is allowed.
        assert!(check(
            &s,
            None,
            &Client::default(),
            "https://storage.example/other/x"
        )
        .await
        .allowed());
    }
}
