//! What overlayd must remember between runs that the kernel cannot hold for it: the
//! original values of the shared sysctls it changed (restored by `down`) and the names
//! of the links it created, and foreign routes it replaced. Links also carry device group 79 in the kernel.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    /// sysctl key → value before overlayd first changed it.
    #[serde(default)]
    pub sysctls: BTreeMap<String, String>,
    /// Links overlayd created (by name).
    #[serde(default)]
    pub links: BTreeSet<String>,
    /// NAT table installed.
    #[serde(default)]
    pub nat: bool,
    /// Foreign routes overlayd replaced with its own (same table, destination and metric);
    /// `down` puts them back.
    #[serde(default)]
    pub replaced_routes: Vec<crate::model::SavedRoute>,
    /// All-zeros FDB entries (unicast flooding peers) overlayd added to the VTEP: the only
    /// ones it ever removes.
    #[serde(default)]
    pub flood_list: BTreeSet<std::net::Ipv4Addr>,
}

pub fn path(dir: &Path) -> PathBuf {
    dir.join("state.json")
}

pub fn load(dir: &Path) -> std::io::Result<Option<State>> {
    match std::fs::read_to_string(path(dir)) {
        Ok(s) => serde_json::from_str(&s).map(Some).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {e}", path(dir).display()),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Written before the change it records, so a crash never loses an original value.
/// Not fsynced: it describes kernel state (links, sysctls) that a reboot resets anyway,
/// and a kill -9 cannot lose a completed write.
pub fn save(dir: &Path, st: &State) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut st = st.clone();
    st.version = 1;
    let text = serde_json::to_string_pretty(&st).expect("state serialises");
    crate::files::write_atomic_with(&path(dir), &(text + "\n"), false)
}

pub fn remove(dir: &Path) -> std::io::Result<bool> {
    match std::fs::remove_file(path(dir)) {
        Ok(()) => {
            let _ = std::fs::remove_dir(dir);
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}
