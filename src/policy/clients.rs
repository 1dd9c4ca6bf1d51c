//! Client identity: named client groups and which of them a request belongs to. A group is defined by the
//! source addresses (CIDRs) its clients connect from. A request's identity is the set of groups it belongs to;
//! rules scoped with `clients:` apply only to requests whose identity contains one of their groups.

use ipnet::IpNet;
use std::net::IpAddr;
use std::sync::Arc;

/// Index of a client group, in config order.
pub type GroupId = u16;

/// The client groups a request belongs to (sorted, no duplicates). Empty: an unidentified client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    groups: Vec<GroupId>,
}

impl Identity {
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Is the request in at least one of `groups`?
    pub fn in_any(&self, groups: &[GroupId]) -> bool {
        groups.iter().any(|g| self.groups.binary_search(g).is_ok())
    }

    fn add(&mut self, g: GroupId) {
        if let Err(at) = self.groups.binary_search(&g) {
            self.groups.insert(at, g);
        }
    }
}

struct Group {
    name: Arc<str>,
    cidrs: Vec<IpNet>,
}

/// The configured client groups.
#[derive(Default)]
pub struct ClientGroups {
    groups: Vec<Group>,
}

impl ClientGroups {
    /// Add a group; the caller has checked that names are unique.
    pub fn add(&mut self, name: &str, cidrs: Vec<IpNet>) -> GroupId {
        self.groups.push(Group {
            name: name.into(),
            cidrs: cidrs.into_iter().map(|n| n.trunc()).collect(),
        });
        (self.groups.len() - 1) as GroupId
    }

    pub fn len(&self) -> usize {
        self.groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    pub fn find(&self, name: &str) -> Option<GroupId> {
        self.groups
            .iter()
            .position(|g| &*g.name == name)
            .map(|i| i as GroupId)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.groups.iter().map(|g| &*g.name)
    }

    /// The groups whose CIDRs contain the client's source address (IPv4-mapped IPv6 counts as IPv4).
    pub fn identify(&self, source: IpAddr) -> Identity {
        let ip = source.to_canonical();
        let mut id = Identity::default();
        for (i, g) in self.groups.iter().enumerate() {
            if g.cidrs.iter().any(|n| n.contains(&ip)) {
                id.add(i as GroupId);
            }
        }
        id
    }

    /// The identity of a member of the named group only (`egressd check --client NAME`).
    pub fn member_of(&self, name: &str) -> Option<Identity> {
        let mut id = Identity::default();
        id.add(self.find(name)?);
        Some(id)
    }

    /// The group names of an identity, in config order (for the decision log).
    pub fn names_of(&self, id: &Identity) -> Vec<Arc<str>> {
        id.groups
            .iter()
            .map(|&g| self.groups[g as usize].name.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups() -> ClientGroups {
        let mut g = ClientGroups::default();
        g.add("castai", vec!["10.1.0.0/16".parse().unwrap()]);
        g.add(
            "cloudcasa",
            vec!["10.2.0.0/16".parse().unwrap(), "fd00::/8".parse().unwrap()],
        );
        g.add("nodes", vec!["10.0.0.0/8".parse().unwrap()]);
        g
    }

    #[test]
    fn source_address_selects_every_containing_group() {
        let g = groups();
        let names = |ip: &str| g.names_of(&g.identify(ip.parse().unwrap()));
        let s = |v: Vec<Arc<str>>| v.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(s(names("10.1.2.3")), ["castai", "nodes"]);
        assert_eq!(s(names("10.2.0.1")), ["cloudcasa", "nodes"]);
        assert_eq!(s(names("::ffff:10.2.0.1")), ["cloudcasa", "nodes"]);
        assert_eq!(s(names("fd00::1")), ["cloudcasa"]);
        assert!(g.identify("192.168.1.1".parse().unwrap()).is_empty());
    }

    #[test]
    fn membership_by_name() {
        let g = groups();
        let id = g.member_of("cloudcasa").unwrap();
        assert!(id.in_any(&[1]) && !id.in_any(&[0, 2]));
        assert!(g.member_of("nosuch").is_none());
    }
}
