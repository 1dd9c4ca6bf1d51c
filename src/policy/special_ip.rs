//! Classification of special-purpose IP addresses.
//!
//! The proxy must not be usable to reach loopback, link-local (cloud
//! metadata), private or otherwise non-global destinations, and IPv6 offers
//! several ways to wrap an IPv4 address that a host stack or a translator on
//! the path may unwrap. Each of those forms is looked through here, so that
//! `::ffff:169.254.169.254` is treated like `169.254.169.254`.
//!
//! This runs for every connection, so ranges are kept as pre-computed
//! integer network/mask pairs and matched with plain comparisons; nothing is
//! parsed or allocated at call time.

use std::net::{IpAddr, Ipv6Addr};

/// A special-purpose range that an address belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialRange {
    /// Stable snake_case label, suitable for logs and metrics.
    pub name: &'static str,
    /// The matched range in CIDR notation.
    pub cidr: &'static str,
    /// How an embedded IPv4 address was found, or `None` for a direct hit.
    /// When set, `name` and `cidr` describe the embedded IPv4 address.
    pub via: Option<&'static str>,
}

/// The special-purpose range an address falls into (directly or through an
/// embedded IPv4 address), or `None` if globally routable.
pub fn special_purpose(ip: IpAddr) -> Option<SpecialRange> {
    match ip {
        IpAddr::V4(ip) => special_v4(u32::from(ip)),
        IpAddr::V6(ip) => special_v6(ip),
    }
}

/// Why `ip` may not be dialled, for the log's `detail`: `None` if it is globally routable or covered by one of
/// the `exceptions` (`destinations.allow_cidrs`).
pub fn forbidden(ip: IpAddr, exceptions: &[ipnet::IpNet]) -> Option<String> {
    let range = special_purpose(ip)?;
    if exceptions.iter().any(|n| n.contains(&ip)) {
        return None;
    }
    Some(match range.via {
        Some(via) => format!(
            "{ip} embeds ({via}) an address in {} ({})",
            range.cidr, range.name
        ),
        None => format!("{ip} is in {} ({})", range.cidr, range.name),
    })
}

struct V4Range {
    net: u32,
    mask: u32,
    range: SpecialRange,
}

struct V6Range {
    net: u128,
    mask: u128,
    range: SpecialRange,
}

const fn v4(octets: [u8; 4], prefix: u32, name: &'static str, cidr: &'static str) -> V4Range {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    V4Range {
        net: u32::from_be_bytes(octets),
        mask,
        range: SpecialRange {
            name,
            cidr,
            via: None,
        },
    }
}

const fn v6(segments: [u16; 8], prefix: u32, name: &'static str, cidr: &'static str) -> V6Range {
    let mut net = 0u128;
    let mut i = 0;
    while i < 8 {
        net = (net << 16) | segments[i] as u128;
        i += 1;
    }
    let mask = if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - prefix)
    };
    V6Range {
        net,
        mask,
        range: SpecialRange {
            name,
            cidr,
            via: None,
        },
    }
}

/// IPv4 special-purpose ranges (RFC 6890 and the IANA registry), plus cloud platform endpoints that sit on
/// public addresses (README, "Cloud platform endpoints"). The first
/// match wins, so more specific ranges come before the ranges containing
/// them.
const V4_RANGES: &[V4Range] = &[
    v4([0, 0, 0, 0], 32, "unspecified", "0.0.0.0/32"),
    v4([0, 0, 0, 0], 8, "this_network", "0.0.0.0/8"),
    v4([10, 0, 0, 0], 8, "private", "10.0.0.0/8"),
    // Includes Alibaba Cloud's metadata endpoint 100.100.100.200.
    v4([100, 64, 0, 0], 10, "cgnat", "100.64.0.0/10"),
    v4([127, 0, 0, 0], 8, "loopback", "127.0.0.0/8"),
    // Includes the cloud metadata endpoint 169.254.169.254.
    v4([169, 254, 0, 0], 16, "link_local", "169.254.0.0/16"),
    // Azure's WireServer (platform DNS, DHCP, health probes, VM agent): a public-looking address that only
    // the platform answers, from inside every Azure virtual network.
    v4([168, 63, 129, 16], 32, "cloud_platform", "168.63.129.16/32"),
    v4([172, 16, 0, 0], 12, "private", "172.16.0.0/12"),
    // Includes 192.0.0.192, listed as an Oracle Cloud metadata address.
    v4([192, 0, 0, 0], 24, "ietf_protocol", "192.0.0.0/24"),
    v4([192, 0, 2, 0], 24, "documentation", "192.0.2.0/24"),
    v4([192, 88, 99, 0], 24, "6to4_relay", "192.88.99.0/24"),
    v4([192, 168, 0, 0], 16, "private", "192.168.0.0/16"),
    v4([198, 18, 0, 0], 15, "benchmarking", "198.18.0.0/15"),
    v4([198, 51, 100, 0], 24, "documentation", "198.51.100.0/24"),
    v4([203, 0, 113, 0], 24, "documentation", "203.0.113.0/24"),
    v4([224, 0, 0, 0], 4, "multicast", "224.0.0.0/4"),
    v4([255, 255, 255, 255], 32, "broadcast", "255.255.255.255/32"),
    v4([240, 0, 0, 0], 4, "reserved", "240.0.0.0/4"),
];

/// IPv6 ranges that are special in themselves. Ranges that embed an IPv4
/// address are handled in [`special_v6`] before this table is consulted.
/// The first match wins.
const V6_RANGES: &[V6Range] = &[
    v6(
        [0x64, 0xff9b, 1, 0, 0, 0, 0, 0],
        48,
        "nat64_local",
        "64:ff9b:1::/48",
    ),
    v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64, "discard", "100::/64"),
    v6(
        [0x2001, 2, 0, 0, 0, 0, 0, 0],
        48,
        "benchmarking",
        "2001:2::/48",
    ),
    v6(
        [0x2001, 0x10, 0, 0, 0, 0, 0, 0],
        28,
        "orchid",
        "2001:10::/28",
    ),
    v6(
        [0x2001, 0x20, 0, 0, 0, 0, 0, 0],
        28,
        "orchid_v2",
        "2001:20::/28",
    ),
    v6(
        [0x2001, 0xdb8, 0, 0, 0, 0, 0, 0],
        32,
        "documentation",
        "2001:db8::/32",
    ),
    v6(
        [0x3fff, 0, 0, 0, 0, 0, 0, 0],
        20,
        "documentation",
        "3fff::/20",
    ),
    v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, "unique_local", "fc00::/7"),
    v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, "link_local", "fe80::/10"),
    v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, "site_local", "fec0::/10"),
    v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, "multicast", "ff00::/8"),
    // Only 2000::/3 is allocated for global unicast. The blocks below are
    // the rest of the address space that IANA lists as reserved by the IETF;
    // nothing in them is routable on the internet, so reaching one means a
    // local or misconfigured route.
    v6([0, 0, 0, 0, 0, 0, 0, 0], 8, "reserved", "::/8"),
    v6([0x100, 0, 0, 0, 0, 0, 0, 0], 8, "reserved", "100::/8"),
    v6([0x200, 0, 0, 0, 0, 0, 0, 0], 7, "reserved", "200::/7"),
    v6([0x400, 0, 0, 0, 0, 0, 0, 0], 6, "reserved", "400::/6"),
    v6([0x800, 0, 0, 0, 0, 0, 0, 0], 5, "reserved", "800::/5"),
    v6([0x1000, 0, 0, 0, 0, 0, 0, 0], 4, "reserved", "1000::/4"),
    v6([0x4000, 0, 0, 0, 0, 0, 0, 0], 3, "reserved", "4000::/3"),
    v6([0x6000, 0, 0, 0, 0, 0, 0, 0], 3, "reserved", "6000::/3"),
    v6([0x8000, 0, 0, 0, 0, 0, 0, 0], 3, "reserved", "8000::/3"),
    v6([0xa000, 0, 0, 0, 0, 0, 0, 0], 3, "reserved", "a000::/3"),
    v6([0xc000, 0, 0, 0, 0, 0, 0, 0], 3, "reserved", "c000::/3"),
    v6([0xe000, 0, 0, 0, 0, 0, 0, 0], 4, "reserved", "e000::/4"),
    v6([0xf000, 0, 0, 0, 0, 0, 0, 0], 5, "reserved", "f000::/5"),
    v6([0xf800, 0, 0, 0, 0, 0, 0, 0], 6, "reserved", "f800::/6"),
    v6([0xfe00, 0, 0, 0, 0, 0, 0, 0], 9, "reserved", "fe00::/9"),
];

const V6_UNSPECIFIED: SpecialRange = SpecialRange {
    name: "unspecified",
    cidr: "::/128",
    via: None,
};

const V6_LOOPBACK: SpecialRange = SpecialRange {
    name: "loopback",
    cidr: "::1/128",
    via: None,
};

/// `::ffff:0:0/96`, shifted right by the 32 embedded bits.
const IPV4_MAPPED_PREFIX: u128 = 0xffff;
/// `64:ff9b::/96` (RFC 6052 well-known NAT64 prefix), shifted right by 32.
const NAT64_PREFIX: u128 = 0x0064_ff9b_0000_0000_0000_0000;
/// `2001::/32` (Teredo), shifted right by 96.
const TEREDO_PREFIX: u128 = 0x2001_0000;
/// `2002::/16` (6to4), shifted right by 112.
const SIX_TO_FOUR_PREFIX: u128 = 0x2002;

fn special_v4(ip: u32) -> Option<SpecialRange> {
    V4_RANGES
        .iter()
        .find(|r| ip & r.mask == r.net)
        .map(|r| r.range)
}

/// Classifies an IPv4 address found inside an IPv6 one. A public embedded
/// address yields `None`: the wrapping form is then just another route to a
/// public host.
fn embedded(ip: u32, via: &'static str) -> Option<SpecialRange> {
    special_v4(ip).map(|range| SpecialRange {
        via: Some(via),
        ..range
    })
}

fn special_v6(ip: Ipv6Addr) -> Option<SpecialRange> {
    let bits = u128::from(ip);
    // Truncating casts below deliberately pick out the embedded 32 bits.
    let low32 = bits as u32;

    match bits {
        0 => return Some(V6_UNSPECIFIED),
        1 => return Some(V6_LOOPBACK),
        _ => {}
    }
    if bits >> 32 == IPV4_MAPPED_PREFIX {
        return embedded(low32, "ipv4_mapped");
    }
    if bits >> 32 == 0 {
        // Deprecated IPv4-compatible form (::a.b.c.d); some stacks and
        // tunnels still route it to the IPv4 address.
        return embedded(low32, "ipv4_compatible");
    }
    if bits >> 32 == NAT64_PREFIX {
        return embedded(low32, "nat64");
    }
    if bits >> 96 == TEREDO_PREFIX {
        // RFC 4380: bits 32..64 are the server's IPv4 address, the last 32
        // bits are the client's address with every bit inverted. Either end
        // being special makes the tunnel a way to reach it.
        let server = (bits >> 64) as u32;
        let client = !low32;
        return embedded(server, "teredo_server").or_else(|| embedded(client, "teredo_client"));
    }
    if bits >> 112 == SIX_TO_FOUR_PREFIX {
        // RFC 3056: the IPv4 address of the site follows the 16-bit prefix.
        return embedded((bits >> 80) as u32, "6to4");
    }

    V6_RANGES
        .iter()
        .find(|r| bits & r.mask == r.net)
        .map(|r| r.range)
}

#[cfg(test)]
#[path = "special_ip_tests.rs"]
mod tests;
