//! Transparent-mode keys: `listen_transparent` (TLS, SNI), `listen_transparent_http` (Host header) and
//! `trust_original_dst`.

use super::{ConfigError, RawConfig};
use std::net::SocketAddr;

/// Transparent mode's reloadable part (its listener addresses are in [`Listeners`](super::Listeners)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transparent {
    /// Accept the original destination without checking it against the name's addresses.
    pub trust_original_dst: bool,
}

/// Would binding both addresses clash? The same port on the same address, or on any address when one of them is
/// the wildcard.
pub(super) fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// The transparent listeners (`listen_transparent`, `listen_transparent_http`), either of them unset.
pub(super) type Addresses = (Option<SocketAddr>, Option<SocketAddr>);

/// Compile the transparent keys: the listener addresses and the reloadable rest. `others` are the addresses of
/// the other listeners (proxy, TLS, admin), which a transparent listener must not share.
pub(super) fn compile(
    raw: &RawConfig,
    others: &[Option<SocketAddr>],
    warnings: &mut Vec<String>,
) -> Result<(Addresses, Transparent), Vec<ConfigError>> {
    let mut errs = Vec::new();
    let mut taken: Vec<SocketAddr> = others.iter().flatten().copied().collect();
    let mut listener = |key: &str, text: Option<&str>| -> Option<SocketAddr> {
        let text = text?;
        let err = |message: String| ConfigError {
            path: key.into(),
            message,
        };
        match text.parse::<SocketAddr>() {
            Ok(a) if a.port() != 0 && taken.iter().any(|t| overlaps(*t, a)) => {
                errs.push(err(format!(
                    "{a} is already used by another egressd listener; give {key} its own port"
                )));
                None
            }
            Ok(a) => {
                taken.push(a);
                Some(a)
            }
            Err(_) => {
                errs.push(err(format!(
                    "{text:?} is not an address:port such as 0.0.0.0:3130"
                )));
                None
            }
        }
    };
    let tls = listener("listen_transparent", raw.listen_transparent.as_deref());
    let http = listener(
        "listen_transparent_http",
        raw.listen_transparent_http.as_deref(),
    );
    let t = Transparent {
        trust_original_dst: raw.trust_original_dst.unwrap_or(false),
    };
    let enabled = tls.is_some() || http.is_some();
    if enabled && !cfg!(target_os = "linux") {
        errs.push(ConfigError {
            path: if tls.is_some() {
                "listen_transparent"
            } else {
                "listen_transparent_http"
            }
            .into(),
            message: "transparent listeners need Linux (SO_ORIGINAL_DST from iptables REDIRECT)"
                .into(),
        });
    }
    if t.trust_original_dst && !enabled {
        warnings.push(
            "trust_original_dst only applies to listen_transparent and listen_transparent_http, and neither \
             is set"
                .into(),
        );
    }
    if errs.is_empty() {
        Ok(((tls, http), t))
    } else {
        Err(errs)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::from_yaml_str;

    #[test]
    fn off_by_default() {
        let s = from_yaml_str("listen: 127.0.0.1:3128\n").unwrap();
        assert!(!s.listeners.transparent());
        assert!(!s.runtime.transparent.trust_original_dst);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn listeners_and_trust() {
        let s = from_yaml_str(
            "listen_transparent: 0.0.0.0:3130\nlisten_transparent_http: 0.0.0.0:3131\ntrust_original_dst: true\n",
        )
        .unwrap();
        assert_eq!(
            s.listeners.listen_transparent,
            Some("0.0.0.0:3130".parse().unwrap())
        );
        assert_eq!(
            s.listeners.listen_transparent_http,
            Some("0.0.0.0:3131".parse().unwrap())
        );
        assert!(s.runtime.transparent.trust_original_dst);
        assert!(s.runtime.warnings.is_empty(), "{:?}", s.runtime.warnings);
    }

    #[test]
    fn bad_and_clashing_addresses_are_reported_by_key() {
        let err = from_yaml_str(
            "listen: 127.0.0.1:3128\nlisten_transparent: 127.0.0.1:3128\nlisten_transparent_http: port80\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("listen_transparent: 127.0.0.1:3128 is already used"),
            "{err}"
        );
        assert!(
            err.contains("listen_transparent_http: \"port80\" is not an address:port"),
            "{err}"
        );
        let err = from_yaml_str(
            "listen_transparent: 0.0.0.0:3130\nlisten_transparent_http: 0.0.0.0:3130\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("listen_transparent_http"), "{err}");
        let err = from_yaml_str("listen: 127.0.0.1:3128\nlisten_transparent: 0.0.0.0:3128\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("listen_transparent: 0.0.0.0:3128 is already used"),
            "{err}"
        );
    }

    #[test]
    fn trust_without_listener_warns() {
        let s = from_yaml_str("trust_original_dst: true\n").unwrap();
        assert!(
            s.runtime
                .warnings
                .iter()
                .any(|w| w.contains("trust_original_dst")),
            "{:?}",
            s.runtime.warnings
        );
    }
}
