//! Loading the TLS listener's certificate chain and private key (PEM) into a rustls server configuration, and
//! the client configuration that verifies TLS parent proxies.

use crate::policy::credentials::CertName;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

/// The server configuration for the TLS listener; errors name the key (`cert` or `key`) and say what to fix.
/// How the TLS listener treats client certificates: `Some((ca, required))` verifies them against the CA
/// bundle `ca`; without `required`, clients without a certificate are served too (as unidentified).
pub type ClientAuth<'a> = Option<(&'a Path, bool)>;

pub fn server_config(
    cert: &Path,
    key: &Path,
    client_auth: ClientAuth<'_>,
) -> Result<Arc<rustls::ServerConfig>, (&'static str, String)> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| ("cert", format!("cannot read {}: {e}", cert.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| {
            (
                "cert",
                format!("{} is not a PEM certificate chain: {e}", cert.display()),
            )
        })?;
    if chain.is_empty() {
        return Err((
            "cert",
            format!("{} holds no PEM certificate", cert.display()),
        ));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        (
            "key",
            format!("cannot read a PEM private key from {}: {e}", key.display()),
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ("cert", e.to_string()))?;
    let builder = match client_auth {
        None => builder.with_no_client_auth(),
        Some((ca, required)) => {
            builder.with_client_cert_verifier(client_verifier(ca, required, provider)?)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key_der)
        .map_err(|e| ("key", format!("the key does not fit the certificate: {e}")))?;
    // The proxy speaks HTTP/1.1 (CONNECT) inside TLS; offering h2 would make clients try it.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A verifier of client certificates issued by the CAs in `ca` (PEM bundle).
fn client_verifier(
    ca: &Path,
    required: bool,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, (&'static str, String)> {
    let roots = load_roots(ca).map_err(|e| ("client_ca", e))?;
    let builder =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    let builder = if required {
        builder
    } else {
        builder.allow_unauthenticated()
    };
    builder
        .build()
        .map_err(|e| ("client_ca", format!("{}: {e}", ca.display())))
}

/// The CA certificates of the PEM bundle `ca`; errors say what is wrong with the file.
fn load_roots(ca: &Path) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca)
        .map_err(|e| format!("cannot read {}: {e}", ca.display()))?;
    for c in certs {
        let c = c.map_err(|e| format!("{} is not a PEM CA bundle: {e}", ca.display()))?;
        roots
            .add(c)
            .map_err(|e| format!("{}: unusable CA certificate: {e}", ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{} holds no PEM certificate", ca.display()));
    }
    Ok(roots)
}

/// The client configuration for a TLS (`https://`) parent proxy: its certificate is verified against the CAs
/// in `ca` (PEM bundle), or against the Mozilla roots built into egressd (webpki-roots) without one. Offers
/// only HTTP/1.1: a proxy is asked to CONNECT.
pub fn parent_client_config(ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    client_config(ca, &[b"http/1.1"])
}

/// A TLS client configuration verifying servers against the CAs in `ca` (PEM bundle), or against the Mozilla
/// roots built into egressd (webpki-roots) without one, offering the application protocols `alpn`.
pub fn client_config(
    ca: Option<&Path>,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ClientConfig>, String> {
    let roots = match ca {
        Some(ca) => load_roots(ca)?,
        None => rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        },
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The names a client certificate (DER) identifies its holder by, typed: URI SANs as written
/// (`spiffe://cluster.local/ns/x/sa/y`), DNS SANs as `dns:NAME`, the subject CN as `cn:NAME`.
pub fn certificate_names(der: &[u8]) -> Vec<CertName> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::URI(u) => names.push(CertName::Uri(u.to_string())),
                GeneralName::DNSName(d) => names.push(CertName::Dns(d.to_ascii_lowercase())),
                _ => {}
            }
        }
    }
    for cn in cert.subject().iter_common_name() {
        if let Ok(s) = cn.as_str() {
            names.push(CertName::Cn(s.to_string()));
        }
    }
    names
}
