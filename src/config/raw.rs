//! The configuration file as written: serde structs that refuse unknown keys. Values that need checking
//! (durations, ports, patterns, addresses) stay strings here so `compile` can report every error at once.

use serde::Deserialize;
use std::collections::BTreeMap;

/// The top-level keys of [`RawConfig`], which `EGRESSD_<KEY>` environment variables may override.
pub const TOP_LEVEL_KEYS: &[&str] = &[
    "listen",
    "listen_tls",
    "listen_transparent",
    "listen_transparent_http",
    "trust_original_dst",
    "tls",
    "mode",
    "sni",
    "client_hello",
    "clients",
    "require_identity",
    "allow",
    "deny",
    "vendors",
    "vendors_disable",
    "destinations",
    "dns",
    "timeouts",
    "limits",
    "admin",
    "shutdown",
    "parents",
    "via",
    "parents_bypass",
    "proxy_protocol",
    "kubernetes",
    "shadow",
    "include",
    "fragments",
];

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub listen: Option<String>,
    pub listen_tls: Option<String>,
    /// Listener for TLS connections redirected by iptables REDIRECT (the SNI names the destination).
    pub listen_transparent: Option<String>,
    /// Listener for plain-HTTP connections redirected by iptables REDIRECT (the Host header names it).
    pub listen_transparent_http: Option<String>,
    /// Transparent mode: skip the check that the original destination is one of the name's addresses.
    pub trust_original_dst: Option<bool>,
    #[serde(default)]
    pub tls: RawTlsFiles,
    pub mode: Option<String>,
    pub sni: Option<String>,
    #[serde(default)]
    pub client_hello: RawClientHello,
    /// Named client groups that rules can be scoped to (`clients: [name]` on a rule).
    #[serde(default)]
    pub clients: Vec<RawClientGroup>,
    /// Refuse clients that belong to no client group.
    pub require_identity: Option<bool>,
    #[serde(default)]
    pub allow: Vec<RawRule>,
    #[serde(default)]
    pub deny: Vec<RawRule>,
    /// Vendor profiles: `castai-us` or `{name: cloudcasa, params: {storage: [...]}}`. Kept as plain values so
    /// `compile` can say exactly what is wrong with an item.
    #[serde(default)]
    pub vendors: Vec<serde_json::Value>,
    /// Profile rules to leave out, by rule name (`castai-us/helm`).
    #[serde(default)]
    pub vendors_disable: Vec<String>,
    #[serde(default)]
    pub destinations: RawDestinations,
    #[serde(default)]
    pub dns: RawDns,
    #[serde(default)]
    pub timeouts: RawTimeouts,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub shutdown: RawShutdown,
    /// Parent proxies that allowed CONNECTs may be sent through.
    #[serde(default)]
    pub parents: Vec<RawParent>,
    /// The default route: `direct`, a parent name, or a list of parent names tried in order.
    pub via: Option<RawVia>,
    /// NO_PROXY-style entries (one per item) that always go direct.
    #[serde(default)]
    pub parents_bypass: Vec<String>,
    /// PROXY protocol headers from load balancers on the forward listeners.
    pub proxy_protocol: Option<RawProxyProtocol>,
    /// The Kubernetes API that workload identity (client groups' namespaces, service accounts, pod labels)
    /// reads pods from.
    #[serde(default)]
    pub kubernetes: RawKubernetes,
    /// A candidate configuration file decided next to this one (disagreements logged and counted).
    pub shadow: Option<String>,
    /// Directories of team-owned fragments (`*.yaml`, each scoped to its namespace or client group).
    #[serde(default)]
    pub include: Vec<String>,
    /// The guardrails fragments are held to.
    #[serde(default)]
    pub fragments: RawGuardrails,
}

/// `fragments:`: what fragments may not open.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawGuardrails {
    /// Host patterns no fragment rule may open, or overlap (`*.corp.example`, `metadata.google.internal`).
    #[serde(default)]
    pub forbidden_hosts: Vec<String>,
    /// Vendor profiles no fragment may use.
    #[serde(default)]
    pub forbidden_profiles: Vec<String>,
    /// Labels a fragment's wildcard must fix after `*.` (default 2: `*.example.com`, not `*.com`).
    pub min_wildcard_labels: Option<usize>,
}

/// One team-owned fragment file: allow rules, vendor profiles and client groups of its own.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawFragment {
    #[serde(default)]
    pub clients: Vec<RawClientGroup>,
    #[serde(default)]
    pub allow: Vec<RawRule>,
    #[serde(default)]
    pub vendors: Vec<serde_json::Value>,
}

/// `proxy_protocol:`: who sends PROXY headers, on which listeners.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawProxyProtocol {
    /// CIDRs (or addresses) of the balancers: they must send a header, nobody else may.
    #[serde(default)]
    pub trusted: Vec<String>,
    /// `listen`, `listen_tls` (default: both, where configured).
    pub listeners: Option<Vec<String>>,
}

/// One parent proxy.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawParent {
    pub name: String,
    /// `http://host:port` or `https://host:port`.
    pub url: String,
    /// For an `https://` parent: the PEM bundle of the CAs its certificate is verified against.
    pub ca: Option<String>,
    /// A file holding `user:password`.
    pub credentials_file: Option<String>,
    /// An environment variable holding `user:password`.
    pub credentials_env: Option<String>,
    pub connect_timeout: Option<String>,
    /// `local` (default): egressd resolves and checks the name first; `parent`: only the parent resolves.
    pub resolve: Option<String>,
}

/// `via: direct`, `via: NAME` or `via: [NAME, NAME]`.
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub enum RawVia {
    One(String),
    List(Vec<String>),
}

/// The admin listener (metrics, health, readiness).
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// address:port, or "off".
    pub listen: Option<String>,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawShutdown {
    /// How long open tunnels may drain after SIGTERM/SIGINT.
    pub grace: Option<String>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub name: String,
    #[serde(default)]
    pub hosts: Vec<String>,
    pub no_proxy: Option<String>,
    #[serde(default)]
    pub ports: Vec<RawPort>,
    pub tls: Option<bool>,
    /// Path prefixes (allow rules only), enforced for plain-HTTP requests.
    #[serde(default)]
    pub paths: Vec<String>,
    /// `"none"` or a duration; replaces `timeouts.idle` for tunnels this rule allows.
    pub idle_timeout: Option<String>,
    /// `enforce` (default) or `report`: what the rule would refuse is let through and logged `would_deny`.
    pub mode: Option<String>,
    /// Client groups the rule applies to; empty: every client.
    #[serde(default)]
    pub clients: Vec<String>,
    /// Allow host patterns that reach beyond one registrable domain (`*`, `api.*`, `*cast.ai`, `*.com`).
    pub broad_hosts: Option<bool>,
    /// Private CIDRs this rule's exact hosts may resolve to (the vendor's own endpoint), on its ports only.
    #[serde(default)]
    pub private_cidrs: Vec<String>,
    /// Allow rules: the route for what this rule allows (`direct`, a parent, or parents in order).
    pub via: Option<RawVia>,
}

/// One client group: clients connecting from these source addresses, or presenting these credentials.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawClientGroup {
    pub name: String,
    #[serde(default)]
    pub cidrs: Vec<String>,
    /// Basic users: `{user, argon2: PHC string}`.
    #[serde(default)]
    pub users: Vec<RawUser>,
    /// File of `user:$argon2id$...` lines (`#` comments, blank lines ignored).
    pub users_file: Option<String>,
    /// Client certificate names: URI SANs (`spiffe://td/ns/x/*`), `dns:NAME`, `cn:NAME`; a trailing `*`
    /// matches any rest.
    #[serde(default)]
    pub certs: Vec<String>,
    /// Bearer tokens as hex SHA-256 digests.
    #[serde(default)]
    pub token_sha256: Vec<String>,
    /// File of Bearer tokens (one per line), hashed when read.
    pub tokens_file: Option<String>,
    /// `report`: this group's policy denials are let through and logged as would_deny.
    pub mode: Option<String>,
    /// Workload identity: pods in one of these namespaces ...
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// ... running as one of these service accounts (`namespace/name`) ...
    #[serde(default)]
    pub service_accounts: Vec<String>,
    /// ... and carrying all of these labels.
    #[serde(default)]
    pub pod_labels: std::collections::BTreeMap<String, String>,
}

/// `kubernetes:`: where the pods behind workload identity are read from.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawKubernetes {
    /// A kubeconfig file; without it, the in-cluster configuration (the pod's service account).
    pub kubeconfig: Option<String>,
    /// How long the API server may be unreachable before workload identity is unknown (e.g. `60s`).
    pub stale_after: Option<String>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawUser {
    pub user: String,
    pub argon2: String,
}

/// `443` or `"8000-8100"`.
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub enum RawPort {
    Number(i64),
    Text(String),
}

/// Certificate and key for the TLS listener (PEM files).
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawTlsFiles {
    pub cert: Option<String>,
    pub key: Option<String>,
    /// CA bundle (PEM) that client certificates are verified against; unset: no client certificates.
    pub client_ca: Option<String>,
    /// `optional` (default) or `required`: whether clients without a certificate are served.
    pub client_auth: Option<String>,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawClientHello {
    pub timeout: Option<String>,
    pub max_bytes: Option<u64>,
    pub ech: Option<String>,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawDestinations {
    #[serde(default)]
    pub allow_cidrs: Vec<String>,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawDns {
    #[serde(default)]
    pub hosts: BTreeMap<String, Vec<String>>,
    /// A hosts file read after `hosts` (default /etc/hosts), or "off".
    pub hosts_file: Option<String>,
    #[serde(default)]
    pub servers: Vec<String>,
    pub min_ttl: Option<String>,
    pub max_ttl: Option<String>,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    pub header: Option<String>,
    pub connect: Option<String>,
    pub idle: Option<String>,
    pub dns: Option<String>,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_connections: Option<u64>,
    pub max_connections_per_client: Option<u64>,
    pub max_header_bytes: Option<u64>,
}

#[cfg(test)]
mod tests {
    /// `TOP_LEVEL_KEYS` is exactly the set of fields serde knows: the unknown-field error lists them.
    #[test]
    fn top_level_keys_match_the_struct() {
        let err = serde_json::from_str::<super::RawConfig>(r#"{"no_such_key": 1}"#).unwrap_err();
        let msg = err.to_string();
        let listed = msg
            .split("expected one of ")
            .nth(1)
            .expect("serde lists the fields");
        let mut fields: Vec<&str> = listed
            .split(", ")
            .map(|f| {
                f.trim()
                    .trim_matches(|c| c == '`' || c == ' ')
                    .split('`')
                    .next()
                    .unwrap()
            })
            .collect();
        fields.sort_unstable();
        let mut keys = super::TOP_LEVEL_KEYS.to_vec();
        keys.sort_unstable();
        assert_eq!(fields, keys, "{msg}");
    }
}
