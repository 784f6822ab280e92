//! The node image of the instance lab: one Debian root filesystem with systemd, built once per
//! machine by mmdebstrap and cached under /var/cache/overlay-lab, keyed by its package list.
//! Every node boots a cheap copy of it (an overlay mount, see `instances.rs`).
//!
//! One image for every feature: what later work needs on a node (cloud-init, libvirt,
//! keepalived, frr) is added to [`PACKAGES`], which changes the key and builds the union once.

use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::sys::run_timeout;

/// Debian release of the node image.
pub const SUITE: &str = "bookworm";

/// The image's packages (mmdebstrap `--variant=apt` adds Essential and apt). systemd as PID 1,
/// what overlayd runs (nft), what the lab and tests run inside a node, and cloud-init (off
/// unless `up --cloud-init`, see [`CLOUD_INIT_DISABLED`]).
pub const PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "dbus",
    "iproute2",
    "nftables",
    "iputils-ping",
    "procps",
    "curl",
    "cloud-init",
    // scripts/cloudstack/kvm-host on Debian 12 (the lab has no package mirror: what it installs
    // is here already, its units off until the script enables them, see UNITS_OFF)
    "libvirt-daemon-system",
    "libvirt-clients",
    "qemu-system-x86",
    "nfs-common",
    // router HA: overlayd runs keepalived as its child (the package's own unit stays off)
    "keepalived",
    // flood = evpn: overlayd configures FRR and starts frr.service itself
    "frr",
];

/// Units the image's packages enable that no plain lab node runs: libvirt's (kvm-host enables
/// and configures them) and NFS's RPC services. Disabled once in the image, so a node boots as
/// fast as before and listens on nothing it did not ask for.
pub const UNITS_OFF: &[&str] = &[
    "keepalived.service",
    "frr.service",
    "libvirtd.service",
    "libvirtd.socket",
    "libvirtd-ro.socket",
    "libvirtd-admin.socket",
    "virtlogd.service",
    "virtlogd.socket",
    "virtlogd-admin.socket",
    "virtlockd.service",
    "virtlockd.socket",
    "virtlockd-admin.socket",
    "libvirt-guests.service",
    "rpcbind.service",
    "rpcbind.socket",
    "nfs-client.target",
];

/// In the image, relative to its root: cloud-init's own switch. Present in the image, so a
/// node boots without cloud-init (plain `--instances` labs); `up --cloud-init` removes it in
/// each product node's upper layer before the node boots.
pub const CLOUD_INIT_DISABLED: &str = "etc/cloud/cloud-init.disabled";

/// In the image, relative to its root: the lab's cloud-init configuration (read after
/// `/etc/cloud/cloud.cfg`; the package ships no other `cloud.cfg.d` datasource setting).
pub const CLOUD_INIT_CFG: &str = "etc/cloud/cloud.cfg.d/90-overlay-lab.cfg";

/// [`CLOUD_INIT_CFG`]: the lab's IMDS emulator is the instances' only datasource, as on EC2:
/// cloud-init's own EC2 datasource, through [`CLOUD_INIT_DATASOURCE`] (see there why).
/// Short waits: the emulator is up before any node boots. `network: config: disabled`: the lab
/// configured eth0 before the boot (the instance's ENI, as the DHCP client does on EC2),
/// cloud-init must not write a network configuration of its own. `locale`: the image has no
/// `locales` package, so the C locale every system has (cc_locale's default en_US.UTF-8 would
/// fail in update-locale).
pub const CLOUD_INIT_CONFIG: &str = "\
# overlay-lab: the lab's IMDSv2 emulator (169.254.169.254, `overlay-lab imds-serve`) is the
# only datasource; the instance lab behaves as EC2 does. See docs/lab.md (--cloud-init).
datasource_list: [ OverlayLabEc2 ]
datasource:
  Ec2:
    metadata_urls: [\"http://169.254.169.254\"]
    timeout: 5
    max_wait: 60
network:
  config: disabled
locale: C.UTF-8
";

/// In the image: the datasource [`CLOUD_INIT_CONFIG`] names, found by cloud-init's datasource
/// search (its package list starts with the top level). cloud-init identifies AWS from the
/// instance's firmware (DMI: an `ec2` system UUID equal to the serial), and only on AWS does its
/// EC2 datasource fetch an IMDSv2 token; elsewhere it asks IMDSv1, which an instance with
/// HttpTokens=required refuses (so does the lab's emulator). A container has no firmware, and
/// cloud-init reads no DMI in a container (`dmi.read_dmi_data`), so this is cloud-init's
/// DataSourceEc2 with one change: the platform is AWS, as a Nitro instance's firmware says.
/// Network stage only (no Ec2Local: it would ask for a DHCP lease first, and the lab has no DHCP
/// server; the node's address is set before boot).
pub const CLOUD_INIT_DATASOURCE: &str = "usr/lib/python3/dist-packages/DataSourceOverlayLabEc2.py";
pub const CLOUD_INIT_DATASOURCE_PY: &str = r#"# overlay-lab: cloud-init's EC2 datasource with the platform identified as AWS, which a
# container cannot show (no firmware; cloud-init reads no DMI in a container). Without it
# cloud-init would read IMDS without a token (IMDSv1), refused when HttpTokens=required.
from cloudinit import sources
from cloudinit.sources import DataSourceEc2 as ec2


class DataSourceOverlayLabEc2(ec2.DataSourceEc2):
    def _get_cloud_name(self):
        return ec2.CloudNames.AWS


datasources = [
    (DataSourceOverlayLabEc2, (sources.DEP_FILESYSTEM, sources.DEP_NETWORK)),
]


def get_datasource_list(depends):
    return sources.list_from_depends(depends, datasources)
"#;

pub const CACHE_ROOT: &str = "/var/cache/overlay-lab";

/// Bumped when what [`ensure`] does to the image besides the packages changes (part of the key).
const RECIPE: &str = "5";

/// Stable key of the image: FNV-1a over the suite and the package list.
pub fn key() -> String {
    let list: String = PACKAGES.iter().map(|p| format!("\n{p}")).collect();
    format!(
        "{:016x}",
        crate::sys::fnv64(&[&format!("{RECIPE}{SUITE}{list}")])
    )
}

/// Where the image for the current package list lives.
pub fn path() -> PathBuf {
    Path::new(CACHE_ROOT).join(format!("rootfs-{SUITE}-{}", key()))
}

const COMPLETE: &str = ".overlay-lab-complete";

/// The cached image, built first when missing (serialised by a lock file, so concurrent `up`s
/// build it once). Progress goes to stderr unless `quiet`.
pub fn ensure(quiet: bool) -> Result<PathBuf> {
    let dir = path();
    if dir.join(COMPLETE).exists() {
        return Ok(dir);
    }
    fs::create_dir_all(CACHE_ROOT).with_context(|| format!("creating {CACHE_ROOT}"))?;
    let lock_path = dir.with_extension("lock");
    let lock = fs::File::create(&lock_path)
        .with_context(|| format!("creating {}", lock_path.display()))?;
    // SAFETY: flock(2) on a file descriptor we own; released when `lock` is dropped.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        bail!(
            "locking {}: {}",
            lock_path.display(),
            std::io::Error::last_os_error()
        );
    }
    if dir.join(COMPLETE).exists() {
        return Ok(dir);
    }
    if Command::new("mmdebstrap")
        .arg("--version")
        .output()
        .is_err()
    {
        bail!(
            "the instance lab needs mmdebstrap and systemd-nspawn: \
             apt-get install mmdebstrap systemd-container (scripts/install-deps does)"
        );
    }
    let tmp = dir.with_extension("tmp");
    if tmp.exists() {
        fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    if !quiet {
        eprintln!(
            "overlay-lab: building the node image once for this machine (mmdebstrap {SUITE}, \
             ~45 s, ~220 MB): {}",
            dir.display()
        );
    }
    let t0 = Instant::now();
    let mut c = Command::new("mmdebstrap");
    c.args(["--quiet", "--variant=apt", "--include"])
        .arg(PACKAGES.join(","))
        .arg(SUITE)
        .arg(&tmp);
    let o = run_timeout(&mut c, None, std::time::Duration::from_secs(900))
        .context("running mmdebstrap")?;
    if !o.status.success() {
        let _ = fs::remove_dir_all(&tmp);
        bail!(
            "mmdebstrap failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    // A machine-id per node comes from systemd at first boot (empty file = "generate").
    fs::write(tmp.join("etc/machine-id"), "")?;
    // Every real instance has /etc/hosts (the installer or cloud-init writes it); mmdebstrap
    // does not. overlayd's unit can only bind an existing one writable (ReadWritePaths=).
    fs::write(
        tmp.join("etc/hosts"),
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    )?;
    // cloud-init: installed, configured for the lab, off until `up --cloud-init` enables it
    fs::write(
        tmp.join(CLOUD_INIT_DISABLED),
        "overlay-lab: cloud-init is off in plain --instances labs (up --cloud-init removes this)\n",
    )?;
    fs::write(tmp.join(CLOUD_INIT_CFG), CLOUD_INIT_CONFIG)?;
    fs::write(tmp.join(CLOUD_INIT_DATASOURCE), CLOUD_INIT_DATASOURCE_PY)?;
    for unit in UNITS_OFF {
        // offline (--root): a unit the packages did not ship or enable is no error
        let _ = Command::new("systemctl")
            .arg(format!("--root={}", tmp.display()))
            .args(["disable", "--quiet", unit])
            .output();
    }
    fs::write(tmp.join(COMPLETE), format!("{}\n", PACKAGES.join(" ")))?;
    fs::rename(&tmp, &dir).with_context(|| format!("renaming {} into place", tmp.display()))?;
    if !quiet {
        eprintln!(
            "overlay-lab: node image built in {:.1} s",
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_stable_and_names_the_package_list() {
        assert_eq!(key(), key());
        assert_eq!(key().len(), 16);
        assert!(path()
            .to_string_lossy()
            .starts_with("/var/cache/overlay-lab/rootfs-bookworm-"));
    }
}
