//! A tiny DNS responder on 127.0.0.1 (UDP) for the proxies that can only learn a name's address from a DNS
//! server (Smokescreen): an `A` query for the origin's name is answered with the origin's address, any other
//! name with NXDOMAIN, and other record types of the origin's name (AAAA) with an empty answer. Messages are
//! read and written with hickory's protocol types.

use hickory_resolver::proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_resolver::proto::rr::rdata::A;
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// The TTL of the origin's address record.
const TTL: u32 = 300;

/// The one name the responder knows, and its address.
#[derive(Debug, Clone)]
pub struct Zone {
    name: Name,
    addr: Ipv4Addr,
}

impl Zone {
    pub fn new(name: &str, addr: Ipv4Addr) -> Result<Zone, String> {
        let name = Name::from_str(name).map_err(|e| format!("DNS name {name:?}: {e}"))?;
        Ok(Zone { name, addr })
    }

    /// The response to the DNS message `query`, or none for what is not a standard query (garbage,
    /// responses, other op codes), which a server drops.
    pub fn answer(&self, query: &[u8]) -> Option<Vec<u8>> {
        let request = Message::from_vec(query).ok()?;
        if request.message_type() != MessageType::Query || request.op_code() != OpCode::Query {
            return None;
        }
        let mut response = Message::new();
        response
            .set_id(request.id())
            .set_message_type(MessageType::Response)
            .set_op_code(OpCode::Query)
            .set_authoritative(true)
            .set_recursion_desired(request.recursion_desired())
            .set_recursion_available(true);
        let Some(q) = request.query() else {
            response.set_response_code(ResponseCode::FormErr);
            return response.to_vec().ok();
        };
        response.add_query(q.clone());
        if !q.name().eq_ignore_root(&self.name) {
            response.set_response_code(ResponseCode::NXDomain);
        } else if q.query_type() == RecordType::A {
            response.add_answer(Record::from_rdata(
                q.name().clone(),
                TTL,
                RData::A(A(self.addr)),
            ));
        }
        response.to_vec().ok()
    }
}

/// A running responder; it stops when dropped.
pub struct DnsStub {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for DnsStub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Answer for `zone` on a free UDP port of 127.0.0.1.
pub async fn start(zone: Zone) -> io::Result<DnsStub> {
    let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
    let addr = socket.local_addr()?;
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                continue;
            };
            if let Some(reply) = zone.answer(&buf[..n]) {
                let _ = socket.send_to(&reply, peer).await;
            }
        }
    });
    Ok(DnsStub { addr, task })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::proto::op::Query;

    fn query(name: &str, rtype: RecordType) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(4242)
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(true)
            .add_query(Query::query(Name::from_str(name).unwrap(), rtype));
        m.to_vec().unwrap()
    }

    fn zone() -> Zone {
        Zone::new("origin.egressd.test", Ipv4Addr::LOCALHOST).unwrap()
    }

    fn addresses(m: &Message) -> Vec<Ipv4Addr> {
        m.answers()
            .iter()
            .filter_map(|r| match r.data() {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_origin_name_is_loopback() {
        for name in ["origin.egressd.test.", "Origin.Egressd.Test"] {
            let reply = zone().answer(&query(name, RecordType::A)).unwrap();
            let m = Message::from_vec(&reply).unwrap();
            assert_eq!(m.id(), 4242);
            assert_eq!(m.message_type(), MessageType::Response);
            assert_eq!(m.response_code(), ResponseCode::NoError);
            assert_eq!(m.queries().len(), 1, "the question is echoed");
            assert_eq!(addresses(&m), [Ipv4Addr::LOCALHOST], "{name}");
        }
    }

    #[test]
    fn the_origin_has_no_ipv6_address() {
        let reply = zone()
            .answer(&query("origin.egressd.test.", RecordType::AAAA))
            .unwrap();
        let m = Message::from_vec(&reply).unwrap();
        assert_eq!(m.response_code(), ResponseCode::NoError);
        assert!(m.answers().is_empty());
    }

    #[test]
    fn other_names_do_not_exist() {
        for name in [
            "denied.egressd.test.",
            "egressd.test.",
            "x.origin.egressd.test.",
        ] {
            let reply = zone().answer(&query(name, RecordType::A)).unwrap();
            let m = Message::from_vec(&reply).unwrap();
            assert_eq!(m.response_code(), ResponseCode::NXDomain, "{name}");
            assert!(addresses(&m).is_empty(), "{name}");
        }
    }

    #[test]
    fn garbage_and_responses_get_no_reply() {
        assert!(zone().answer(b"\x00\x01garbage").is_none());
        let reply = zone()
            .answer(&query("origin.egressd.test.", RecordType::A))
            .unwrap();
        assert!(zone().answer(&reply).is_none());
    }

    #[tokio::test]
    async fn answers_over_udp() {
        let stub = start(zone()).await.unwrap();
        assert!(stub.addr.ip().is_loopback());
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client
            .send_to(&query("origin.egressd.test.", RecordType::A), stub.addr)
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let (n, _) = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            client.recv_from(&mut buf),
        )
        .await
        .expect("an answer within 5 s")
        .unwrap();
        let m = Message::from_vec(&buf[..n]).unwrap();
        assert_eq!(addresses(&m), [Ipv4Addr::LOCALHOST]);
    }
}
