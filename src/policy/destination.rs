//! The destination check (pure): which addresses may be dialled. Special-purpose ranges (loopback, private,
//! link-local, metadata, ...) are refused unless `destinations.allow_cidrs` excepts them, or a rule's
//! `private_cidrs` lets its own exact hosts reach them on its ports. Every address a name resolves to is
//! checked: one forbidden answer refuses the whole lookup, so a name that mixes public and private answers
//! cannot be used to reach the private one.

use super::own_addresses::{exempted, OwnAddresses};
use super::special_ip;
use crate::reason::{Reason, Refusal};
use crate::target::{Host, Target};
use ipnet::IpNet;
use std::net::IpAddr;

#[derive(Debug, Clone, Default)]
pub struct Destinations {
    /// `destinations.allow_cidrs`: special-purpose addresses anyone may dial.
    exceptions: Vec<IpNet>,
    /// Rules' `private_cidrs`: private addresses only their own hosts may dial.
    own: Vec<OwnAddresses>,
}

/// An address the check refused, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forbidden {
    pub addr: IpAddr,
    pub refusal: Refusal,
}

impl Destinations {
    pub fn new(exceptions: Vec<IpNet>, own: Vec<OwnAddresses>) -> Self {
        Destinations { exceptions, own }
    }

    /// `None` if `ip` may be dialled for `target` (or for anyone, without a target), else the special-purpose
    /// range it is in.
    pub fn forbidden(&self, target: Option<&Target>, ip: IpAddr) -> Option<String> {
        let why = special_ip::forbidden(ip, &self.exceptions)?;
        if target.is_some_and(|t| exempted(&self.own, t, ip).is_some()) {
            return None;
        }
        Some(why)
    }

    /// Why an IP-literal target may not be dialled by anyone, or `None` for names and for addresses that may.
    pub fn literal(&self, target: &Target) -> Option<String> {
        match target.host {
            Host::Ip(ip) => special_ip::forbidden(ip, &self.exceptions),
            Host::Name(_) => None,
        }
    }

    /// Check every address `target` resolved to (or is).
    pub fn check(&self, target: &Target, addrs: &[IpAddr]) -> Result<(), Forbidden> {
        for &addr in addrs {
            if let Some(why) = self.forbidden(Some(target), addr) {
                return Err(Forbidden {
                    addr,
                    refusal: Refusal::new(Reason::DeniedPrivateAddress, why),
                });
            }
        }
        Ok(())
    }

    /// Check the address a redirected connection was going to (transparent mode).
    pub fn check_original(&self, ip: IpAddr) -> Result<(), Forbidden> {
        match self.forbidden(None, ip) {
            None => Ok(()),
            Some(why) => Err(Forbidden {
                addr: ip,
                refusal: Refusal::new(
                    Reason::DeniedPrivateAddress,
                    format!("original destination {why}"),
                ),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PortSet;
    use crate::target::parse_authority;

    fn dest() -> Destinations {
        Destinations::new(
            vec!["168.63.129.16/32".parse().unwrap()],
            vec![OwnAddresses {
                rule: "minio".into(),
                hosts: vec![Host::Name("minio.internal".into())],
                ports: PortSet::from_ranges(vec![443..=443]),
                cidrs: vec!["10.20.0.0/24".parse().unwrap()],
            }],
        )
    }

    #[test]
    fn every_answer_is_checked_and_exceptions_hold() {
        let d = dest();
        let public = parse_authority("api.example:443", None).unwrap();
        let ok: Vec<IpAddr> = vec!["8.8.8.8".parse().unwrap(), "168.63.129.16".parse().unwrap()];
        assert_eq!(d.check(&public, &ok), Ok(()));
        let mixed: Vec<IpAddr> = vec!["8.8.8.8".parse().unwrap(), "10.20.0.5".parse().unwrap()];
        let e = d.check(&public, &mixed).unwrap_err();
        assert_eq!(e.addr, mixed[1]);
        assert_eq!(e.refusal.reason, Reason::DeniedPrivateAddress);
        // The rule's own host reaches its private range on its port, and only there.
        let own = parse_authority("minio.internal:443", None).unwrap();
        assert_eq!(d.check(&own, &mixed), Ok(()));
        let other_port = parse_authority("minio.internal:80", None).unwrap();
        assert!(d.check(&other_port, &mixed).is_err());
        // Metadata is never exempted, and an original destination has no rule to exempt it.
        assert!(d.check_original("10.20.0.5".parse().unwrap()).is_err());
        assert!(d
            .check(&own, &["169.254.169.254".parse().unwrap()])
            .is_err());
    }

    #[test]
    fn literals_see_only_the_global_exceptions() {
        let d = dest();
        let lit = |s: &str| d.literal(&parse_authority(s, None).unwrap());
        assert!(lit("127.0.0.1:443").is_some());
        assert_eq!(lit("168.63.129.16:443"), None);
        assert_eq!(lit("8.8.8.8:443"), None);
        assert_eq!(lit("api.example:443"), None);
    }
}
