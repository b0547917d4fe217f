//! Service VIPs, the nftables ingress routing mesh for published ports, and embedded DNS. Built so
//! far: the embedded DNS (`dns`) and east-west load balancing through VIPs (`vip`).

pub mod dns;
pub mod vip;
