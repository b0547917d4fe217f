//! Service VIPs, the nftables ingress routing mesh for published ports, and embedded DNS. Only the
//! embedded DNS (`dns`) is built so far.

pub mod dns;
