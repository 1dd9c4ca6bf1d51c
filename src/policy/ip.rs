//! IP/CIDR index: one hash map per address family keyed by (prefix length, masked address). A lookup probes
//! only the prefix lengths that some rule uses (at most 33 for IPv4, 129 for IPv6), whatever the rule count.

use super::RuleRef;
use ipnet::IpNet;
use std::collections::HashMap;
use std::net::IpAddr;

#[derive(Default)]
pub struct IpIndex {
    v4: Family,
    v6: Family,
}

#[derive(Default)]
struct Family {
    nets: HashMap<(u8, u128), Vec<RuleRef>>,
    /// Prefix lengths present, longest first.
    prefixes: Vec<u8>,
}

impl Family {
    fn add(&mut self, bits: u32, addr: u128, prefix: u8, r: RuleRef) {
        self.nets
            .entry((prefix, mask(addr, bits, prefix)))
            .or_default()
            .push(r);
        if !self.prefixes.contains(&prefix) {
            self.prefixes.push(prefix);
            self.prefixes.sort_unstable_by(|a, b| b.cmp(a));
        }
    }

    fn for_each_match(&self, bits: u32, addr: u128, f: &mut impl FnMut(&RuleRef)) {
        for &p in &self.prefixes {
            if let Some(refs) = self.nets.get(&(p, mask(addr, bits, p))) {
                refs.iter().for_each(&mut *f);
            }
        }
    }
}

fn mask(addr: u128, bits: u32, prefix: u8) -> u128 {
    if prefix == 0 {
        return 0;
    }
    let width_mask = if bits == 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    };
    let keep = width_mask << (bits - u32::from(prefix));
    addr & keep & width_mask
}

impl IpIndex {
    pub fn add(&mut self, net: IpNet, r: RuleRef) {
        match net {
            IpNet::V4(n) => self
                .v4
                .add(32, u32::from(n.network()).into(), n.prefix_len(), r),
            IpNet::V6(n) => self.v6.add(128, u128::from(n.network()), n.prefix_len(), r),
        }
    }

    /// IPv4-mapped IPv6 targets (::ffff:a.b.c.d) are matched as the IPv4 address they carry.
    pub fn for_each_match(&self, ip: IpAddr, mut f: impl FnMut(&RuleRef)) {
        match ip {
            IpAddr::V4(v4) => self.v4.for_each_match(32, u32::from(v4).into(), &mut f),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => self.v4.for_each_match(32, u32::from(v4).into(), &mut f),
                None => self.v6.for_each_match(128, u128::from(v6), &mut f),
            },
        }
    }
}
