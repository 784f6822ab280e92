//! Router high availability: two routers, one virtual gateway address (the VIP the hosts
//! use as their gateway), elected with VRRP by keepalived over the overlay (unicast peers:
//! no multicast VRRP needed). overlayd renders keepalived's whole configuration from its own
//! (this module, pure), runs keepalived as its child and judges the VIP's presence on the
//! bridge as "this router is active".
//!
//! Both routers start as BACKUP with `nopreempt` (by default): a recovered router does not
//! take the traffic back, which would cost a second cut.

use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

/// The VRRP virtual router id (one VRRP instance per overlay; unicast, so no clash with
/// other VRRP users on a shared segment).
pub const VRID: u8 = 79;

/// What the configuration says about HA (router role with `ha_peer`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaSpec {
    /// The gateway address the hosts use; held by the active router.
    pub vip: Ipv4Addr,
    pub prefix_len: u8,
    /// This router's own overlay address (VRRP's unicast source).
    pub local: Ipv4Addr,
    /// The other router's overlay address.
    pub peer: Ipv4Addr,
    /// The bridge VRRP runs on and the VIP lives on.
    pub bridge: String,
    /// The underlay: tracked, so a router that loses it gives the VIP up (FAULT) instead of
    /// staying active alone, and comes back as backup.
    #[serde(default)]
    pub underlay: String,
    /// VRRP virtual router id (1..=255), the same on both routers.
    pub vrid: u8,
    /// 1..=254; with `nopreempt` it only breaks ties at start-up.
    pub priority: u8,
    /// Advertisement interval, milliseconds (VRRPv3: centiseconds, 10..=40950 ms). The
    /// backup takes over after 3 missed advertisements plus a skew.
    pub advert_ms: u32,
    pub preempt: bool,
}

impl HaSpec {
    /// Seconds from the active router's death until the backup claims the VIP: VRRPv3's
    /// Master_Down_Interval = 3 × advert + skew, skew = (256 − priority) / 256 × advert.
    pub fn takeover_bound_secs(&self) -> f64 {
        let adv = f64::from(self.advert_ms) / 1000.0;
        3.0 * adv + (256.0 - f64::from(self.priority)) / 256.0 * adv
    }
}

/// keepalived's configuration for `spec` (the whole file; overlayd owns it).
pub fn keepalived_conf(spec: &HaSpec) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Written by overlayd from its own configuration: edits are overwritten.\n\
         # Router HA: the VIP {vip} (the hosts' gateway) on {br}, elected with VRRPv3 over the\n\
         # overlay (unicast to {peer}). overlayd watches the VIP and moves the VPC routes.",
        vip = spec.vip,
        br = spec.bridge,
        peer = spec.peer
    );
    let _ = writeln!(s, "global_defs {{");
    let _ = writeln!(s, "    router_id overlayd-{}", spec.local);
    let _ = writeln!(s, "    vrrp_version 3");
    // no scripts run: overlayd acts on the VIP itself
    let _ = writeln!(s, "    enable_script_security");
    let _ = writeln!(s, "    script_user root");
    // a new active router announces itself at once and again shortly after
    let _ = writeln!(s, "    vrrp_garp_master_delay 1");
    let _ = writeln!(s, "    vrrp_garp_master_repeat 3");
    let _ = writeln!(s, "    vrrp_garp_master_refresh 60");
    let _ = writeln!(s, "}}");
    let _ = writeln!(s, "vrrp_instance overlay_gateway {{");
    let _ = writeln!(s, "    state BACKUP");
    let _ = writeln!(s, "    interface {}", spec.bridge);
    let _ = writeln!(s, "    virtual_router_id {}", spec.vrid);
    let _ = writeln!(s, "    priority {}", spec.priority);
    // keepalived takes seconds with up to two decimals for VRRPv3
    let _ = writeln!(
        s,
        "    advert_int {}.{:02}",
        spec.advert_ms / 1000,
        spec.advert_ms % 1000 / 10
    );
    if !spec.preempt {
        let _ = writeln!(s, "    nopreempt");
    }
    if !spec.underlay.is_empty() {
        let _ = writeln!(
            s,
            "    track_interface {{\n        {}\n    }}",
            spec.underlay
        );
    }
    let _ = writeln!(s, "    unicast_src_ip {}", spec.local);
    let _ = writeln!(s, "    unicast_peer {{\n        {}\n    }}", spec.peer);
    let _ = writeln!(
        s,
        "    virtual_ipaddress {{\n        {}/{} dev {}\n    }}",
        spec.vip, spec.prefix_len, spec.bridge
    );
    let _ = writeln!(s, "}}");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> HaSpec {
        HaSpec {
            vip: "10.101.0.1".parse().unwrap(),
            prefix_len: 16,
            local: "10.101.0.3".parse().unwrap(),
            peer: "10.101.0.4".parse().unwrap(),
            bridge: "cloudbr0".into(),
            underlay: "eth0".into(),
            vrid: 79,
            priority: 100,
            advert_ms: 200,
            preempt: false,
        }
    }

    #[test]
    fn the_configuration_is_unicast_vrrp3_backup_nopreempt_with_the_vip_on_the_bridge() {
        let c = keepalived_conf(&spec());
        for want in [
            "vrrp_version 3",
            "state BACKUP",
            "interface cloudbr0",
            "virtual_router_id 79",
            "advert_int 0.20",
            "nopreempt",
            "unicast_src_ip 10.101.0.3",
            "unicast_peer {\n        10.101.0.4\n    }",
            "10.101.0.1/16 dev cloudbr0",
            "track_interface {\n        eth0\n    }",
        ] {
            assert!(c.contains(want), "{want:?} missing:\n{c}");
        }
        assert!(
            !c.contains("notify"),
            "no scripts: overlayd watches the VIP"
        );
        let mut p = spec();
        p.preempt = true;
        p.advert_ms = 1500;
        let c = keepalived_conf(&p);
        assert!(
            !c.contains("nopreempt") && c.contains("advert_int 1.50"),
            "{c}"
        );
    }

    #[test]
    fn takeover_is_bounded_by_three_adverts_and_the_skew() {
        let t = spec().takeover_bound_secs();
        assert!((t - (0.6 + 156.0 / 256.0 * 0.2)).abs() < 1e-9, "{t}");
        assert!(t < 1.0);
    }
}

/// The HA part of `overlayd status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct HaStatus {
    pub vip: Option<Ipv4Addr>,
    pub peer: Option<Ipv4Addr>,
    /// "active" (the VIP is on the bridge), "backup", or "unknown" before the first look.
    pub state: String,
    pub keepalived_pid: Option<u32>,
    /// keepalived (re)starts after the first.
    pub keepalived_restarts: u64,
    pub error: Option<String>,
    /// Why keepalived cannot send its gratuitous ARP for the VIP: overlayd's own sandbox
    /// forbids packet sockets (the unit without the router-pair drop-in). None: it can.
    #[serde(default)]
    pub garp_error: Option<String>,
    /// The last route takeover of this router (while active).
    pub takeover: Option<crate::takeover::TakeoverReport>,
}

/// Whether this process may open a packet socket (AF_PACKET), as keepalived — overlayd's
/// child, in the same sandbox — does for its gratuitous ARP. Err: why not.
pub fn probe_packet_socket() -> Result<(), String> {
    // SAFETY: socket(2); closed at once.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(format!(
            "no packet socket ({}): keepalived cannot send the gratuitous ARP for the VIP, so \
             after a failover the hosts keep sending to the old router until their ARP entry \
             expires; install the drop-in /usr/share/overlayd/router-pair.conf \
             (docs/router-ha.md)",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: fd was just opened by us.
    unsafe { libc::close(fd) };
    Ok(())
}

/// Whether `spec`'s VIP is on its bridge in `o`: this router is the active one.
pub fn is_active(spec: &HaSpec, o: &crate::model::Observed) -> bool {
    o.link(&spec.bridge)
        .is_some_and(|b| o.addrs_of(b.index).any(|a| a.addr.addr() == spec.vip))
}

/// keepalived as overlayd's child: its configuration written (and reloaded with SIGHUP
/// when it changes), restarted when it exits, stopped with overlayd (SIGTERM on drop and,
/// should overlayd die, by the kernel: PR_SET_PDEATHSIG) so the peer takes over at once.
pub struct Supervisor {
    dir: std::path::PathBuf,
    binary: std::path::PathBuf,
    child: Option<std::process::Child>,
    written: Option<String>,
    pub starts: u64,
}

impl Supervisor {
    /// `dir`: where the configuration and pid files go (overlayd's runtime directory).
    pub fn new(dir: &std::path::Path) -> Supervisor {
        Supervisor {
            dir: dir.to_path_buf(),
            binary: std::env::var_os("OVERLAYD_KEEPALIVED")
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|| "keepalived".into()),
            child: None,
            written: None,
            starts: 0,
        }
    }

    pub fn conf_path(&self) -> std::path::PathBuf {
        self.dir.join("keepalived.conf")
    }

    /// Whether `ensure` would start keepalived now (not running, or exited).
    pub fn needs_start(&mut self) -> bool {
        match &mut self.child {
            None => true,
            Some(c) => !matches!(c.try_wait(), Ok(None)),
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Make keepalived run with `spec`'s configuration.
    pub fn ensure(&mut self, spec: &HaSpec) -> Result<(), String> {
        let conf = keepalived_conf(spec);
        let path = self.conf_path();
        let changed = self.written.as_deref() != Some(conf.as_str());
        if changed {
            std::fs::create_dir_all(&self.dir)
                .and_then(|_| std::fs::write(&path, &conf))
                .map_err(|e| format!("write {}: {e}", path.display()))?;
            self.written = Some(conf);
        }
        if let Some(c) = &mut self.child {
            match c.try_wait() {
                Ok(None) => {
                    if changed {
                        // SAFETY: signalling our own child.
                        unsafe { libc::kill(c.id() as i32, libc::SIGHUP) };
                    }
                    return Ok(());
                }
                Ok(Some(st)) => tracing::warn!(status = %st, "keepalived exited; restarting"),
                Err(e) => tracing::warn!(error = %e, "keepalived: wait failed; restarting"),
            }
            self.child = None;
        }
        let mut cmd = std::process::Command::new(&self.binary);
        cmd.args(["--dont-fork", "--log-console", "--vrrp", "--use-file"])
            .arg(&path)
            .arg("--pid")
            .arg(self.dir.join("keepalived.pid"))
            .arg("--vrrp_pid")
            .arg(self.dir.join("keepalived-vrrp.pid"))
            .stdin(std::process::Stdio::null());
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl only, async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("start {}: {e}", self.binary.display()))?;
        tracing::info!(pid = child.id(), conf = %path.display(), "keepalived started");
        self.child = Some(child);
        self.starts += 1;
        Ok(())
    }

    /// Stop keepalived (HA switched off by a reload, or overlayd stopping).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop();
    }
}
