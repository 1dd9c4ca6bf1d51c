//! Proxy-Authorization credentials: Basic user names with argon2 password hashes (PHC strings) and Bearer
//! tokens stored as SHA-256 digests. Secrets are compared in constant time (argon2's own comparison, `subtle`
//! for token digests) and never logged: the header value is kept in [`ProxyAuth`], whose `Debug` hides it.

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A Proxy-Authorization header value as received. `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyAuth(pub String);

impl std::fmt::Debug for ProxyAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProxyAuth(<redacted>)")
    }
}

/// One user of a client group: a name and the argon2 PHC string of the password.
#[derive(Clone)]
pub struct User {
    pub name: String,
    pub phc: String,
}

/// One name of a verified client certificate, typed by where it came from, so a name of one kind never
/// matches a pattern meant for another (a URI SAN spelled `dns:x` is not the DNS name `x`). Shown (logs,
/// patterns) as the URI as written, `dns:NAME` or `cn:NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertName {
    Uri(String),
    Dns(String),
    Cn(String),
}

impl CertName {
    /// A `certs` pattern in the same shape: `dns:` and `cn:` name their kind, `uri:` or no prefix a URI SAN.
    fn pattern(p: &str) -> CertName {
        if let Some(rest) = p.strip_prefix("dns:") {
            CertName::Dns(rest.to_string())
        } else if let Some(rest) = p.strip_prefix("cn:") {
            CertName::Cn(rest.to_string())
        } else {
            CertName::Uri(p.strip_prefix("uri:").unwrap_or(p).to_string())
        }
    }

    fn parts(&self) -> (u8, &str) {
        match self {
            CertName::Uri(v) => (0, v),
            CertName::Dns(v) => (1, v),
            CertName::Cn(v) => (2, v),
        }
    }
}

impl std::fmt::Display for CertName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CertName::Uri(v) => f.write_str(v),
            CertName::Dns(v) => write!(f, "dns:{v}"),
            CertName::Cn(v) => write!(f, "cn:{v}"),
        }
    }
}

/// The credentials a client group accepts.
#[derive(Clone, Default)]
pub struct GroupCredentials {
    pub users: Vec<User>,
    pub token_sha256: Vec<[u8; 32]>,
    /// Client certificate name patterns (a trailing `*` matches any rest).
    pub certs: Vec<String>,
}

impl GroupCredentials {
    /// Groups identified by Proxy-Authorization (certificates are not asked for with a 407).
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.token_sha256.is_empty()
    }

    /// Does one of the certificate's names match one of the group's patterns?
    pub fn cert_matches(&self, names: &[CertName]) -> bool {
        self.certs.iter().any(|p| {
            let pattern = CertName::pattern(p);
            let (kind, p) = pattern.parts();
            names.iter().any(|n| {
                let (name_kind, n) = n.parts();
                name_kind == kind
                    && match p.strip_suffix('*') {
                        Some(prefix) => n.starts_with(prefix),
                        None => n == p,
                    }
            })
        })
    }
}

/// What a Proxy-Authorization header says.
pub enum Presented {
    Basic {
        user: String,
        password: String,
    },
    Bearer(String),
    /// Not a Basic or Bearer header, or a malformed one.
    Malformed,
}

pub fn parse(header: &ProxyAuth) -> Presented {
    let value = header.0.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(rest) else {
            return Presented::Malformed;
        };
        let Ok(text) = String::from_utf8(decoded) else {
            return Presented::Malformed;
        };
        return match text.split_once(':') {
            Some((user, password)) => Presented::Basic {
                user: user.to_string(),
                password: password.to_string(),
            },
            None => Presented::Malformed,
        };
    }
    if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
        return Presented::Bearer(rest.to_string());
    }
    Presented::Malformed
}

/// Does `password` match the argon2 PHC string? A malformed PHC string (refused by the config compiler)
/// matches nothing.
pub fn password_matches(phc: &str, password: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// A PHC string with the algorithm, version and cost parameters of `like` (a configured user's hash), for a
/// password nobody knows: verifying against it costs what verifying a real user's password costs, so a Basic
/// header naming no user can be given the same work. Falls back to egressd's own parameters.
pub fn dummy_phc(like: Option<&str>) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let parsed = like.and_then(|phc| {
        let h = PasswordHash::new(phc).ok()?;
        let algorithm = argon2::Algorithm::new(h.algorithm.as_str()).ok()?;
        let version = argon2::Version::try_from(h.version.unwrap_or(0x13)).ok()?;
        let params = argon2::Params::try_from(&h).ok()?;
        Some(argon2::Argon2::new(algorithm, version, params))
    });
    let a = parsed.unwrap_or_default();
    let Ok(salt) = SaltString::encode_b64(b"egressd-dummy-us") else {
        return String::new();
    };
    a.hash_password(b"no user has this password", &salt)
        .map(|h| h.to_string())
        .unwrap_or_default()
}

/// The argon2id PHC string of a password (argon2's recommended parameters: 19 MiB, 2 passes, 1 lane), for
/// `clients[].users`. `salt` must be random (16 bytes from the system's generator).
pub fn hash_password(password: &str, salt: &[u8; 16]) -> Result<String, String> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    if password.is_empty() {
        return Err("the password is empty".into());
    }
    let salt = SaltString::encode_b64(salt).map_err(|e| format!("salt: {e}"))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("hashing the password: {e}"))
}

/// Does the token's SHA-256 equal one of the stored digests? Every digest is compared, in constant time.
pub fn token_matches(stored: &[[u8; 32]], token: &str) -> bool {
    let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    stored
        .iter()
        .fold(subtle::Choice::from(0), |acc, s| acc | s.ct_eq(&digest))
        .into()
}

/// SHA-256 of a header value, the key of the cache of verified credentials.
pub fn cache_key(header: &ProxyAuth) -> [u8; 32] {
    Sha256::digest(header.0.as_bytes()).into()
}

/// Parse a 64-digit hex SHA-256 digest.
pub fn parse_sha256_hex(text: &str) -> Option<[u8; 32]> {
    let t = text.trim();
    if t.len() != 64 || !t.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&t[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Is this an argon2 PHC string egressd can verify against?
pub fn check_phc(phc: &str) -> Result<(), String> {
    let h = PasswordHash::new(phc).map_err(|e| format!("not a PHC hash string ({e})"))?;
    match h.algorithm.as_str() {
        "argon2id" | "argon2i" | "argon2d" => Ok(()),
        other => Err(format!(
            "algorithm {other:?} is not argon2; make one with `argon2` or a password-hash library"
        )),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHasher, SaltString};

    pub fn hash(password: &str) -> String {
        let params = argon2::Params::new(8, 1, 1, None).unwrap();
        let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        a.hash_password(password.as_bytes(), &salt)
            .unwrap()
            .to_string()
    }

    #[test]
    fn hashed_passwords_verify_and_are_accepted_in_config() {
        let phc = hash_password("s3cr:et", &[7; 16]).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(check_phc(&phc).is_ok());
        assert!(password_matches(&phc, "s3cr:et"));
        assert!(!password_matches(&phc, "s3cr:eT"));
        // Another salt, another string for the same password.
        assert_ne!(hash_password("s3cr:et", &[8; 16]).unwrap(), phc);
        assert!(hash_password("", &[7; 16]).is_err());
    }

    #[test]
    fn dummy_hash_has_the_parameters_of_the_real_one() {
        let real = hash("right");
        let dummy = dummy_phc(Some(&real));
        assert!(dummy.starts_with("$argon2id$v=19$m=8,t=1,p=1$"), "{dummy}");
        assert!(!password_matches(&dummy, "right"));
        let default = dummy_phc(None);
        assert!(
            default.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{default}"
        );
    }

    #[test]
    fn basic_and_bearer_headers() {
        let h = ProxyAuth("Basic Ym9iOnMzY3I6ZXQ=".into()); // bob:s3cr:et
        match parse(&h) {
            Presented::Basic { user, password } => {
                assert_eq!((user.as_str(), password.as_str()), ("bob", "s3cr:et"))
            }
            _ => panic!("not basic"),
        }
        assert!(
            matches!(parse(&ProxyAuth("bearer abc".into())), Presented::Bearer(t) if t == "abc")
        );
        for bad in ["Basic !!!", "Basic Ym9i", "Digest x", "Bearer ", ""] {
            assert!(
                matches!(parse(&ProxyAuth(bad.into())), Presented::Malformed),
                "{bad}"
            );
        }
        assert_eq!(format!("{h:?}"), "ProxyAuth(<redacted>)");
    }

    #[test]
    fn certificate_patterns() {
        let g = GroupCredentials {
            certs: vec!["spiffe://td/ns/a/*".into(), "dns:agent.example".into()],
            ..Default::default()
        };
        let uri = |v: &str| CertName::Uri(v.into());
        let dns = |v: &str| CertName::Dns(v.into());
        let cn = |v: &str| CertName::Cn(v.into());
        let m = |names: &[CertName]| g.cert_matches(names);
        assert!(m(&[uri("spiffe://td/ns/a/sa/x")]));
        assert!(m(&[cn("x"), dns("agent.example")]));
        assert!(!m(&[
            uri("spiffe://td/ns/b/sa/x"),
            dns("agent.example.evil")
        ]));
        assert!(!m(&[uri("spiffe://td/ns/a")]));
        // Typed: a URI SAN spelled like a DNS name, or a CN, is not that DNS name.
        assert!(!m(&[uri("dns:agent.example")]));
        assert!(!m(&[cn("dns:agent.example"), cn("agent.example")]));
        let explicit = GroupCredentials {
            certs: vec!["uri:dns:agent.example".into(), "cn:ops".into()],
            ..Default::default()
        };
        assert!(explicit.cert_matches(&[uri("dns:agent.example")]));
        assert!(!explicit.cert_matches(&[dns("agent.example")]));
        assert!(explicit.cert_matches(&[cn("ops")]));
        assert!(!explicit.cert_matches(&[uri("cn:ops")]));
        assert_eq!(dns("a.example").to_string(), "dns:a.example");
        assert_eq!(uri("spiffe://x").to_string(), "spiffe://x");
        assert!(
            g.is_empty(),
            "certificates are not Proxy-Authorization credentials"
        );
    }

    #[test]
    fn passwords_and_tokens_verify() {
        let phc = hash("right");
        assert!(check_phc(&phc).is_ok());
        assert!(password_matches(&phc, "right"));
        assert!(!password_matches(&phc, "wrong"));
        assert!(check_phc("$2y$10$abc").is_err());
        let digest = parse_sha256_hex(&format!("{:x}", Sha256::digest(b"tok"))).unwrap();
        assert!(token_matches(&[[0; 32], digest], "tok"));
        assert!(!token_matches(&[digest], "tok2"));
        assert!(parse_sha256_hex("abc").is_none());
    }
}
