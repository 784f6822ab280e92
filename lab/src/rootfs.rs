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
/// what overlayd runs (nft) and what the lab and tests run inside a node.
pub const PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "dbus",
    "iproute2",
    "nftables",
    "iputils-ping",
    "procps",
    "curl",
];

pub const CACHE_ROOT: &str = "/var/cache/overlay-lab";

/// Bumped when what [`ensure`] does to the image besides the packages changes (part of the key).
const RECIPE: &str = "2";

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
