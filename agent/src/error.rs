//! overlayd's errors, typed: what failed (netlink with its errno, a file or /proc/sys, the
//! `nft` child, the daemon's set-up) and, for a plan, which operation. Bad input is its own
//! variant: exit status 2, nothing changed; everything else is exit status 1.

use crate::config::ConfigError;
use crate::netlink::NlError;
use overlay_router::nat::NatError;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Bad input: exit 2, nothing changed.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// A netlink request failed; the errno is kept.
    #[error(transparent)]
    Netlink(#[from] NlError),
    /// Reading or writing a file or a /proc/sys key failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// nftables (the `nft` child) failed.
    #[error(transparent)]
    Nat(#[from] NatError),
    /// One operation of a plan failed.
    #[error("{op}: {source}")]
    Op {
        op: String,
        #[source]
        source: Box<AgentError>,
    },
    /// The daemon could not set itself up (sockets, signals) or lost its event stream.
    #[error("{what}: {source}")]
    Setup {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl AgentError {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> AgentError {
        AgentError::Io {
            what: what.into(),
            source,
        }
    }

    pub fn setup(what: impl Into<String>, source: impl std::fmt::Display) -> AgentError {
        AgentError::Setup {
            what: what.into(),
            source: std::io::Error::other(source.to_string()),
        }
    }

    /// Bad input (exit status 2)?
    pub fn is_config(&self) -> bool {
        matches!(self.root(), AgentError::Config(_))
    }

    /// The innermost error (below the plan operation that failed).
    pub fn root(&self) -> &AgentError {
        match self {
            AgentError::Op { source, .. } => source.root(),
            e => e,
        }
    }

    /// A short label of what failed: `config`, `netlink`, `io`, `nat`, `setup`.
    pub fn kind(&self) -> &'static str {
        match self.root() {
            AgentError::Config(_) => "config",
            AgentError::Netlink(_) => "netlink",
            AgentError::Io { .. } => "io",
            AgentError::Nat(_) => "nat",
            AgentError::Setup { .. } | AgentError::Op { .. } => "setup",
        }
    }

    /// The errno of a failed netlink request, if that is what failed.
    pub fn errno(&self) -> Option<i32> {
        match self.root() {
            AgentError::Netlink(e) => e.errno,
            AgentError::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_and_errno_see_through_the_failed_operation() {
        let nl = NlError {
            what: "add route".into(),
            errno: Some(libc::EEXIST),
            msg: String::new(),
        };
        let e = AgentError::Op {
            op: "add route default".into(),
            source: Box::new(nl.into()),
        };
        assert_eq!(e.kind(), "netlink");
        assert_eq!(e.errno(), Some(libc::EEXIST));
        assert!(!e.is_config());
        assert!(e.to_string().starts_with("add route default: add route: "));
        let io = AgentError::io("sysctl x", std::io::Error::from_raw_os_error(libc::EROFS));
        assert_eq!(io.kind(), "io");
        assert_eq!(io.errno(), Some(libc::EROFS));
    }
}
