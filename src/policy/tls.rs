//! Judging the TLS ClientHello a client sends inside an allowed CONNECT tunnel (pure; the hello has already
//! been parsed). This is what stops domain fronting: a tunnel opened for an allowed name may only carry TLS
//! for that name.

use super::{Identity, Policy};
use crate::reason::{Reason, Refusal};
use crate::target::{normalize_host, Host, Target};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SniMode {
    /// The SNI must be present and equal to the CONNECT host.
    Strict,
    /// The SNI must be present and itself allowed by the policy.
    Policy,
    /// No check (unsafe: allows domain fronting).
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EchMode {
    /// A hello with encrypted_client_hello is refused: the real name is hidden.
    Deny,
    /// Judge the outer (public) SNI like any other.
    Outer,
}

#[derive(Debug, Clone)]
pub struct TlsChecks {
    pub sni: SniMode,
    pub ech: EchMode,
    pub hello_timeout: Duration,
    pub hello_max_bytes: usize,
}

/// Must the tunnel carry TLS? A rule's `tls:` decides; without it, port 443 requires TLS.
pub fn tls_required(rule_tls: Option<bool>, port: u16) -> bool {
    rule_tls.unwrap_or(port == 443)
}

/// What the hello said, as far as the judgment needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello<'a> {
    pub sni: Option<&'a str>,
    pub ech: bool,
}

/// `Ok` if the hello may go to the upstream chosen for `target`, else the reason and an explanation.
pub fn judge(
    policy: &Policy,
    checks: &TlsChecks,
    target: &Target,
    hello: Hello<'_>,
    id: &Identity,
) -> Result<(), Refusal> {
    if hello.ech && checks.ech == EchMode::Deny {
        return Err(Refusal::new(
            Reason::DeniedEch,
            "the ClientHello uses encrypted_client_hello, which hides the real server name",
        ));
    }
    if checks.sni == SniMode::Off {
        return Ok(());
    }
    let sni = match hello.sni {
        Some(raw) => Some(normalize_host(raw).map_err(|e| {
            Refusal::new(
                Reason::DeniedSniMismatch,
                format!("the SNI {raw:?} is not a valid host name ({e})"),
            )
        })?),
        None => None,
    };
    let allowed_by_policy = |host: Host| {
        let t = Target {
            host,
            port: target.port,
        };
        policy.decide_request(&t, None, id).allowed
    };
    // CONNECT to an IP allowed by an IP rule: the SNI is optional, but a name it gives must be allowed.
    if matches!(target.host, Host::Ip(_)) {
        return match sni {
            None => Ok(()),
            Some(h) if allowed_by_policy(h.clone()) => Ok(()),
            Some(h) => Err(Refusal::new(
                Reason::DeniedSniNotAllowed,
                format!("the SNI {h} is not allowed on port {}", target.port),
            )),
        };
    }
    let Some(sni) = sni else {
        return Err(Refusal::new(
            Reason::DeniedSniMissing,
            "the ClientHello has no SNI; egressd needs it to bind the tunnel to the CONNECT host",
        ));
    };
    match checks.sni {
        SniMode::Strict if sni == target.host => Ok(()),
        SniMode::Strict => Err(Refusal::new(
            Reason::DeniedSniMismatch,
            format!(
                "the SNI {sni} differs from the CONNECT host {}",
                target.host
            ),
        )),
        SniMode::Policy if allowed_by_policy(sni.clone()) => Ok(()),
        SniMode::Policy => Err(Refusal::new(
            Reason::DeniedSniNotAllowed,
            format!("the SNI {sni} is not allowed on port {}", target.port),
        )),
        SniMode::Off => Ok(()),
    }
}

/// `Ok` if the second ClientHello, sent after the server's HelloRetryRequest, may go on where the first one
/// was let through: the server serves the name of this one, so it must be the same name, and ECH is judged
/// as for the first.
pub fn judge_retry(checks: &TlsChecks, first: Hello<'_>, second: Hello<'_>) -> Result<(), Refusal> {
    if second.ech && checks.ech == EchMode::Deny {
        return Err(Refusal::new(
            Reason::DeniedEch,
            "the second ClientHello (after a HelloRetryRequest) uses encrypted_client_hello, which hides \
             the real server name",
        ));
    }
    if checks.sni == SniMode::Off || second.sni == first.sni {
        return Ok(());
    }
    let name = |sni: Option<&str>| sni.map_or_else(|| "no SNI".to_string(), |s| format!("{s:?}"));
    Err(Refusal::new(
        Reason::DeniedSniMismatch,
        format!(
            "the second ClientHello (after a HelloRetryRequest) names {}, the first named {}",
            name(second.sni),
            name(first.sni)
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{parse_pattern, PolicyBuilder, PortSet, RuleKind};
    use crate::target::parse_authority;

    fn policy() -> Policy {
        let mut b = PolicyBuilder::default();
        let id = b.rule("r", RuleKind::Allow, PortSet::from_ranges(vec![443..=443]));
        for p in ["api.cast.ai", "grpc.cast.ai", "104.16.81.56"] {
            b.pattern(id, &parse_pattern(p).unwrap()).unwrap();
        }
        b.build().unwrap()
    }

    fn checks(sni: SniMode, ech: EchMode) -> TlsChecks {
        TlsChecks {
            sni,
            ech,
            hello_timeout: Duration::from_secs(5),
            hello_max_bytes: 65536,
        }
    }

    type Case<'a> = (
        SniMode,
        EchMode,
        &'a str,
        Option<&'a str>,
        bool,
        Result<(), Reason>,
    );

    #[test]
    fn table() {
        use EchMode::*;
        use SniMode::*;
        let p = policy();
        let cases: &[Case] = &[
            (
                Strict,
                Deny,
                "api.cast.ai:443",
                Some("api.cast.ai"),
                false,
                Ok(()),
            ),
            (
                Strict,
                Deny,
                "api.cast.ai:443",
                Some("API.cast.ai."),
                false,
                Ok(()),
            ),
            (
                Strict,
                Deny,
                "api.cast.ai:443",
                Some("grpc.cast.ai"),
                false,
                Err(Reason::DeniedSniMismatch),
            ),
            (
                Strict,
                Deny,
                "api.cast.ai:443",
                Some("evil.example"),
                false,
                Err(Reason::DeniedSniMismatch),
            ),
            (
                Strict,
                Deny,
                "api.cast.ai:443",
                None,
                false,
                Err(Reason::DeniedSniMissing),
            ),
            (
                Strict,
                Deny,
                "api.cast.ai:443",
                Some("bad name"),
                false,
                Err(Reason::DeniedSniMismatch),
            ),
            (
                Strict,
                Deny,
                "api.cast.ai:443",
                Some("api.cast.ai"),
                true,
                Err(Reason::DeniedEch),
            ),
            (
                Strict,
                Outer,
                "api.cast.ai:443",
                Some("api.cast.ai"),
                true,
                Ok(()),
            ),
            (
                Strict,
                Outer,
                "api.cast.ai:443",
                Some("other.example"),
                true,
                Err(Reason::DeniedSniMismatch),
            ),
            (
                Policy,
                Deny,
                "api.cast.ai:443",
                Some("grpc.cast.ai"),
                false,
                Ok(()),
            ),
            (
                Policy,
                Deny,
                "api.cast.ai:443",
                Some("evil.example"),
                false,
                Err(Reason::DeniedSniNotAllowed),
            ),
            (
                Policy,
                Deny,
                "api.cast.ai:443",
                None,
                false,
                Err(Reason::DeniedSniMissing),
            ),
            (
                Off,
                Deny,
                "api.cast.ai:443",
                Some("evil.example"),
                false,
                Ok(()),
            ),
            (Off, Deny, "api.cast.ai:443", None, false, Ok(())),
            (
                Off,
                Deny,
                "api.cast.ai:443",
                None,
                true,
                Err(Reason::DeniedEch),
            ),
            (Strict, Deny, "104.16.81.56:443", None, false, Ok(())),
            (
                Strict,
                Deny,
                "104.16.81.56:443",
                Some("api.cast.ai"),
                false,
                Ok(()),
            ),
            (
                Strict,
                Deny,
                "104.16.81.56:443",
                Some("evil.example"),
                false,
                Err(Reason::DeniedSniNotAllowed),
            ),
        ];
        for (mode, ech_mode, target, sni, ech, want) in cases {
            let t = parse_authority(target, None).unwrap();
            let got = judge(
                &p,
                &checks(*mode, *ech_mode),
                &t,
                Hello {
                    sni: *sni,
                    ech: *ech,
                },
                &Identity::default(),
            )
            .map_err(|e| e.reason);
            assert_eq!(
                got, *want,
                "{mode:?} {ech_mode:?} {target} {sni:?} ech={ech}"
            );
        }
    }

    #[test]
    fn the_second_hello_must_repeat_the_first_name_without_ech() {
        let hello = |sni: Option<&'static str>, ech: bool| Hello { sni, ech };
        let strict = checks(SniMode::Strict, EchMode::Deny);
        let first = hello(Some("allowed.test"), false);
        let retry = |c: &TlsChecks, second| judge_retry(c, first, second).map_err(|e| e.reason);
        assert_eq!(retry(&strict, first), Ok(()));
        assert_eq!(
            retry(&strict, hello(Some("evil.test"), false)),
            Err(Reason::DeniedSniMismatch)
        );
        assert_eq!(
            retry(&strict, hello(None, false)),
            Err(Reason::DeniedSniMismatch)
        );
        // Byte for byte: RFC 8446 lets the client change nothing of the name.
        assert_eq!(
            retry(&strict, hello(Some("ALLOWED.test"), false)),
            Err(Reason::DeniedSniMismatch)
        );
        assert_eq!(
            retry(&strict, hello(Some("allowed.test"), true)),
            Err(Reason::DeniedEch)
        );
        let outer = checks(SniMode::Policy, EchMode::Outer);
        assert_eq!(retry(&outer, hello(Some("allowed.test"), true)), Ok(()));
        let off = checks(SniMode::Off, EchMode::Deny);
        assert_eq!(retry(&off, hello(Some("evil.test"), false)), Ok(()));
        assert_eq!(
            retry(&off, hello(Some("allowed.test"), true)),
            Err(Reason::DeniedEch)
        );
    }

    #[test]
    fn tls_required_by_port_or_rule() {
        assert!(tls_required(None, 443));
        assert!(!tls_required(None, 8443));
        assert!(tls_required(Some(true), 8443));
        assert!(!tls_required(Some(false), 443));
    }
}
