//! rtnetlink I/O, one file per kernel concept: `link` (dump, generic link changes),
//! `bridge` (cloudbr0), `vxlan` (the VTEP), `dummy` (standalone's port), `address`,
//! `route`, `rule`. Dumps fill [`crate::model::Observed`]; the changes are what the executor runs.
//! No `ip`/`brctl` subprocesses.

mod address;
mod bridge;
mod dummy;
mod link;
mod route;
mod rule;
mod vxlan;

pub use address::{add_address, dump_addrs};
pub use bridge::{create_bridge, set_mcast_snooping, set_stp_off};
pub use dummy::create_dummy;
pub use link::{delete_link, dump_links, set_mac, set_master, set_mtu, set_owner, set_up};
pub use route::{add_route, del_route, dump_routes, restore_route};
pub use rule::{add_rule, del_rule, dump_rules};
pub use vxlan::create_vtep;

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

/// Name → ifindex for the duration of one plan execution: seeded from the observation
/// the plan was made from, so each step costs one netlink round trip, not two.
static INDEXES: std::sync::Mutex<Option<std::collections::HashMap<String, u32>>> =
    std::sync::Mutex::new(None);

/// Start an execution: forget old indexes, trust the fresh observation.
pub fn seed_indexes(links: &[Link]) {
    let m = links.iter().map(|l| (l.name.clone(), l.index)).collect();
    *INDEXES.lock().unwrap() = Some(m);
}

/// Stop trusting cached indexes (e.g. after a failure).
pub fn clear_indexes() {
    *INDEXES.lock().unwrap() = None;
}

fn forget_index(name: &str) {
    if let Some(m) = INDEXES.lock().unwrap().as_mut() {
        m.remove(name);
    }
}

async fn index_of(h: &Handle, name: &str) -> R<u32> {
    if let Some(i) = INDEXES
        .lock()
        .unwrap()
        .as_ref()
        .and_then(|m| m.get(name).copied())
    {
        return Ok(i);
    }
    let mut s = h.link().get().match_name(name.to_string()).execute();
    match s.try_next().await {
        Ok(Some(m)) => {
            if let Some(c) = INDEXES.lock().unwrap().as_mut() {
                c.insert(name.to_string(), m.header.index);
            }
            Ok(m.header.index)
        }
        Ok(None) => Err(NlError {
            what: format!("find link {name}"),
            errno: Some(libc::ENODEV),
            msg: "not found".into(),
        }),
        Err(e) => Err(nl_err(format!("find link {name}"), e)),
    }
}

pub async fn link_index(h: &Handle, name: &str) -> R<u32> {
    index_of(h, name).await
}
