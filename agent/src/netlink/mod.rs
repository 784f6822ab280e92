//! rtnetlink I/O, one file per kernel concept: `link` (dump, generic link changes),
//! `bridge` (cloudbr0), `vxlan` (the VTEP), `fdb` (its unicast flood list, the remote VTEPs it learned), `dummy`
//! (standalone's port), `address`,
//! `route`, `rule`. Dumps fill [`crate::model::Observed`]; the changes are what the executor runs.
//! No `ip`/`brctl` subprocesses.

mod address;
mod bridge;
mod dummy;
mod fdb;
mod link;
mod route;
mod rule;
mod vxlan;

pub use address::{add_address, del_address, dump_addrs};
pub use bridge::{create_bridge, set_mcast_snooping, set_stp_off};
pub use dummy::create_dummy;
pub use fdb::{dump_flood_list, dump_remote_vteps, set_flood_list};
pub use link::{delete_link, dump_links, set_mac, set_master, set_mtu, set_owner, set_up};
pub use route::{add_route, del_route, dump_routes, restore_route, route_get};
pub use rule::{add_rule, del_rule, dump_rules};
pub use vxlan::{create_vtep, set_bridge_port, VtepArgs};

use crate::model::Link;
use futures::TryStreamExt;
use rtnetlink::Handle;

/// A netlink failure with the errno kept, so callers can branch on EEXIST/EOPNOTSUPP.
#[derive(Debug)]
pub struct NlError {
    pub what: String,
    pub errno: Option<i32>,
    pub msg: String,
}

impl std::fmt::Display for NlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.errno {
            Some(e) => write!(
                f,
                "{}: {} (errno {e})",
                self.what,
                std::io::Error::from_raw_os_error(e)
            ),
            None => write!(f, "{}: {}", self.what, self.msg),
        }
    }
}
impl std::error::Error for NlError {}

pub fn nl_err(what: impl Into<String>, e: rtnetlink::Error) -> NlError {
    let errno = match &e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    };
    NlError {
        what: what.into(),
        errno,
        msg: e.to_string(),
    }
}

type R<T> = Result<T, NlError>;

pub fn connect() -> std::io::Result<Handle> {
    let (conn, handle, _) = rtnetlink::new_connection()?;
    tokio::spawn(conn);
    Ok(handle)
}

/// The executor's netlink: a handle plus the name → ifindex cache of one plan execution,
/// seeded from the observation the plan was made from, so each step costs one netlink round
/// trip, not two. Created per execution and passed explicitly; it derefs to the handle.
pub struct Nl {
    handle: Handle,
    indexes: std::sync::Mutex<std::collections::HashMap<String, u32>>,
}

impl std::ops::Deref for Nl {
    type Target = Handle;
    fn deref(&self) -> &Handle {
        &self.handle
    }
}

impl Nl {
    /// No cached indexes: every name is looked up when used.
    pub fn new(handle: Handle) -> Nl {
        Nl {
            handle,
            indexes: Default::default(),
        }
    }

    /// Trust the indexes of a fresh observation.
    pub fn seeded(handle: Handle, links: &[Link]) -> Nl {
        let nl = Nl::new(handle);
        *nl.indexes.lock().unwrap() = links.iter().map(|l| (l.name.clone(), l.index)).collect();
        nl
    }

    /// A link is gone (or is about to be re-created): forget its index.
    pub fn forget(&self, name: &str) {
        self.indexes.lock().unwrap().remove(name);
    }

    /// The ifindex of `name`: cached, else asked from the kernel (and cached).
    pub async fn index(&self, name: &str) -> R<u32> {
        if let Some(i) = self.indexes.lock().unwrap().get(name).copied() {
            return Ok(i);
        }
        let i = link_index(&self.handle, name).await?;
        self.indexes.lock().unwrap().insert(name.to_string(), i);
        Ok(i)
    }
}

/// The ifindex of `name`, asked from the kernel.
pub async fn link_index(h: &Handle, name: &str) -> R<u32> {
    let mut s = h.link().get().match_name(name.to_string()).execute();
    match s.try_next().await {
        Ok(Some(m)) => Ok(m.header.index),
        Ok(None) => Err(NlError {
            what: format!("find link {name}"),
            errno: Some(libc::ENODEV),
            msg: "not found".into(),
        }),
        Err(e) => Err(nl_err(format!("find link {name}"), e)),
    }
}
