//! Which `EGRESSD_*` environment variables are configuration overrides.
//!
//! A pod's environment holds more than what its manifest sets: Kubernetes injects service-link variables for
//! every Service of the namespace (`EGRESSD_SERVICE_HOST`, `EGRESSD_PORT_3128_TCP_ADDR`, ... for a Service named
//! `egressd`), and the operational log filter is `EGRESSD_LOG`. The rule:
//!
//! 1. `EGRESSD_LOG` is the log filter, never a configuration key.
//! 2. A name shaped like a Kubernetes service-link variable is ignored: `<S>_SERVICE_HOST`, `<S>_SERVICE_PORT`,
//!    `<S>_SERVICE_PORT_<NAME>`, `<S>_PORT`, `<S>_PORT_<N>_<PROTO>` and `..._PROTO|_PORT|_ADDR`. No configuration
//!    key ends that way.
//! 3. Any other `EGRESSD_<KEY>[__<NESTED>...]` is read when `<KEY>` (lowercased) names a top-level key.
//! 4. Anything else is an error naming the variable, with the closest top-level key: a misspelt override
//!    (`EGRESSD_REQUIRE_IDENTIY=true`) must not be ignored, since the configuration in force would then be
//!    more open than the one intended.

use super::raw::TOP_LEVEL_KEYS;
use super::{ConfigError, ConfigErrors};

/// The overrides to apply, and the variables that were left out (service-link shapes).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `(name, value)` pairs in name order.
    pub read: Vec<(String, String)>,
    /// Names ignored as Kubernetes service-link variables.
    pub ignored: Vec<String>,
}

const PREFIX: &str = "EGRESSD_";

/// Sort the process environment's `EGRESSD_*` variables into overrides, ignored service-link variables, and
/// errors (unknown keys).
pub fn select(vars: impl IntoIterator<Item = (String, String)>) -> Result<Overrides, ConfigErrors> {
    let mut out = Overrides::default();
    let mut errors = Vec::new();
    let mut vars: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(name, _)| name.starts_with(PREFIX) && name != "EGRESSD_LOG")
        .collect();
    vars.sort();
    for (name, value) in vars {
        let rest = &name[PREFIX.len()..];
        if is_service_link(&name) {
            out.ignored.push(name);
            continue;
        }
        let key = rest
            .split("__")
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if TOP_LEVEL_KEYS.contains(&key.as_str()) {
            out.read.push((name, value));
        } else {
            errors.push(ConfigError {
                path: String::new(),
                message: unknown_message(&name, &key),
            });
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(ConfigErrors(errors))
    }
}

fn unknown_message(name: &str, key: &str) -> String {
    let closest = TOP_LEVEL_KEYS
        .iter()
        .map(|k| (strsim::damerau_levenshtein(key, k), *k))
        .min()
        .filter(|(distance, k)| *distance <= 3.max(k.len() / 3));
    let hint = match closest {
        Some((_, k)) => format!("; did you mean EGRESSD_{}?", k.to_ascii_uppercase()),
        None => String::new(),
    };
    format!(
        "environment variable {name}: `{key}` is not a configuration key (EGRESSD_<KEY> overrides a top-level \
         key, `__` separates nested keys: EGRESSD_TIMEOUTS__CONNECT=5s){hint}"
    )
}

/// Is `name` shaped like a variable Kubernetes injects for a Service (`enableServiceLinks`)? Service names are
/// DNS labels, upper-cased with `-` turned into `_`, so `<S>` is one or more characters of `[A-Z0-9_]`.
pub fn is_service_link(name: &str) -> bool {
    let Some(last) = name.rfind('_') else {
        return false;
    };
    // <S>_SERVICE_HOST, <S>_SERVICE_PORT, <S>_PORT
    for suffix in ["_SERVICE_HOST", "_SERVICE_PORT", "_PORT"] {
        if name.len() > suffix.len() && name.ends_with(suffix) {
            return true;
        }
    }
    // <S>_SERVICE_PORT_<PORT NAME>
    if let Some(i) = name.find("_SERVICE_PORT_") {
        let port_name = &name[i + "_SERVICE_PORT_".len()..];
        if i > 0 && !port_name.is_empty() && port_name.bytes().all(is_env_byte) {
            return true;
        }
    }
    // <S>_PORT_<N>_<PROTO> and <S>_PORT_<N>_<PROTO>_{PROTO,PORT,ADDR}
    let tail = &name[last + 1..];
    let body = if ["PROTO", "PORT", "ADDR"].contains(&tail) {
        &name[..last]
    } else {
        name
    };
    let Some(proto_at) = body.rfind('_') else {
        return false;
    };
    if !["TCP", "UDP", "SCTP"].contains(&&body[proto_at + 1..]) {
        return false;
    }
    let before = &body[..proto_at];
    let Some(number_at) = before.rfind('_') else {
        return false;
    };
    let number = &before[number_at + 1..];
    !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit())
        && before[..number_at].ends_with("_PORT")
        && number_at > "_PORT".len()
}

fn is_env_byte(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The variables the kubelet gives a pod for a Service named `service` with these ports (name, number).
    pub(crate) fn service_links(service: &str, ports: &[(&str, u16)]) -> Vec<(String, String)> {
        let s = service.to_ascii_uppercase().replace('-', "_");
        let ip = "10.96.0.5";
        let mut v = vec![
            (format!("{s}_SERVICE_HOST"), ip.to_string()),
            (format!("{s}_SERVICE_PORT"), ports[0].1.to_string()),
            (format!("{s}_PORT"), format!("tcp://{ip}:{}", ports[0].1)),
        ];
        for (name, port) in ports {
            let n = name.to_ascii_uppercase().replace('-', "_");
            v.push((format!("{s}_SERVICE_PORT_{n}"), port.to_string()));
            let base = format!("{s}_PORT_{port}_TCP");
            v.push((base.clone(), format!("tcp://{ip}:{port}")));
            v.push((format!("{base}_PROTO"), "tcp".into()));
            v.push((format!("{base}_PORT"), port.to_string()));
            v.push((format!("{base}_ADDR"), ip.into()));
        }
        v
    }

    /// Service names the chart can produce that start with `egressd` (its fullname is the release name when it
    /// contains `egressd`), and names of other Services a namespace may hold, including ones that spell a
    /// top-level key after the prefix.
    const SERVICE_NAMES: &[&str] = &[
        "egressd",
        "egressd-prod",
        "egressd-admin",
        "egressd-listen",
        "egressd-listen-tls",
        "egressd-mode",
        "egressd-dns",
        "egressd-timeouts",
        "egressd-timeouts--connect",
        "egressd-2",
    ];

    #[test]
    fn service_link_variables_of_every_service_name_are_ignored() {
        for service in SERVICE_NAMES {
            let vars = service_links(
                service,
                &[("proxy", 3128), ("proxy-tls", 3129), ("admin", 9090)],
            );
            let got = select(vars.clone()).unwrap_or_else(|e| panic!("{service}: {e}"));
            assert!(got.read.is_empty(), "{service}: {:?}", got.read);
            assert_eq!(got.ignored.len(), vars.len(), "{service}");
        }
    }

    #[test]
    fn overrides_are_read_beside_service_links() {
        let mut vars = service_links("egressd", &[("proxy", 3128)]);
        vars.push(("EGRESSD_LISTEN".into(), "[::]:3128".into()));
        vars.push(("EGRESSD_TIMEOUTS__CONNECT".into(), "5s".into()));
        vars.push(("EGRESSD_LISTEN_TLS".into(), "[::]:3129".into()));
        vars.push(("EGRESSD_LOG".into(), "debug".into()));
        vars.push(("PATH".into(), "/bin".into()));
        let got = select(vars).unwrap();
        let names: Vec<&str> = got.read.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "EGRESSD_LISTEN",
                "EGRESSD_LISTEN_TLS",
                "EGRESSD_TIMEOUTS__CONNECT"
            ]
        );
    }

    #[test]
    fn an_unknown_key_is_an_error_with_the_closest_key() {
        let e = select([("EGRESSD_REQUIRE_IDENTIY".to_string(), "true".to_string())]).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("EGRESSD_REQUIRE_IDENTIY"), "{msg}");
        assert!(
            msg.contains("did you mean EGRESSD_REQUIRE_IDENTITY?"),
            "{msg}"
        );
        let e = select([("EGRESSD_BOGUS".to_string(), "1".to_string())]).unwrap_err();
        assert!(!e.to_string().contains("did you mean"), "{e}");
        // Every unknown variable is reported, not only the first.
        let e = select([
            ("EGRESSD_TIMEOUT__CONNECT".to_string(), "1s".to_string()),
            ("EGRESSD_VENDOR".to_string(), "castai-us".to_string()),
        ])
        .unwrap_err();
        assert_eq!(e.0.len(), 2, "{e}");
        assert!(e.to_string().contains("EGRESSD_TIMEOUTS?"), "{e}");
        assert!(e.to_string().contains("EGRESSD_VENDORS?"), "{e}");
    }

    #[test]
    fn service_link_shapes() {
        for name in [
            "EGRESSD_SERVICE_HOST",
            "EGRESSD_SERVICE_PORT",
            "EGRESSD_SERVICE_PORT_PROXY_TLS",
            "EGRESSD_PORT",
            "EGRESSD_PORT_3128_TCP",
            "EGRESSD_PORT_53_UDP_PROTO",
            "EGRESSD_PORT_9090_SCTP_ADDR",
            "EGRESSD_TIMEOUTS__CONNECT_PORT_3128_TCP_PORT",
        ] {
            assert!(is_service_link(name), "{name}");
        }
        for name in [
            "EGRESSD_LISTEN",
            "EGRESSD_LISTEN_TLS",
            "EGRESSD_ADMIN__LISTEN",
            "EGRESSD_PORT_X_TCP",
            "EGRESSD_PORT_3128_ICMP",
            "EGRESSD_PORT_3128",
            "_PORT",
        ] {
            assert!(!is_service_link(name), "{name}");
        }
    }
}
