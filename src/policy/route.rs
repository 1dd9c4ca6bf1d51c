//! Which way an allowed request leaves: direct, or through parent proxies in order. Chosen purely from the
//! rule that allowed the request and the target, after the verdict, so `egressd check` can show it and a
//! refused request never reaches a parent.

use crate::noproxy::NoProxyList;
use crate::target::{Host, Target};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// A parent proxy (`parents:`): an HTTP proxy egressd asks to CONNECT for it, or forwards plain HTTP to.
#[derive(Clone, PartialEq, Eq)]
pub struct Parent {
    pub name: Arc<str>,
    /// Host (name or IP literal) and port of `url`.
    pub host: String,
    pub port: u16,
    /// The `Proxy-Authorization` value (`Basic ...`), when credentials are configured. Never shown.
    pub authorization: Option<String>,
    pub connect_timeout: Duration,
    /// `resolve: parent`: egressd does not resolve the name itself; the parent does.
    pub resolve_at_parent: bool,
    /// An `https://` parent: spoken to over TLS.
    pub tls: Option<ParentTls>,
}

/// How a TLS parent is verified: the client configuration built from `ca` (or the built-in roots).
#[derive(Clone)]
pub struct ParentTls {
    pub config: Arc<rustls::ClientConfig>,
    /// The `ca` file, as configured.
    pub ca: Option<String>,
}

/// Two TLS settings are the same when they name the same `ca` (the file's contents are checked at load).
impl PartialEq for ParentTls {
    fn eq(&self, other: &Self) -> bool {
        self.ca == other.ca
    }
}

impl Eq for ParentTls {}

impl fmt::Debug for Parent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Parent")
            .field("name", &self.name)
            .field("host", &self.host)
            .field("port", &self.port)
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .field("connect_timeout", &self.connect_timeout)
            .field("resolve_at_parent", &self.resolve_at_parent)
            .field(
                "tls",
                &self
                    .tls
                    .as_ref()
                    .map(|t| t.ca.as_deref().unwrap_or("built-in roots")),
            )
            .finish()
    }
}

/// A route: direct, or these parents tried in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Via {
    #[default]
    Direct,
    Parents(Vec<Arc<Parent>>),
}

impl Via {
    /// `direct`, or the parent names joined with `,` (as `egressd check` prints it).
    pub fn name(&self) -> String {
        match self {
            Via::Direct => "direct".into(),
            Via::Parents(list) => names(list),
        }
    }
}

/// The names of `parents`, joined with `,`: how a route of parents is shown.
pub fn names(parents: &[Arc<Parent>]) -> String {
    parents
        .iter()
        .map(|p| &*p.name)
        .collect::<Vec<_>>()
        .join(",")
}

/// The routes of a configuration: the parents, the default route, each rule's own route, and the
/// destinations that always go direct.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    pub parents: Vec<Arc<Parent>>,
    pub default: Via,
    /// Rules with their own `via`, by rule name.
    pub by_rule: HashMap<String, Via>,
    /// `parents_bypass`: NO_PROXY-style entries that always go direct.
    pub bypass: NoProxyList,
}

impl Routes {
    /// Are any parents configured? Without them every route is direct and decision lines say nothing of it.
    pub fn any(&self) -> bool {
        !self.parents.is_empty()
    }

    /// The route for a request to `target` allowed by `rule`.
    pub fn choose(&self, rule: Option<&str>, target: &Target) -> Via {
        if !self.any() || self.bypassed(target) {
            return Via::Direct;
        }
        rule.and_then(|r| self.by_rule.get(r))
            .unwrap_or(&self.default)
            .clone()
    }

    fn bypassed(&self, target: &Target) -> bool {
        let (name, ip) = match &target.host {
            Host::Name(n) => (Some(n.as_str()), None),
            Host::Ip(ip) => (None, Some(*ip)),
        };
        self.bypass
            .entries
            .iter()
            .any(|e| NoProxyList::matches_entry(e, name, ip, target.port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::parse_authority;

    fn parent(name: &str) -> Arc<Parent> {
        Arc::new(Parent {
            name: name.into(),
            host: "127.0.0.1".into(),
            port: 3128,
            authorization: Some("Basic c2VjcmV0".into()),
            connect_timeout: Duration::from_secs(5),
            resolve_at_parent: false,
            tls: None,
        })
    }

    #[test]
    fn rule_route_overrides_the_default_and_bypass_beats_both() {
        let (a, b) = (parent("a"), parent("b"));
        let routes = Routes {
            parents: vec![a.clone(), b.clone()],
            default: Via::Parents(vec![a.clone(), b.clone()]),
            by_rule: [("internal".to_string(), Via::Direct)].into(),
            bypass: crate::noproxy::parse(".corp.example,10.0.0.0/8"),
        };
        let t = |s: &str| parse_authority(s, None).unwrap();
        assert_eq!(
            routes.choose(Some("x"), &t("api.example.com:443")).name(),
            "a,b"
        );
        assert_eq!(routes.choose(None, &t("api.example.com:443")).name(), "a,b");
        assert_eq!(
            routes.choose(Some("internal"), &t("api.example.com:443")),
            Via::Direct
        );
        assert_eq!(
            routes.choose(Some("x"), &t("git.corp.example:443")),
            Via::Direct
        );
        assert_eq!(routes.choose(Some("x"), &t("10.1.2.3:443")), Via::Direct);
        // Go's implicit loopback rule is not a bypass entry.
        assert_eq!(routes.choose(Some("x"), &t("127.0.0.1:443")).name(), "a,b");
        assert_eq!(
            Routes::default().choose(Some("x"), &t("a.example:443")),
            Via::Direct
        );
    }

    #[test]
    fn credentials_are_never_shown() {
        let shown = format!("{:?}", parent("a"));
        assert!(!shown.contains("c2VjcmV0"), "{shown}");
    }
}
