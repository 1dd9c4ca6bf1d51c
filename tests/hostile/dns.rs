//! A scriptable DNS responder on loopback (UDP): per name, A/AAAA/CNAME records, SERVFAIL, or silence. Every
//! query it receives is recorded.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use tokio::net::UdpSocket;

#[derive(Clone, Debug)]
pub enum Rec {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    /// An alias; the records of the target name are added to the answer (as a recursive server does).
    Cname(&'static str),
}

#[derive(Clone, Debug)]
pub enum Zone {
    Records(Vec<Rec>),
    ServFail,
    /// Never answers.
    Silent,
}

pub struct Dns {
    pub addr: SocketAddr,
    pub queries: Arc<Mutex<Vec<(String, u16)>>>,
}

const TYPE_A: u16 = 1;
const TYPE_CNAME: u16 = 5;
const TYPE_AAAA: u16 = 28;

pub async fn start(zones: Vec<(&'static str, Zone)>) -> Dns {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    let queries = Arc::new(Mutex::new(Vec::new()));
    let seen = queries.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        loop {
            let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
                return;
            };
            let Some((name, qtype, qend)) = question(&buf[..n]) else {
                continue;
            };
            seen.lock().unwrap().push((name.clone(), qtype));
            let zone = zones.iter().find(|(z, _)| *z == name).map(|(_, z)| z);
            let (rcode, answers) = match zone {
                Some(Zone::Silent) => continue,
                Some(Zone::ServFail) => (2, Vec::new()),
                Some(Zone::Records(_)) => (0, answer(&zones, &name, qtype)),
                None => (3, Vec::new()),
            };
            let mut resp = Vec::new();
            resp.extend_from_slice(&buf[..2]);
            resp.extend_from_slice(&[0x81, 0x80 | rcode]);
            resp.extend_from_slice(&[0, 1]);
            resp.extend_from_slice(&(answers.len() as u16).to_be_bytes());
            resp.extend_from_slice(&[0, 0, 0, 0]);
            resp.extend_from_slice(&buf[12..qend]);
            for rr in answers {
                resp.extend_from_slice(&rr);
            }
            let _ = sock.send_to(&resp, peer).await;
        }
    });
    Dns { addr, queries }
}

fn question(q: &[u8]) -> Option<(String, u16, usize)> {
    let mut i = 12;
    let mut labels = Vec::new();
    while *q.get(i)? != 0 {
        let len = q[i] as usize;
        labels.push(String::from_utf8_lossy(q.get(i + 1..i + 1 + len)?).to_lowercase());
        i += 1 + len;
    }
    let qtype = u16::from_be_bytes([*q.get(i + 1)?, *q.get(i + 2)?]);
    Some((labels.join("."), qtype, i + 5))
}

fn encode_name(name: &str) -> Vec<u8> {
    let mut v = Vec::new();
    for l in name.split('.') {
        v.push(l.len() as u8);
        v.extend_from_slice(l.as_bytes());
    }
    v.push(0);
    v
}

fn rr(owner: &str, rtype: u16, data: &[u8]) -> Vec<u8> {
    let mut v = encode_name(owner);
    v.extend_from_slice(&rtype.to_be_bytes());
    v.extend_from_slice(&[0, 1, 0, 0, 0, 60]);
    v.extend_from_slice(&(data.len() as u16).to_be_bytes());
    v.extend_from_slice(data);
    v
}

/// The records answering (name, qtype), following CNAMEs through the zones (at most 8 deep).
fn answer(zones: &[(&'static str, Zone)], name: &str, qtype: u16) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut owner = name.to_string();
    for _ in 0..8 {
        let Some((_, Zone::Records(recs))) = zones.iter().find(|(z, _)| *z == owner) else {
            break;
        };
        let mut next = None;
        for r in recs {
            match r {
                Rec::A(a) if qtype == TYPE_A => out.push(rr(&owner, TYPE_A, &a.octets())),
                Rec::Aaaa(a) if qtype == TYPE_AAAA => out.push(rr(&owner, TYPE_AAAA, &a.octets())),
                Rec::Cname(t) => {
                    out.push(rr(&owner, TYPE_CNAME, &encode_name(t)));
                    next = Some(t.to_string());
                }
                _ => {}
            }
        }
        match next {
            Some(n) => owner = n,
            None => break,
        }
    }
    out
}

/// Run `test` on a runtime of its own inside a new network namespace holding only a loopback interface, so
/// no packet can leave the machine whatever the proxy tries. Where namespaces cannot be created (no
/// CAP_SYS_ADMIN), it runs in the current namespace and says so; `test` gets `false` then and must not
/// make the proxy dial anything but loopback.
pub fn in_private_netns<F>(test: impl FnOnce(bool) -> F + Send + 'static)
where
    F: std::future::Future<Output = ()>,
{
    std::thread::spawn(move || {
        // SAFETY: unshare only changes this thread's namespace membership.
        let isolated = unsafe { libc::unshare(libc::CLONE_NEWNET) } == 0;
        if isolated {
            loopback_up();
        } else {
            eprintln!("note: no network namespace (unshare failed); running in the host namespace");
        }
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(test(isolated));
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e));
}

/// `ip link set lo up` for the calling thread's network namespace.
fn loopback_up() {
    // SAFETY: plain socket and interface-flag ioctls on a zeroed ifreq naming "lo".
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (d, s) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
            *d = *s as libc::c_char;
        }
        assert_eq!(libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr), 0);
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        assert_eq!(
            libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr),
            0,
            "cannot bring up lo: {}",
            std::io::Error::last_os_error()
        );
        libc::close(fd);
    }
}
