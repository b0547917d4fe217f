//! Service VIPs, the nftables ingress routing mesh for published ports, and embedded DNS. Built so
//! far: the embedded DNS (`dns`), east-west load balancing through VIPs (`vip`), and the
//! routing mesh's table (`mesh`), which the daemon does not program yet.

pub mod dns;
pub mod mesh;
mod table;
pub mod vip;
