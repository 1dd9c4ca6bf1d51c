//! The address a redirected connection was going to before iptables REDIRECT (or DNAT) sent it to egressd,
//! read from the kernel's connection tracking (SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST).

use std::io;
use std::net::SocketAddr;
use tokio::net::TcpStream;

#[cfg(target_os = "linux")]
pub fn original_dst(stream: &TcpStream) -> io::Result<SocketAddr> {
    let sock = socket2::SockRef::from(stream);
    let addr = match stream.local_addr()? {
        // IPv4 clients of a dual-stack listener are tracked as IPv4 connections.
        SocketAddr::V6(v6) if v6.ip().to_ipv4_mapped().is_none() => sock.original_dst_ipv6()?,
        _ => sock.original_dst()?,
    };
    addr.as_socket().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "the original destination is not an IP address",
        )
    })
}

#[cfg(not(target_os = "linux"))]
pub fn original_dst(_stream: &TcpStream) -> io::Result<SocketAddr> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "SO_ORIGINAL_DST exists only on Linux",
    ))
}
