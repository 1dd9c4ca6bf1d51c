//! Transparent-mode decisions (pure): which name a redirected connection is for (the SNI, or the Host header
//! of a plain-HTTP request), whether its original destination is one of that name's addresses, and whether it
//! points back at egressd itself.

use super::tls::EchMode;
use crate::reason::{Reason, Refusal};
use crate::target::{normalize_host, parse_authority, Host, Target, TargetError};
use std::net::{IpAddr, SocketAddr};

/// The target of a redirected TLS connection: the SNI's name on the original destination port.
pub fn sni_target(
    sni: Option<&str>,
    ech: bool,
    ech_mode: EchMode,
    port: u16,
) -> Result<Target, Refusal> {
    if ech && ech_mode == EchMode::Deny {
        return Err(Refusal::new(
            Reason::DeniedEch,
            "the ClientHello uses encrypted_client_hello, which hides the real server name",
        ));
    }
    let Some(raw) = sni else {
        return Err(Refusal::new(
            Reason::DeniedSniMissing,
            "the ClientHello has no SNI; a redirected TLS connection is judged by the name it carries",
        ));
    };
    let host = normalize_host(raw).map_err(|e| {
        Refusal::new(
            Reason::InvalidHost,
            format!("the SNI {raw:?} is not a valid host name ({e})"),
        )
    })?;
    Ok(Target { host, port })
}

/// The target of a redirected plain-HTTP request: the Host header's name on the original destination port.
/// A port in the Host header is ignored: the connection goes to the port the client really dialled.
pub fn host_target(host_header: Option<&str>, port: u16) -> Result<Target, Refusal> {
    let Some(raw) = host_header else {
        return Err(Refusal::new(
            Reason::InvalidTarget,
            "the request has no Host header; a redirected HTTP request is judged by the name it carries",
        ));
    };
    match parse_authority(raw, Some(port)) {
        Ok(t) => Ok(Target { host: t.host, port }),
        Err(e) => {
            let reason = match e {
                TargetError::InvalidHost(_) => Reason::InvalidHost,
                _ => Reason::InvalidTarget,
            };
            Err(Refusal::new(reason, format!("Host header {raw:?}: {e}")))
        }
    }
}

/// The target of a redirected plain-HTTP request, named by its absolute-form authority or its Host header.
/// When it has both they must agree (after normalization, ports defaulting to the original one): the name
/// judged is then the name the origin is told.
pub fn request_target(
    authority: Option<&str>,
    host_header: Option<&str>,
    port: u16,
) -> Result<Target, Refusal> {
    let (Some(authority), Some(host)) = (authority, host_header) else {
        return host_target(authority.or(host_header), port);
    };
    let target = host_target(Some(authority), port)?;
    host_target(Some(host), port)?;
    let same = matches!(
        (parse_authority(authority, Some(port)), parse_authority(host, Some(port))),
        (Ok(a), Ok(h)) if a == h
    );
    if !same {
        return Err(Refusal::new(
            Reason::BadRequest,
            format!(
                "the request target names {authority:?} but the Host header {host:?}; a redirected request \
                 must name one host"
            ),
        ));
    }
    Ok(target)
}

/// With `trust_original_dst: false`, the address the client dialled must be one the name resolves to (after
/// every resolved address passed the destination checks); otherwise an allowed name could carry a connection
/// to any address.
pub fn check_original_dst(
    original: IpAddr,
    resolved: &[IpAddr],
    name: &Host,
) -> Result<(), Refusal> {
    let original = original.to_canonical();
    if resolved.iter().any(|a| a.to_canonical() == original) {
        return Ok(());
    }
    let addrs: Vec<String> = resolved.iter().map(|a| a.to_string()).collect();
    Err(Refusal::new(
        Reason::DeniedOriginalDstMismatch,
        format!(
            "the client connected to {original}, which is not an address of {name} ({}); set \
             trust_original_dst: true only if clients may reach names at addresses egressd does not resolve",
            addrs.join(", ")
        ),
    ))
}

/// Does a redirected connection point back at egressd? `local` is the accepted socket's own address (a
/// connection made to the transparent port directly has it as its original destination), `listeners` the
/// addresses egressd listens on.
pub fn is_loop(original: SocketAddr, local: SocketAddr, listeners: &[SocketAddr]) -> bool {
    let same = |a: SocketAddr, b: SocketAddr| {
        a.ip().to_canonical() == b.ip().to_canonical() && a.port() == b.port()
    };
    if same(original, local) {
        return true;
    }
    listeners.iter().any(|l| {
        l.port() == original.port()
            && (same(*l, original)
                || (l.ip().is_unspecified()
                    && (original.ip().is_loopback()
                        || original.ip().to_canonical() == local.ip().to_canonical())))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_and_host_must_name_the_same_target() {
        let t = |a, h| {
            request_target(a, h, 80)
                .map(|t| t.authority())
                .map_err(|e| e.reason)
        };
        assert_eq!(
            t(Some("allowed.test"), Some("allowed.test")),
            Ok("allowed.test:80".into())
        );
        assert_eq!(
            t(Some("allowed.test"), Some("ALLOWED.test.:80")),
            Ok("allowed.test:80".into())
        );
        assert_eq!(t(Some("allowed.test"), None), Ok("allowed.test:80".into()));
        assert_eq!(t(None, Some("allowed.test")), Ok("allowed.test:80".into()));
        assert_eq!(
            t(Some("allowed.test"), Some("evil.test")),
            Err(Reason::BadRequest)
        );
        assert_eq!(
            t(Some("allowed.test:8080"), Some("allowed.test")),
            Err(Reason::BadRequest)
        );
        assert_eq!(t(None, None), Err(Reason::InvalidTarget));
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn sni_names_the_target() {
        let t = sni_target(Some("API.Example.com."), false, EchMode::Deny, 443).unwrap();
        assert_eq!(t.host, Host::Name("api.example.com".into()));
        assert_eq!(t.port, 443);
        let cases: &[(Option<&str>, bool, EchMode, Reason)] = &[
            (None, false, EchMode::Deny, Reason::DeniedSniMissing),
            (None, false, EchMode::Outer, Reason::DeniedSniMissing),
            (Some("a.example"), true, EchMode::Deny, Reason::DeniedEch),
            (Some("bad name"), false, EchMode::Deny, Reason::InvalidHost),
        ];
        for (sni, ech, mode, want) in cases {
            let got = sni_target(*sni, *ech, *mode, 443).map_err(|e| e.reason);
            assert_eq!(got.unwrap_err(), *want, "{sni:?} ech={ech}");
        }
        assert!(sni_target(Some("a.example"), true, EchMode::Outer, 443).is_ok());
    }

    #[test]
    fn host_header_names_the_target_on_the_original_port() {
        let t = host_target(Some("Www.Example.com:8080"), 80).unwrap();
        assert_eq!(t.host, Host::Name("www.example.com".into()));
        assert_eq!(t.port, 80, "the original destination port counts");
        assert_eq!(host_target(Some("a.example"), 8000).unwrap().port, 8000);
        assert_eq!(
            host_target(None, 80).unwrap_err().reason,
            Reason::InvalidTarget
        );
        assert_eq!(
            host_target(Some("user@a.example"), 80).unwrap_err().reason,
            Reason::InvalidTarget
        );
    }

    #[test]
    fn original_dst_must_be_a_resolved_address() {
        let name = Host::Name("a.example".into());
        let resolved = [ip("192.0.2.10"), ip("2001:db8::10")];
        assert!(check_original_dst(ip("192.0.2.10"), &resolved, &name).is_ok());
        assert!(check_original_dst(ip("2001:db8::10"), &resolved, &name).is_ok());
        assert!(
            check_original_dst(ip("::ffff:192.0.2.10"), &resolved, &name).is_ok(),
            "v4-mapped is the same address"
        );
        let Refusal { reason, detail } =
            check_original_dst(ip("192.0.2.99"), &resolved, &name).unwrap_err();
        assert_eq!(reason, Reason::DeniedOriginalDstMismatch);
        assert!(
            detail.contains("192.0.2.99") && detail.contains("a.example"),
            "{detail}"
        );
        assert!(check_original_dst(ip("192.0.2.10"), &[], &name).is_err());
    }

    #[test]
    fn loops_are_recognised() {
        let local = sa("10.0.0.5:3130");
        let listeners = [sa("0.0.0.0:3130"), sa("127.0.0.1:3128")];
        assert!(
            is_loop(sa("10.0.0.5:3130"), local, &listeners),
            "direct connection"
        );
        assert!(
            is_loop(sa("127.0.0.1:3128"), local, &listeners),
            "to the proxy port"
        );
        assert!(
            is_loop(sa("127.0.0.1:3130"), local, &listeners),
            "wildcard listener via loopback"
        );
        assert!(!is_loop(sa("192.0.2.10:443"), local, &listeners));
        assert!(
            !is_loop(sa("192.0.2.10:3130"), local, &listeners),
            "same port elsewhere"
        );
        assert!(!is_loop(sa("127.0.0.2:3128"), local, &listeners));
    }
}
