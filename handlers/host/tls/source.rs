//! Who a connection counts against: its IPv4 address, or the /64 its IPv6 address is
//! in (one subscriber or host is routinely handed a whole /64, so counting single IPv6
//! addresses would let it take 2^64 shares).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The address a listener's per-source limits and folded log lines are kept by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Source {
    V4(Ipv4Addr),
    /// The upper 64 bits of the address.
    V6Prefix(u64),
}

impl Source {
    /// The source `ip` counts against; an IPv4-mapped IPv6 address (a dual-stack
    /// socket's view of an IPv4 client) counts as that IPv4 address.
    pub(crate) fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::V4(v4),
                None => Self::V6Prefix((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::V4(v4) => write!(f, "{v4}"),
            Self::V6Prefix(prefix) => {
                write!(f, "{}/64", Ipv6Addr::from(u128::from(*prefix) << 64))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_addresses_in_one_64_are_one_source_and_mapped_ipv4_is_ipv4() {
        let a: IpAddr = "2001:db8:1:2::1".parse().expect("address");
        let b: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().expect("address");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("address");
        assert_eq!(Source::of(a), Source::of(b));
        assert_ne!(Source::of(a), Source::of(c));
        assert_eq!(Source::of(a).to_string(), "2001:db8:1:2::/64");

        let mapped: IpAddr = "::ffff:192.0.2.7".parse().expect("address");
        let plain: IpAddr = "192.0.2.7".parse().expect("address");
        assert_eq!(Source::of(mapped), Source::of(plain));
        assert_ne!(
            Source::of("192.0.2.7".parse().expect("address")),
            Source::of("192.0.2.8".parse().expect("address"))
        );
    }
}
