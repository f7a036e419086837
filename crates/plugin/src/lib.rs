//! podcidr: a CNI IPAM plugin that hands out pod addresses from the node's pod CIDR.

pub mod arena;
pub mod cli;
pub mod cni;
pub mod ipam;
pub mod log;
pub mod modes;
pub mod store;
