//! Whether NetworkManager or systemd-networkd runs in this network namespace and claims one
//! of overlayd's devices: two owners of one device fight (addresses flushed, MTU or MAC
//! reset, the device taken down), and the node flaps between their states.
//!
//! Read from their own runtime state — systemd-networkd's `/run/systemd/netif/links/<ifindex>`
//! (`ADMIN_STATE=`, anything but `unmanaged` is managed) and NetworkManager's
//! `/run/NetworkManager/devices/<ifindex>` (`managed=true`) — and only believed when the
//! manager's process is in this namespace (the files are per machine, ifindexes per
//! namespace).

use std::path::Path;

/// A manager that claims a device.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Claim {
    pub manager: &'static str,
    pub device: String,
    /// The manager's word for it (networkd's ADMIN_STATE, "managed" for NetworkManager).
    pub state: String,
}

pub const NETWORKD: &str = "systemd-networkd";
pub const NETWORK_MANAGER: &str = "NetworkManager";

/// The managers whose process runs in this process's network namespace.
pub fn running_here(proc_root: &Path) -> Vec<&'static str> {
    let me = std::fs::read_link(proc_root.join("self/ns/net")).ok();
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir(proc_root) else {
        return out;
    };
    for e in dir.flatten() {
        let pid = e.file_name();
        if !pid.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(comm) = std::fs::read_to_string(e.path().join("comm")) else {
            continue;
        };
        // comm is cut at 15 characters: "systemd-network"
        let m = match comm.trim() {
            "systemd-network" => NETWORKD,
            "NetworkManager" => NETWORK_MANAGER,
            _ => continue,
        };
        if me.is_some()
            && std::fs::read_link(e.path().join("ns/net")).ok() == me
            && !out.contains(&m)
        {
            out.push(m);
        }
    }
    out
}

/// networkd's state file text → its ADMIN_STATE (and the .network file it applied) when
/// that means managed.
pub fn networkd_claims(state_file: &str) -> Option<String> {
    let key = |k: &str| {
        state_file
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(str::trim)
    };
    let s = key("ADMIN_STATE=")?;
    if s == "unmanaged" {
        return None;
    }
    Some(match key("NETWORK_FILE=").filter(|f| !f.is_empty()) {
        Some(f) => format!("{s} by {f}"),
        None => s.to_string(),
    })
}

/// NetworkManager's device state file text → whether it manages the device.
pub fn network_manager_claims(state_file: &str) -> bool {
    state_file
        .lines()
        .any(|l| l.trim().replace(' ', "") == "managed=true")
}

/// The claims on `devices` (name, ifindex) by the managers running here.
pub fn claims(run_root: &Path, running: &[&'static str], devices: &[(String, u32)]) -> Vec<Claim> {
    let mut out = Vec::new();
    for (name, idx) in devices {
        if running.contains(&NETWORKD) {
            let f = run_root.join(format!("systemd/netif/links/{idx}"));
            if let Some(state) = std::fs::read_to_string(f)
                .ok()
                .and_then(|t| networkd_claims(&t))
            {
                out.push(Claim {
                    manager: NETWORKD,
                    device: name.clone(),
                    state,
                });
            }
        }
        if running.contains(&NETWORK_MANAGER) {
            let f = run_root.join(format!("NetworkManager/devices/{idx}"));
            if std::fs::read_to_string(f).is_ok_and(|t| network_manager_claims(&t)) {
                out.push(Claim {
                    manager: NETWORK_MANAGER,
                    device: name.clone(),
                    state: "managed".into(),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_files_say_who_manages_a_device() {
        let nd = "# This is private data. Do not parse.\nADMIN_STATE=configured\nOPER_STATE=routable\nNETWORK_FILE=/etc/systemd/network/50-br.network\n";
        assert_eq!(
            networkd_claims(nd).as_deref(),
            Some("configured by /etc/systemd/network/50-br.network")
        );
        assert_eq!(
            networkd_claims("ADMIN_STATE=pending\n").as_deref(),
            Some("pending")
        );
        assert_eq!(networkd_claims("ADMIN_STATE=unmanaged\n"), None);
        assert_eq!(networkd_claims("OPER_STATE=off\n"), None);
        assert!(network_manager_claims(
            "[device]\nmanaged=true\nperm-hw-addr-fake=\n"
        ));
        assert!(!network_manager_claims("[device]\nmanaged=false\n"));
    }

    #[test]
    fn claims_are_read_only_for_managers_running_here() {
        let d = std::env::temp_dir().join(format!("nm-claims-{}", std::process::id()));
        std::fs::create_dir_all(d.join("systemd/netif/links")).unwrap();
        std::fs::create_dir_all(d.join("NetworkManager/devices")).unwrap();
        std::fs::write(d.join("systemd/netif/links/7"), "ADMIN_STATE=configured\n").unwrap();
        std::fs::write(
            d.join("NetworkManager/devices/8"),
            "[device]\nmanaged=true\n",
        )
        .unwrap();
        let devs = vec![("cloudbr0".to_string(), 7), ("ethvxlan0".to_string(), 8)];
        assert!(claims(&d, &[], &devs).is_empty());
        let c = claims(&d, &[NETWORKD, NETWORK_MANAGER], &devs);
        assert_eq!(c.len(), 2);
        assert_eq!((c[0].manager, c[0].device.as_str()), (NETWORKD, "cloudbr0"));
        assert_eq!(c[1].manager, NETWORK_MANAGER);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
