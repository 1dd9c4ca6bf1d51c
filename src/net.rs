//! Socket addresses as egressd compares them, and listening sockets as it binds them.
//!
//! A listener on `[::]` is dual-stack: IPv4 clients arrive as IPv4-mapped IPv6 addresses
//! (`[::ffff:10.0.0.7]:47532`). Every address egressd remembers or matches (client CIDRs, the loop guard,
//! logs) is the canonical one, so an IPv4 client is `10.0.0.7` whichever listener it came through.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};

/// `addr` with an IPv4-mapped IPv6 address turned into the IPv4 address it carries.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// A listening TCP socket on `addr`, non-blocking, with `SO_REUSEADDR`, and `configure` applied before
/// `bind`. On `[::]` it accepts IPv4 too (`IPV6_V6ONLY` off, whatever `net.ipv6.bindv6only` says); on a
/// host without IPv6 (`ipv6.disable=1`: no IPv6 sockets at all) `[::]` falls back to `0.0.0.0` with a
/// warning, so one manifest serves IPv4-only, IPv6-only and dual-stack clusters.
pub fn listen(
    addr: SocketAddr,
    backlog: i32,
    configure: impl Fn(&socket2::Socket),
) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let open = |addr: SocketAddr| -> io::Result<std::net::TcpListener> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_nonblocking(true)?;
        configure(&socket);
        if addr.is_ipv6() && addr.ip().is_unspecified() {
            socket.set_only_v6(false)?;
        }
        socket.bind(&addr.into())?;
        socket.listen(backlog)?;
        Ok(socket.into())
    };
    match open(addr) {
        Err(e) if addr.is_ipv6() && addr.ip().is_unspecified() && no_ipv6(&e) => {
            let v4 = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), addr.port());
            tracing::warn!(
                listen = %addr,
                instead = %v4,
                error = %e,
                "this host has no IPv6; listening on IPv4 only"
            );
            open(v4)
        }
        other => other,
    }
}

/// The error of opening an IPv6 socket where the kernel has no IPv6.
fn no_ipv6(e: &io::Error) -> bool {
    rustix::io::Errno::from_io_error(e) == Some(rustix::io::Errno::AFNOSUPPORT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv6Addr, TcpStream};

    #[test]
    fn mapped_addresses_become_ipv4() {
        let mapped: SocketAddr = "[::ffff:10.200.2.1]:47532".parse().unwrap();
        assert_eq!(canonical(mapped), "10.200.2.1:47532".parse().unwrap());
        let v6: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
        assert_eq!(canonical(v6), v6);
        let v4: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(canonical(v4), v4);
    }

    /// `[::]` takes IPv4 and IPv6 clients even where the system default is IPv6-only.
    #[test]
    fn an_unspecified_ipv6_listener_is_dual_stack() {
        let any: SocketAddr = (Ipv6Addr::UNSPECIFIED, 0).into();
        let listener = listen(any, 16, |s| {
            // As if net.ipv6.bindv6only were 1: `listen` must turn it off again.
            s.set_only_v6(true).unwrap();
        })
        .unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(false).unwrap();
        let v4 = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
        let (_, peer) = listener.accept().unwrap();
        assert_eq!(
            canonical(peer),
            v4.local_addr().unwrap(),
            "an IPv4 client arrives v4-mapped: {peer}"
        );
        assert_eq!(canonical(peer).ip(), IpAddr::from(Ipv4Addr::LOCALHOST));
        let v6 = TcpStream::connect((Ipv6Addr::LOCALHOST, port)).unwrap();
        let (_, peer) = listener.accept().unwrap();
        assert_eq!(peer, v6.local_addr().unwrap());
    }
}
