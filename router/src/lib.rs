//! Router role pieces (NAT). See README.

pub mod nat;
