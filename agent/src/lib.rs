//! overlayd: turns a declared overlay node into kernel state and keeps it so.
//!
//! The spine, one module per stage:
//! [`config`] → [`desired`] (pure) → [`apply::observe_kernel`] (netlink dump into
//! [`model::Observed`]) → [`plan`] (pure diff, ordered [`plan::Op`]s) → [`apply::execute`]
//! (thin executor) → [`daemon`] (when to reconcile). Each kernel concept has its own file:
//! `netlink/bridge.rs`, `netlink/vxlan.rs`, `netlink/dummy.rs`, `netlink/link.rs`,
//! `netlink/address.rs`, `netlink/route.rs`, `netlink/rule.rs`, [`sysctl`], [`files`] (/etc/hosts,
//! resolv.conf), NAT in `overlay-router` (`router/src/nat.rs`); [`state`] remembers what the
//! kernel cannot; [`metrics`] is the Prometheus side of `run`; [`error`] types what failed.

pub mod apply;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod desired;
pub mod doctor;
pub mod error;
pub mod ethtool;
pub mod evpn;
pub mod files;
pub mod ha;
pub mod icmp;
pub mod igmp_queries;
pub mod igmp_report;
pub mod instance;
pub mod metrics;
pub mod model;
pub mod netlink;
pub mod network_managers;
pub mod peers;
pub mod plan;
#[cfg(test)]
mod plan_tests;
pub mod state;
pub mod sysctl;
pub mod takeover;
