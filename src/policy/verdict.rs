//! The whole verdict on a request, as a pure function of the facts the proxy gathered: who the client is
//! (source address, the Proxy-Authorization check's result, the verified certificate's names), what it asks
//! for (the normalized target and, for plain HTTP, the path), and later what its first bytes turned out to
//! be. Identity, credential refusals, report mode, the 407 choice and the detail text are all decided here,
//! once: the proxy applies the verdict, and `egressd check` calls the same functions, so the two cannot
//! disagree.

use super::credentials::CertName;
use super::first_bytes::{classify, Opening, Quiet, Seen, Stage};
use super::tls::{judge, judge_retry, Hello, TlsChecks};
use super::workload::{parse_service_account, Workload, WorkloadFact};
use super::{Credentials, Decision, Identity, IdleOverride, Policy};
use crate::reason::{Reason, Refusal};
use crate::target::{Host, Target};
use std::net::IpAddr;
use std::sync::Arc;

/// The decision a request's line records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    Allow,
    Deny,
    /// A policy denial let through because report mode applies (globally, to the client's group or to the
    /// rule).
    WouldDeny,
}

impl Verdict {
    /// `allow`, `deny` or `would_deny`, as the log writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::WouldDeny => "would_deny",
        }
    }

    /// The verdict a log's `decision` field names.
    pub fn parse(s: &str) -> Option<Verdict> {
        match s {
            "allow" => Some(Verdict::Allow),
            "deny" => Some(Verdict::Deny),
            "would_deny" => Some(Verdict::WouldDeny),
            _ => None,
        }
    }
}

/// Who the client is, as the policy sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Client {
    /// The client groups it belongs to.
    pub identity: Identity,
    /// Their names, in config order (logged as `client`).
    pub groups: Vec<Arc<str>>,
    /// The first name of its verified client certificate.
    pub cert: Option<String>,
    /// What its Proxy-Authorization header established.
    pub credentials: Credentials,
    /// The pod its address belongs to, when client groups use workload identity.
    pub workload: WorkloadFact,
}

impl Client {
    /// A connection's client: its source address, the credentials check's result, the verified client
    /// certificate's names (empty without one) and the pod its address belongs to.
    pub fn identify(
        policy: &Policy,
        addr: IpAddr,
        credentials: Credentials,
        cert_names: &[CertName],
        workload: WorkloadFact,
    ) -> Self {
        let mut identity = policy.clients.identify(addr);
        if let Credentials::Valid { groups, .. } = &credentials {
            identity.add_all(groups);
        }
        if !cert_names.is_empty() {
            identity.add_all(&policy.clients.identify_cert(cert_names));
        }
        if let Some(pod) = workload.pod() {
            identity.add_all(&policy.clients.identify_workload(pod));
        }
        Client {
            groups: policy.clients.names_of(&identity),
            identity,
            cert: cert_names.first().map(|n| n.to_string()),
            credentials,
            workload,
        }
    }

    /// `egressd check --client`: a member of the named group and nothing else, or, for
    /// `NAMESPACE/SERVICEACCOUNT`, a pod running as that service account (with no labels).
    pub fn member_of(policy: &Policy, client: &str) -> Option<Self> {
        if let Some(identity) = policy.clients.member_of(client) {
            return Some(Client {
                groups: policy.clients.names_of(&identity),
                identity,
                ..Client::default()
            });
        }
        let (namespace, service_account) = parse_service_account(client)?;
        let pod = Workload {
            namespace: namespace.into(),
            service_account: service_account.into(),
            pod: "".into(),
            labels: Vec::new(),
        };
        let mut identity = Identity::default();
        identity.add_all(&policy.clients.identify_workload(&pod));
        Some(Client {
            groups: policy.clients.names_of(&identity),
            identity,
            workload: WorkloadFact::Pod(Arc::new(pod)),
            ..Client::default()
        })
    }
}

impl Client {
    /// The same client (address, credentials, certificate, pod) as another policy sees it: its groups are that
    /// policy's, found from the same facts. Credentials count for the groups of the same names there (no
    /// password is checked twice); credentials none of whose groups exist there are refused there.
    pub fn as_seen_by(
        &self,
        live: &Policy,
        other: &Policy,
        addr: IpAddr,
        cert_names: &[CertName],
    ) -> Client {
        let credentials = match &self.credentials {
            Credentials::Valid { groups, user } => {
                let groups: Vec<_> = (groups.iter())
                    .filter_map(|&g| live.clients.name_of(g))
                    .filter_map(|n| other.clients.find(n))
                    .collect();
                if groups.is_empty() {
                    Credentials::Invalid
                } else {
                    Credentials::Valid {
                        groups,
                        user: user.clone(),
                    }
                }
            }
            c => c.clone(),
        };
        Client::identify(other, addr, credentials, cert_names, self.workload.clone())
    }
}

/// Where a shadow (candidate) policy's verdict differs from the live one's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShadowVerdict {
    pub verdict: Verdict,
    pub reason: Reason,
    pub rule: Option<Arc<str>>,
}

/// The candidate's verdict on the same request, when it differs from the live `ruling` (`None`: they agree).
/// `seen` is the client as the candidate sees it ([`Client::as_seen_by`]).
pub fn shadow(
    candidate: &Policy,
    seen: &Client,
    target: &Target,
    path: Option<&str>,
    ruling: &Ruling,
) -> Option<ShadowVerdict> {
    let theirs = decide(candidate, seen, target, path);
    (theirs.verdict != ruling.verdict).then_some(ShadowVerdict {
        verdict: theirs.verdict,
        reason: theirs.reason,
        rule: theirs.rule,
    })
}

/// The verdict on a request's head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruling {
    pub verdict: Verdict,
    pub reason: Reason,
    /// What was wrong, for refusals.
    pub detail: Option<String>,
    /// The deciding rule.
    pub rule: Option<Arc<str>>,
    /// The deciding allow rule's `tls` setting.
    pub tls: Option<bool>,
    /// The allowing rule's own idle timeout.
    pub idle: Option<IdleOverride>,
    /// Report mode applies to what the request proceeds on: later policy refusals (the SNI checks) are
    /// would-be denials too.
    pub lenient: bool,
    /// The refused IP literal, for `denied_private_address`.
    pub denied_addr: Option<IpAddr>,
}

impl Ruling {
    fn refused(r: Refusal) -> Self {
        Ruling {
            verdict: Verdict::Deny,
            reason: r.reason,
            detail: Some(r.detail),
            rule: None,
            tls: None,
            idle: None,
            lenient: false,
            denied_addr: None,
        }
    }

    /// Does the request go on (allowed, or a would-be denial)?
    pub fn proceeds(&self) -> bool {
        self.verdict != Verdict::Deny
    }
}

/// The verdict on a request for `target` (and, for plain HTTP, `path`) from `client`.
pub fn decide(policy: &Policy, client: &Client, target: &Target, path: Option<&str>) -> Ruling {
    match &client.credentials {
        Credentials::Unchecked { waited, per_source } => {
            return Ruling::refused(Refusal::new(
                Reason::AuthBusy,
                format!(
                    "too many password checks in progress: this one got no turn within timeouts.header \
                     ({waited:?}), or this client address already has {per_source} pending; retry"
                ),
            ))
        }
        Credentials::Invalid => {
            return Ruling::refused(Refusal::new(
                Reason::DeniedBadCredentials,
                "no client group accepts these Proxy-Authorization credentials",
            ))
        }
        Credentials::None | Credentials::Valid { .. } => {}
    }
    let Decision {
        allowed,
        rule,
        reason,
        tls,
        idle,
        report,
        lenient,
    } = policy.decide_request(target, path, &client.identity);
    let mut ruling = Ruling {
        verdict: Verdict::Allow,
        reason,
        detail: None,
        rule,
        tls,
        idle,
        lenient,
        denied_addr: None,
    };
    if allowed {
        return ruling;
    }
    if report {
        ruling.verdict = Verdict::WouldDeny;
        return ruling;
    }
    ruling.verdict = Verdict::Deny;
    if client.credentials == Credentials::None
        && policy.credentials_would_help(target, path, &client.identity)
    {
        return Ruling {
            rule: ruling.rule,
            ..Ruling::refused(Refusal::new(
                Reason::ProxyAuthRequired,
                "this destination needs Proxy-Authorization credentials (Basic or Bearer)",
            ))
        };
    }
    ruling.detail = Some(match reason {
        Reason::DeniedByRule => "a deny rule matches this host".into(),
        Reason::DeniedPort => format!("port {} is not in the matching rule's ports", target.port),
        Reason::DeniedPath => {
            match path.and_then(super::path::ambiguity) {
                Some(why) => {
                    format!("the path is ambiguous: it contains {why}; rules with paths refuse such paths")
                }
                None => "the path is not under the matching rule's paths".into(),
            }
        }
        Reason::DeniedNoIdentity => {
            "require_identity is set and the client belongs to no client group".into()
        }
        Reason::DeniedPrivateAddress => {
            if let Host::Ip(ip) = target.host {
                ruling.denied_addr = Some(ip);
            }
            let why = policy.private_literal(target).unwrap_or_default();
            format!(
                "{why}, and no allow rule names it (destinations.allow_cidrs and an IP rule would)"
            )
        }
        // Where an embedded vendor profile lists the destination, the refusal says which one to add.
        Reason::DeniedNoRule => match policy.vendor_hint(target, path) {
            Some(hint) => format!("no allow rule matches this host and port; {hint}"),
            None => "no allow rule matches this host and port".into(),
        },
        _ => "no allow rule matches this host and port".into(),
    });
    if let (WorkloadFact::Unavailable(why), Some(detail)) = (&client.workload, &mut ruling.detail) {
        detail.push_str(&format!(
            "; workload identity is unavailable ({why}), so groups defined by namespaces, service accounts \
             or pod labels match no client"
        ));
    }
    ruling
}

/// A refusal found after the request was let through (the SNI checks, the second ClientHello): under report
/// mode a policy refusal is only reported, and the tunnel goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Later {
    Refuse(Refusal),
    Report(Refusal),
}

pub fn later(lenient: bool, r: Refusal) -> Later {
    if lenient && r.reason.is_policy_denial() {
        Later::Report(r)
    } else {
        Later::Refuse(r)
    }
}

/// How an allowed CONNECT tunnel goes on once its first bytes are seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TunnelStart {
    /// Replay the bytes and splice.
    Go,
    /// Go on, but the tunnel is a would-be denial for this refusal.
    Reported(Refusal),
    /// Refuse: close without forwarding a byte.
    Refuse(Refusal),
    /// Nothing decisive came: the client left, stayed silent, or shutdown cut the wait.
    Quiet(Quiet),
}

/// The facts about an allowed CONNECT tunnel that its first bytes are judged against.
pub struct Tunnel<'a> {
    pub target: &'a Target,
    /// Must the tunnel carry TLS (the rule's `tls:`, or port 443)?
    pub required: bool,
    pub client: &'a Client,
    /// The request's ruling was lenient (report mode).
    pub lenient: bool,
}

/// The verdict on a CONNECT tunnel's first bytes: TLS where it is required, a well-formed ClientHello within
/// bounds, and its SNI bound to the CONNECT host.
pub fn judge_tunnel(
    policy: &Policy,
    checks: &TlsChecks,
    t: &Tunnel<'_>,
    seen: Seen<'_>,
    started: bool,
) -> TunnelStart {
    let opening = classify(
        Stage::Connect {
            required: t.required,
        },
        seen,
        started,
        checks,
    );
    let refusal = match opening {
        Opening::Plain => return TunnelStart::Go,
        Opening::Quiet(q) => return TunnelStart::Quiet(q),
        Opening::Refuse(r) => r,
        Opening::Hello(hello) => match judge(policy, checks, t.target, hello, &t.client.identity) {
            Ok(()) => return TunnelStart::Go,
            Err(r) => r,
        },
    };
    match later(t.lenient, refusal) {
        Later::Report(r) => TunnelStart::Reported(r),
        Later::Refuse(r) => TunnelStart::Refuse(r),
    }
}

/// The verdict on the second ClientHello, after the server's HelloRetryRequest: `Ok(None)` goes on,
/// `Ok(Some(r))` goes on reported (report mode), `Err(Ok(r))` refuses, `Err(Err(q))` ended quietly.
pub fn judge_second_hello(
    checks: &TlsChecks,
    first: Hello<'_>,
    seen: Seen<'_>,
    lenient: bool,
) -> Result<Option<Refusal>, Result<Refusal, Quiet>> {
    let refusal = match classify(Stage::Retry, seen, true, checks) {
        Opening::Hello(second) => match judge_retry(checks, first, second) {
            Ok(()) => return Ok(None),
            Err(r) => r,
        },
        Opening::Plain => return Ok(None),
        Opening::Quiet(q) => return Err(Err(q)),
        Opening::Refuse(r) => r,
    };
    match later(lenient, refusal) {
        Later::Report(r) => Ok(Some(r)),
        Later::Refuse(r) => Err(Ok(r)),
    }
}

/// The target a redirected TLS connection's first bytes name (the SNI on the original port), or why there is
/// none: `Err(Ok(refusal))`, or `Err(Err(quiet))` when nothing decisive came, so there was no request.
pub fn transparent_target(
    checks: &TlsChecks,
    port: u16,
    seen: Seen<'_>,
    started: bool,
) -> Result<Target, Result<Refusal, Quiet>> {
    match classify(Stage::Transparent, seen, started, checks) {
        Opening::Hello(h) => {
            super::transparent::sni_target(h.sni, h.ech, checks.ech, port).map_err(Ok)
        }
        Opening::Refuse(r) => Err(Ok(r)),
        Opening::Quiet(q) => Err(Err(q)),
        // The transparent TLS listener carries TLS only: plain bytes are refused above.
        Opening::Plain => Err(Ok(Refusal::new(
            Reason::DeniedNotTls,
            "the first bytes are not a TLS ClientHello; listen_transparent carries TLS only",
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::parse_authority;

    fn policy(yaml: &str) -> Arc<Policy> {
        crate::config::from_yaml_str(yaml).unwrap().runtime.policy
    }

    fn client(p: &Policy, addr: &str, credentials: Credentials) -> Client {
        Client::identify(
            p,
            addr.parse().unwrap(),
            credentials,
            &[],
            WorkloadFact::Unused,
        )
    }

    #[test]
    fn a_pod_joins_the_groups_its_workload_selects_and_unknown_identity_fails_closed() {
        let p = policy(
            "clients:\n  - name: castai\n    namespaces: [castai-agent]\n    service_accounts: [castai-agent/castai-agent]\n  - name: labelled\n    pod_labels: {app: kvisor}\nallow:\n  - {name: castai, hosts: [api.cast.ai], clients: [castai]}\n",
        );
        let pod = |ns: &str, sa: &str, labels: &[(&str, &str)]| {
            WorkloadFact::Pod(Arc::new(Workload {
                namespace: ns.into(),
                service_account: sa.into(),
                pod: "p-1".into(),
                labels: labels
                    .iter()
                    .map(|(k, v)| ((*k).into(), (*v).into()))
                    .collect(),
            }))
        };
        let t = parse_authority("api.cast.ai:443", None).unwrap();
        let as_pod = |w: WorkloadFact| {
            let c = Client::identify(&p, "10.0.0.1".parse().unwrap(), Credentials::None, &[], w);
            (
                c.groups.iter().map(|g| g.to_string()).collect::<Vec<_>>(),
                decide(&p, &c, &t, None),
            )
        };
        let (groups, r) = as_pod(pod("castai-agent", "castai-agent", &[("app", "kvisor")]));
        assert_eq!(groups, ["castai", "labelled"]);
        assert_eq!(r.verdict, Verdict::Allow);
        // Same namespace, another service account: not a member.
        let (groups, r) = as_pod(pod("castai-agent", "default", &[]));
        assert!(groups.is_empty());
        assert_eq!(r.reason, Reason::DeniedNoRule);
        assert!(!r.detail.unwrap().contains("unavailable"));
        // Unknown identity: no group, and the refusal says why.
        let (groups, r) = as_pod(WorkloadFact::Unavailable(Arc::new(
            "the API is down".into(),
        )));
        assert!(groups.is_empty());
        assert_eq!(r.verdict, Verdict::Deny);
        assert!(r
            .detail
            .unwrap()
            .contains("workload identity is unavailable (the API is down)"));
        // check --client NAMESPACE/SERVICEACCOUNT: a pod without labels.
        let c = Client::member_of(&p, "castai-agent/castai-agent").unwrap();
        assert_eq!(c.groups, [Arc::<str>::from("castai")]);
        assert!(Client::member_of(&p, "nosuch").is_none());
    }

    #[test]
    fn a_candidate_sees_credentials_in_its_groups_of_the_same_name() {
        let token =
            "token_sha256: [\"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"]";
        let live = policy(&format!(
            "clients:\n  - name: other\n    cidrs: [10.9.0.0/16]\n  - name: robots\n    {token}\nallow:\n  - {{name: a, hosts: [a.test], clients: [robots]}}\n"
        ));
        // The same group name at another index, and no `other`.
        let candidate = policy(&format!(
            "clients:\n  - name: robots\n    {token}\nallow:\n  - {{name: b, hosts: [a.test], clients: [robots]}}\n"
        ));
        let without = policy("allow:\n  - {name: c, hosts: [a.test]}\n");
        let valid = Credentials::Valid {
            groups: vec![1],
            user: None,
        };
        let c = client(&live, "127.0.0.1", valid);
        let t = parse_authority("a.test:443", None).unwrap();
        let ruling = decide(&live, &c, &t, None);
        assert_eq!(ruling.verdict, Verdict::Allow);
        let seen = c.as_seen_by(&live, &candidate, "127.0.0.1".parse().unwrap(), &[]);
        assert_eq!(seen.groups, [Arc::<str>::from("robots")]);
        assert_eq!(shadow(&candidate, &seen, &t, None, &ruling), None);
        // A candidate without the group: those credentials are nobody's there.
        let seen = c.as_seen_by(&live, &without, "127.0.0.1".parse().unwrap(), &[]);
        let theirs = shadow(&without, &seen, &t, None, &ruling).unwrap();
        assert_eq!(
            (theirs.verdict, theirs.reason),
            (Verdict::Deny, Reason::DeniedBadCredentials)
        );
    }

    #[test]
    fn unchecked_credentials_are_refused_as_busy() {
        let p = policy(
            "clients:\n  - name: robots\n    token_sha256: [\"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"]\nallow:\n  - {name: open, hosts: [open.test]}\n",
        );
        let t = parse_authority("open.test:443", None).unwrap();
        let allowed = decide(&p, &client(&p, "127.0.0.1", Credentials::None), &t, None);
        assert_eq!(allowed.verdict, Verdict::Allow);
        let busy = Credentials::Unchecked {
            waited: std::time::Duration::from_secs(10),
            per_source: 4,
        };
        let r = decide(&p, &client(&p, "127.0.0.1", busy), &t, None);
        assert_eq!((r.verdict, r.reason), (Verdict::Deny, Reason::AuthBusy));
        assert!(r.detail.unwrap().contains("4 pending"));
        let r = decide(&p, &client(&p, "127.0.0.1", Credentials::Invalid), &t, None);
        assert_eq!(r.reason, Reason::DeniedBadCredentials);
    }

    #[test]
    fn credentials_that_would_help_ask_for_them() {
        let p = policy(
            "clients:\n  - name: robots\n    token_sha256: [\"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"]\nallow:\n  - {name: robots-only, hosts: [secret.test], clients: [robots]}\n",
        );
        let t = parse_authority("secret.test:443", None).unwrap();
        let r = decide(&p, &client(&p, "127.0.0.1", Credentials::None), &t, None);
        assert_eq!(r.reason, Reason::ProxyAuthRequired);
        assert_eq!(r.reason.status(), 407);
        let other = parse_authority("other.test:443", None).unwrap();
        let r = decide(
            &p,
            &client(&p, "127.0.0.1", Credentials::None),
            &other,
            None,
        );
        assert_eq!(r.reason, Reason::DeniedNoRule);
    }

    #[test]
    fn report_mode_lets_policy_denials_through_and_marks_later_ones() {
        let p = policy("mode: report\nallow:\n  - {name: a, hosts: [a.test]}\n");
        let c = client(&p, "127.0.0.1", Credentials::None);
        let t = parse_authority("b.test:443", None).unwrap();
        let r = decide(&p, &c, &t, None);
        assert_eq!(
            (r.verdict, r.reason, r.lenient),
            (Verdict::WouldDeny, Reason::DeniedNoRule, true)
        );
        // A later SNI refusal is reported; a malformed hello is not a policy matter and is refused.
        let sni = Refusal::new(Reason::DeniedSniMismatch, "x");
        assert_eq!(later(true, sni.clone()), Later::Report(sni.clone()));
        assert_eq!(later(false, sni.clone()), Later::Refuse(sni));
        let bad = Refusal::new(Reason::InvalidClientHello, "x");
        assert_eq!(later(true, bad.clone()), Later::Refuse(bad));
    }

    #[test]
    fn transparent_first_bytes_decide_the_target_or_the_refusal() {
        use super::super::tls::{EchMode, SniMode};
        let checks = TlsChecks {
            sni: SniMode::Strict,
            ech: EchMode::Deny,
            hello_timeout: std::time::Duration::from_secs(5),
            hello_max_bytes: 16384,
        };
        let hello = |sni| Seen::Hello(Hello { sni, ech: false });
        let t = transparent_target(&checks, 443, hello(Some("api.example.com")), true).unwrap();
        assert_eq!(t.authority(), "api.example.com:443");
        let cases = [
            (hello(None), Reason::DeniedSniMissing),
            (Seen::NotTls, Reason::DeniedNotTls),
            (Seen::Invalid("bad"), Reason::InvalidClientHello),
            (Seen::TooLarge, Reason::InvalidClientHello),
            (Seen::Timeout, Reason::ClientHelloTimeout),
            (Seen::Closed, Reason::InvalidClientHello),
        ];
        for (seen, want) in cases {
            let got = transparent_target(&checks, 443, seen, true);
            assert_eq!(got.unwrap_err().map(|r| r.reason), Ok(want), "{seen:?}");
        }
        for seen in [Seen::Closed, Seen::Timeout] {
            let silent = transparent_target(&checks, 443, seen, false);
            assert!(silent.unwrap_err().is_err(), "no bytes, no request");
        }
    }

    #[test]
    fn a_refusal_names_the_unused_profile_that_lists_the_host() {
        let p = policy("vendors: [castai-us]\nvendors_disable: [castai-us/helm]\n");
        let c = client(&p, "127.0.0.1", Credentials::None);
        let detail = |authority: &str| {
            let r = decide(&p, &c, &parse_authority(authority, None).unwrap(), None);
            (r.reason, r.detail)
        };
        assert_eq!(
            detail("api.eu.cast.ai:443"),
            (
                Reason::DeniedNoRule,
                Some(
                    "no allow rule matches this host and port; listed by profile castai-eu (api); add it \
                     to vendors"
                        .into()
                )
            )
        );
        assert_eq!(detail("api.cast.ai:443"), (Reason::Allowed, None));
        // The profile in use lists it (its entry is disabled): adding castai-eu is not the fix.
        assert_eq!(
            detail("castai.github.io:443").1.as_deref(),
            Some("no allow rule matches this host and port")
        );
        assert_eq!(
            detail("api.eu.cast.ai:80").1.as_deref(),
            Some("no allow rule matches this host and port")
        );
    }

    #[test]
    fn a_private_literal_names_its_address() {
        let p = policy("allow:\n  - {name: a, hosts: [a.test]}\n");
        let c = client(&p, "127.0.0.1", Credentials::None);
        let t = parse_authority("169.254.169.254:80", None).unwrap();
        let r = decide(&p, &c, &t, None);
        assert_eq!(r.reason, Reason::DeniedPrivateAddress);
        assert_eq!(r.denied_addr, Some("169.254.169.254".parse().unwrap()));
    }
}
