//! The TLS listener and the admin listener.

use super::*;

/// The admin listener, which must not share a port with the proxy listeners (`proxy`): the same port on
/// the same address, or on any address when either side is a wildcard (0.0.0.0, [::]).
pub(super) fn compile_admin(
    raw: &RawConfig,
    proxy: &[SocketAddr],
    errs: &mut Errors,
) -> Option<SocketAddr> {
    let text = raw.admin.listen.as_deref().unwrap_or(DEFAULT_ADMIN_LISTEN);
    if text == "off" {
        return None;
    }
    match text.parse::<SocketAddr>() {
        Ok(a)
            if a.port() != 0
                && proxy
                    .iter()
                    .any(|p| crate::config::transparent::overlaps(*p, a)) =>
        {
            errs.push(
                "admin.listen",
                format!("{a} shares its port with a proxy listener; the admin endpoints need their own port"),
            );
            None
        }
        Ok(a) => Some(a),
        Err(_) => {
            errs.push(
                "admin.listen",
                format!("{text:?} is not an address:port such as 127.0.0.1:9090 (or \"off\")"),
            );
            None
        }
    }
}

pub(super) fn compile_tls_listener(
    raw: &RawConfig,
    listen: SocketAddr,
    errs: &mut Errors,
) -> Option<(SocketAddr, Arc<rustls::ServerConfig>)> {
    let (cert, key) = (raw.tls.cert.as_deref(), raw.tls.key.as_deref());
    let Some(addr_text) = raw.listen_tls.as_deref() else {
        if cert.is_some() || key.is_some() {
            errs.push(
                "tls",
                "tls.cert and tls.key are only used with listen_tls; set listen_tls too",
            );
        }
        if raw.tls.client_ca.is_some() || raw.tls.client_auth.is_some() {
            errs.push(
                "tls.client_ca",
                "client certificates are asked for on listen_tls only; set listen_tls too",
            );
        }
        return None;
    };
    let addr = addr_text
        .parse::<SocketAddr>()
        .map_err(|_| {
            errs.push(
                "listen_tls",
                format!("{addr_text:?} is not an address:port such as 0.0.0.0:3129"),
            )
        })
        .ok();
    if let Some(a) =
        addr.filter(|a| a.port() != 0 && crate::config::transparent::overlaps(*a, listen))
    {
        errs.push(
            "listen_tls",
            format!(
                "{a} shares its port with listen ({listen}); give the TLS listener its own port"
            ),
        );
    }
    let (Some(cert), Some(key)) = (cert, key) else {
        errs.push("tls", "listen_tls needs tls.cert and tls.key (PEM files)");
        return None;
    };
    let required = match raw.tls.client_auth.as_deref() {
        None | Some("optional") => false,
        Some("required") => true,
        Some(other) => {
            errs.push(
                "tls.client_auth",
                format!("{other:?} is not one of: optional, required"),
            );
            false
        }
    };
    if raw.tls.client_auth.is_some() && raw.tls.client_ca.is_none() {
        errs.push(
            "tls.client_auth",
            "client certificates need tls.client_ca (the CA bundle that issues them)",
        );
    }
    let client_auth = raw
        .tls
        .client_ca
        .as_deref()
        .map(|ca| (std::path::Path::new(ca), required));
    match crate::tls_files::server_config(
        std::path::Path::new(cert),
        std::path::Path::new(key),
        client_auth,
    ) {
        Ok(cfg) => addr.map(|a| (a, cfg)),
        Err((which, msg)) => {
            errs.push(format!("tls.{which}"), msg);
            None
        }
    }
}

/// `proxy_protocol:` → which forward listeners read a PROXY header, from which peers.
pub(super) fn compile_proxy_protocol(raw: &RawConfig, errs: &mut Errors) -> ProxyProtocol {
    let Some(p) = &raw.proxy_protocol else {
        return ProxyProtocol::default();
    };
    let mut trusted = Vec::new();
    for (i, c) in p.trusted.iter().enumerate() {
        match c
            .parse::<IpNet>()
            .or_else(|_| c.parse::<IpAddr>().map(IpNet::from))
        {
            Ok(net) => trusted.push(net.trunc()),
            Err(_) => errs.push(
                format!("proxy_protocol.trusted[{i}]"),
                format!("{c:?} is not a CIDR or an IP address (the load balancers' addresses)"),
            ),
        }
    }
    if p.trusted.is_empty() {
        errs.push(
            "proxy_protocol.trusted",
            "name the load balancers (CIDRs) that send PROXY headers; without them no header is believed",
        );
    }
    let mut out = ProxyProtocol {
        trusted,
        plain: false,
        tls: false,
    };
    match &p.listeners {
        None => {
            out.plain = true;
            out.tls = raw.listen_tls.is_some();
        }
        Some(names) => {
            for (i, name) in names.iter().enumerate() {
                match name.as_str() {
                    "listen" => out.plain = true,
                    "listen_tls" if raw.listen_tls.is_some() => out.tls = true,
                    "listen_tls" => errs.push(
                        format!("proxy_protocol.listeners[{i}]"),
                        "listen_tls is not configured",
                    ),
                    other => errs.push(
                        format!("proxy_protocol.listeners[{i}]"),
                        format!("{other:?} is not one of: listen, listen_tls (transparent listeners take no PROXY header)"),
                    ),
                }
            }
        }
    }
    out
}
