//! overlayd: turns a declared overlay node into kernel state and keeps it so.
//!
//! The spine, one module per stage:
//! [`config`] → [`desired`] (pure) → [`apply::observe_kernel`] (netlink dump into
//! [`model::Observed`]) → [`plan`] (pure diff, ordered [`plan::Op`]s) → [`apply::execute`]
//! (thin executor). Kernel concepts each have their own module: [`netlink`] (links,
//! addresses, routes), [`sysctl`], [`files`] (/etc/hosts, resolv.conf), NAT in the
//! `overlay-router` crate; [`state`] remembers what the kernel cannot.

pub mod apply;
pub mod config;
pub mod daemon;
pub mod desired;
pub mod files;
pub mod metrics;
pub mod model;
pub mod netlink;
pub mod plan;
#[cfg(test)]
mod plan_tests;
pub mod state;
pub mod sysctl;
