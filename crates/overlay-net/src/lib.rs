//! Per-node L2/L3: VXLAN overlay networks, bridges, veths, peer FDB and neighbour entries, gossip. Not built yet.

pub mod gossip;
