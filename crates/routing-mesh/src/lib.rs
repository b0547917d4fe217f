//! Service VIPs, the nftables ingress routing mesh for published ports, and embedded DNS. Not built yet.
