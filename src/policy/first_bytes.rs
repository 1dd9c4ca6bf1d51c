//! What a client's first bytes in a tunnel mean (pure): a ClientHello to judge, plain bytes where plain bytes
//! may pass, a refusal with its reason, or nothing decisive. One table for the three places a hello is read:
//! inside a CONNECT tunnel, on the transparent TLS listener, and after a server's HelloRetryRequest.

use super::tls::{Hello, TlsChecks};
use crate::reason::{Reason, Refusal};

/// What reading the first bytes found.
#[derive(Debug, Clone, Copy)]
pub enum Seen<'a> {
    Hello(Hello<'a>),
    /// Not a TLS handshake record.
    NotTls,
    /// The upstream spoke first (nothing was read from the client).
    ServerFirst,
    /// TLS-looking but malformed.
    Invalid(&'static str),
    /// Still incomplete at `client_hello.max_bytes`.
    TooLarge,
    /// Nothing decisive within the wait.
    Timeout,
    /// The client closed before anything decisive.
    Closed,
    /// Shutdown cut the wait.
    Cut,
}

/// Where the bytes were read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Inside an allowed CONNECT tunnel; `required`: the tunnel must carry TLS.
    Connect { required: bool },
    /// On `listen_transparent`, which carries TLS only.
    Transparent,
    /// The second ClientHello, after a HelloRetryRequest.
    Retry,
}

/// Nothing decisive: no request to judge (transparent), or a tunnel that ends unused (CONNECT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quiet {
    /// The client left.
    Left,
    /// The client stayed silent for the whole wait.
    Silent,
    /// Shutdown cut the wait.
    Cut,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opening<'a> {
    /// A complete ClientHello, to judge.
    Hello(Hello<'a>),
    /// Plain bytes (or none, the server speaking first) where TLS is not required.
    Plain,
    Refuse(Refusal),
    Quiet(Quiet),
}

/// Classify what was read at `stage`; `started`: some bytes arrived from the client.
pub fn classify<'a>(
    stage: Stage,
    seen: Seen<'a>,
    started: bool,
    checks: &TlsChecks,
) -> Opening<'a> {
    let refuse = |reason, detail: String| Opening::Refuse(Refusal::new(reason, detail));
    let second = if stage == Stage::Retry { "second " } else { "" };
    match (stage, seen) {
        (_, Seen::Hello(h)) => Opening::Hello(h),
        (_, Seen::Cut) => Opening::Quiet(Quiet::Cut),
        (_, Seen::Invalid(why)) if stage == Stage::Retry => refuse(
            Reason::InvalidClientHello,
            format!("malformed second ClientHello (after a HelloRetryRequest): {why}"),
        ),
        (_, Seen::Invalid(why)) => refuse(
            Reason::InvalidClientHello,
            format!("malformed ClientHello: {why}"),
        ),
        (_, Seen::TooLarge) => refuse(
            Reason::InvalidClientHello,
            format!(
                "{second}ClientHello larger than client_hello.max_bytes ({})",
                checks.hello_max_bytes
            ),
        ),
        // --- inside a CONNECT tunnel ---
        (Stage::Connect { required: true }, Seen::NotTls) => refuse(
            Reason::DeniedNotTls,
            "the first bytes are not a TLS ClientHello and this tunnel carries TLS only (port 443, or the \
             rule's tls: true); set tls: false on the rule to allow plain TCP"
                .into(),
        ),
        (Stage::Connect { .. }, Seen::NotTls | Seen::ServerFirst) => Opening::Plain,
        // A hello that was started must finish, whatever the port; silence is only fatal where TLS is required.
        (Stage::Connect { required }, Seen::Timeout) if required || started => refuse(
            Reason::ClientHelloTimeout,
            format!(
                "no complete ClientHello within client_hello.timeout ({:?})",
                checks.hello_timeout
            ),
        ),
        (Stage::Connect { .. }, Seen::Timeout) => Opening::Quiet(Quiet::Silent),
        (Stage::Connect { .. }, Seen::Closed) => Opening::Quiet(Quiet::Left),
        // --- on the transparent TLS listener ---
        (Stage::Transparent, Seen::NotTls | Seen::ServerFirst) => refuse(
            Reason::DeniedNotTls,
            "the first bytes are not a TLS ClientHello; listen_transparent carries TLS only (redirect \
             plain HTTP to listen_transparent_http)"
                .into(),
        ),
        (Stage::Transparent, Seen::Closed) if !started => Opening::Quiet(Quiet::Left),
        (Stage::Transparent, Seen::Timeout) if !started => Opening::Quiet(Quiet::Silent),
        (Stage::Transparent, Seen::Timeout) => refuse(
            Reason::ClientHelloTimeout,
            format!(
                "no complete ClientHello within client_hello.timeout ({:?})",
                checks.hello_timeout
            ),
        ),
        (Stage::Transparent, Seen::Closed) => refuse(
            Reason::InvalidClientHello,
            "the client closed the connection in the middle of its ClientHello".into(),
        ),
        // --- the second ClientHello ---
        (Stage::Retry, Seen::NotTls) => refuse(
            Reason::InvalidClientHello,
            "after the HelloRetryRequest the client sent something other than a ClientHello".into(),
        ),
        (Stage::Retry, Seen::Timeout) => refuse(
            Reason::ClientHelloTimeout,
            format!(
                "no second ClientHello within client_hello.timeout ({:?}) after the HelloRetryRequest",
                checks.hello_timeout
            ),
        ),
        (Stage::Retry, Seen::Closed | Seen::ServerFirst) => Opening::Quiet(Quiet::Left),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::tls::{EchMode, SniMode};
    use std::time::Duration;

    fn checks() -> TlsChecks {
        TlsChecks {
            sni: SniMode::Strict,
            ech: EchMode::Deny,
            hello_timeout: Duration::from_secs(5),
            hello_max_bytes: 16384,
        }
    }

    fn reason(o: Opening<'_>) -> Option<Reason> {
        match o {
            Opening::Refuse(r) => Some(r.reason),
            _ => None,
        }
    }

    #[test]
    fn one_table_for_every_stage() {
        let c = checks();
        let connect = Stage::Connect { required: true };
        let open = Stage::Connect { required: false };
        // Plain bytes pass only where TLS is not required.
        assert_eq!(
            reason(classify(connect, Seen::NotTls, true, &c)),
            Some(Reason::DeniedNotTls)
        );
        assert_eq!(classify(open, Seen::NotTls, true, &c), Opening::Plain);
        assert_eq!(classify(open, Seen::ServerFirst, false, &c), Opening::Plain);
        assert_eq!(
            reason(classify(Stage::Transparent, Seen::ServerFirst, false, &c)),
            Some(Reason::DeniedNotTls)
        );
        assert_eq!(
            reason(classify(Stage::Retry, Seen::NotTls, true, &c)),
            Some(Reason::InvalidClientHello)
        );
        // Silence: fatal where TLS is required or a hello was started.
        assert_eq!(
            reason(classify(connect, Seen::Timeout, false, &c)),
            Some(Reason::ClientHelloTimeout)
        );
        assert_eq!(
            classify(open, Seen::Timeout, false, &c),
            Opening::Quiet(Quiet::Silent)
        );
        assert_eq!(
            reason(classify(open, Seen::Timeout, true, &c)),
            Some(Reason::ClientHelloTimeout)
        );
        assert_eq!(
            classify(Stage::Transparent, Seen::Timeout, false, &c),
            Opening::Quiet(Quiet::Silent)
        );
        // Leaving mid-hello is a broken hello on the transparent listener, a departure in a tunnel.
        assert_eq!(
            reason(classify(Stage::Transparent, Seen::Closed, true, &c)),
            Some(Reason::InvalidClientHello)
        );
        assert_eq!(
            classify(connect, Seen::Closed, true, &c),
            Opening::Quiet(Quiet::Left)
        );
        for stage in [connect, open, Stage::Transparent, Stage::Retry] {
            assert_eq!(
                classify(stage, Seen::Cut, true, &c),
                Opening::Quiet(Quiet::Cut)
            );
            assert_eq!(
                reason(classify(stage, Seen::TooLarge, true, &c)),
                Some(Reason::InvalidClientHello)
            );
        }
    }
}
