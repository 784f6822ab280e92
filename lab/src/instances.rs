//! The instance lab (`overlay-lab up --instances`): every node is a booted systemd container
//! (`systemd-nspawn -b`, PID 1 = systemd) with its own root filesystem, in the node's network
//! namespace of the same strict emulated VPC. overlayd is installed the way an operator does it:
//! `apt-get install ./overlayd_*.deb`, `/etc/overlayd/overlayd.toml`, `systemctl enable --now`.
//!
//! Per node, under /run/overlay-lab/P/NODE/container/: `upper/` + `work/` of an overlay mount
//! whose lower layer is the cached image (`rootfs.rs`), mounted on `root/`; `nspawn.pid`;
//! `console.log` (what the container's console printed).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::node_cmd::{node_dir, run_dir};
use crate::sys::{run_timeout, NETNS_DIR};

/// A booted node container.
#[derive(Debug, Clone)]
pub struct Container {
    pub node: String,
    pub dir: PathBuf,
    /// systemd-nspawn (the container's supervisor on the host).
    pub nspawn_pid: u32,
    /// The container's PID 1 (systemd), as the host sees it: what `nsenter -t` enters.
    pub init_pid: u32,
}

impl Container {
    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    /// `COMMAND...` inside the container: all of its namespaces (mount, UTS, IPC, network,
    /// PID), a plain environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg("-t")
            .arg(self.init_pid.to_string())
            .args(["-m", "-u", "-i", "-n", "-p", "--"])
            .args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env("LANG", "C.UTF-8");
        c
    }

    /// Runs `args` inside; its stdout on success, else an error with both outputs.
    pub fn run(&self, args: &[&str], timeout: Duration) -> Result<String> {
        let o = run_timeout(&mut self.command(args), None, timeout)
            .with_context(|| format!("{} on {}", args.join(" "), self.node))?;
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        if !o.status.success() {
            bail!(
                "`{}` on {} failed ({}): {}{}",
                args.join(" "),
                self.node,
                o.status,
                out,
                String::from_utf8_lossy(&o.stderr)
            );
        }
        Ok(out)
    }

    /// Like [`Container::run`], without failing on a non-zero status: (status code, stdout).
    pub fn probe(&self, args: &[&str], timeout: Duration) -> Result<(i32, String)> {
        let o = run_timeout(&mut self.command(args), None, timeout)
            .with_context(|| format!("{} on {}", args.join(" "), self.node))?;
        Ok((
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).trim().to_string(),
        ))
    }
}

pub fn container_dir(prefix: &str, node: &str) -> PathBuf {
    node_dir(prefix, node).join("container")
}

/// How far [`boot`] waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Until systemd reports the boot finished (`running`; `degraded` is an error naming the
    /// failed units).
    Booted,
    /// Until the container's systemd answers on its bus (the boot goes on: `up --cloud-init`
    /// waits for cloud-init instead, whose final stage ends the boot).
    Manager,
}

/// Where the boot start time of a node's container is recorded (seconds since the epoch, a
/// float): /run/overlay-lab/P/NODE/boot-started, rewritten at every boot.
pub fn boot_started_path(prefix: &str, node: &str) -> PathBuf {
    node_dir(prefix, node).join("boot-started")
}

/// The recorded boot start of the node's container (see [`boot_started_path`]).
pub fn boot_started(prefix: &str, node: &str) -> Option<f64> {
    fs::read_to_string(boot_started_path(prefix, node))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Mounts the node's root (overlay over `image`) and boots it in namespace `ns`. With
/// `cloud_init` = Some(AWS API URL), cloud-init is switched on in the node's disk first (see
/// `cloud_init::enable`; the disk keeps it across reboots). Returns as `wait` says.
pub fn boot(
    prefix: &str,
    node: &str,
    ns: &str,
    image: &Path,
    cloud_init: Option<&str>,
    wait: Wait,
) -> Result<Container> {
    let dir = container_dir(prefix, node);
    for d in ["upper", "work", "root"] {
        fs::create_dir_all(dir.join(d))?;
    }
    let root = dir.join("root");
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        image.display(),
        dir.join("upper").display(),
        dir.join("work").display()
    );
    let o = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &opts])
        .arg(&root)
        .output()
        .context("mount -t overlay")?;
    if !o.status.success() {
        bail!(
            "mounting the root of {node}: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    // The hostname the node's systemd (and overlayd's fqdn line) sees.
    fs::write(root.join("etc/hostname"), format!("{node}\n"))?;
    if let Some(url) = cloud_init {
        crate::cloud_init::enable(&root, url)?;
    }
    let console = fs::File::create(dir.join("console.log"))?;
    // Its own cgroup first: with --keep-unit nspawn splits the cgroup it runs in into
    // supervisor/ and payload/, so two containers sharing one would share (and fight over)
    // one payload/ — the second systemd's units fail with 219/CGROUP.
    let cgroups = own_cgroups(prefix, node)?;
    let mut join = String::new();
    for g in &cgroups {
        join.push_str(&format!("echo $$ > '{}/cgroup.procs' && ", g.display()));
    }
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(format!("{join}exec systemd-nspawn \"$@\""))
        .arg("sh");
    // --register=no --keep-unit: no machined / system bus on the host is needed;
    // CAP_NET_ADMIN: nspawn does not grant it for a network namespace it did not create, and
    // overlayd writes /proc/sys/net with it.
    c.arg("-D")
        .arg(&root)
        .args(["-b", "--register=no", "--keep-unit", "--quiet"])
        .args(["--capability=CAP_NET_ADMIN", "--console=read-only"])
        .arg(format!("--network-namespace-path={NETNS_DIR}/{ns}"))
        .arg(format!("--machine={prefix}-{node}"))
        .stdin(Stdio::null())
        .stdout(console.try_clone()?)
        .stderr(console);
    {
        use std::os::unix::process::CommandExt;
        // its own process group: a Ctrl-C on `overlay-lab up` does not kill the nodes
        c.process_group(0);
    }
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    fs::write(boot_started_path(prefix, node), format!("{started:.6}\n"))?;
    let child = c.spawn().context("starting systemd-nspawn")?;
    let nspawn_pid = child.id();
    fs::write(dir.join("nspawn.pid"), format!("{nspawn_pid}\n"))?;
    // the container's systemd is nspawn's child (after a short-lived helper child)
    let t0 = Instant::now();
    let init_pid = loop {
        if let Some(p) = init_of(nspawn_pid) {
            break p;
        }
        if t0.elapsed() > Duration::from_secs(20) {
            bail!(
                "{node}: systemd-nspawn started no init within 20 s; console: {}",
                console_tail(&dir)
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let c = Container {
        node: node.to_string(),
        dir,
        nspawn_pid,
        init_pid,
    };
    // `is-system-running --wait` needs the container's bus up: retry until it answers.
    let args: &[&str] = match wait {
        Wait::Booted => &["systemctl", "is-system-running", "--wait"],
        Wait::Manager => &["systemctl", "is-system-running"],
    };
    let state = loop {
        let o = run_timeout(&mut c.command(args), None, Duration::from_secs(90))?;
        let s = String::from_utf8_lossy(&o.stdout).trim().to_string();
        let why = String::from_utf8_lossy(&o.stderr).trim().to_string();
        if matches!(s.as_str(), "running" | "degraded") {
            break s;
        }
        if wait == Wait::Manager && matches!(s.as_str(), "initializing" | "starting") {
            return Ok(c);
        }
        if t0.elapsed() > Duration::from_secs(90) {
            bail!(
                "{node}: boot did not finish within 90 s (state {s:?} {why}); console: {}",
                console_tail(&c.dir)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if state == "degraded" && wait == Wait::Booted {
        let failed = c.run(
            &["systemctl", "--failed", "--no-legend", "--plain"],
            Duration::from_secs(10),
        )?;
        bail!("{node}: booted degraded; failed units: {}", failed.trim());
    }
    Ok(c)
}

/// The cgroup hierarchies systemd uses here: the named `systemd` v1 hierarchy (hybrid hosts)
/// and the unified v2 one. Returns the base directory of this process's cgroup in each.
fn hierarchies() -> Vec<PathBuf> {
    let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mut v = Vec::new();
    for line in own.lines() {
        let mut f = line.splitn(3, ':');
        let (_, ctrl, path) = (f.next(), f.next().unwrap_or(""), f.next().unwrap_or("/"));
        let mount = match ctrl {
            "name=systemd" => PathBuf::from("/sys/fs/cgroup/systemd"),
            "" if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() => {
                PathBuf::from("/sys/fs/cgroup")
            }
            "" => PathBuf::from("/sys/fs/cgroup/unified"),
            _ => continue,
        };
        if mount.join("cgroup.procs").exists() {
            v.push(mount.join(path.trim_start_matches('/')));
        }
    }
    v
}

fn cgroup_name(prefix: &str, node: &str) -> String {
    format!("overlay-lab.{prefix}.{node}")
}

/// Creates the container's own cgroup in every hierarchy.
fn own_cgroups(prefix: &str, node: &str) -> Result<Vec<PathBuf>> {
    let mut v = Vec::new();
    for h in hierarchies() {
        let g = h.join(cgroup_name(prefix, node));
        fs::create_dir_all(&g).with_context(|| format!("creating cgroup {}", g.display()))?;
        v.push(g);
    }
    Ok(v)
}

/// Removes the cgroups of lab `prefix`'s containers (empty once the containers are gone;
/// children first, as rmdir(2) on cgroups requires).
fn remove_cgroups(prefix: &str) {
    fn rm(d: &Path) {
        if let Ok(rd) = fs::read_dir(d) {
            for e in rd.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    rm(&e.path());
                }
            }
        }
        let _ = fs::remove_dir(d);
    }
    let want = format!("overlay-lab.{prefix}.");
    for h in hierarchies() {
        for e in fs::read_dir(&h).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().starts_with(&want) {
                rm(&e.path());
            }
        }
    }
}

/// The child of `nspawn_pid` that runs systemd (the container's PID 1).
fn init_of(nspawn_pid: u32) -> Option<u32> {
    let kids = fs::read_to_string(format!("/proc/{nspawn_pid}/task/{nspawn_pid}/children")).ok()?;
    kids.split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
        .find(|p| {
            fs::read_to_string(format!("/proc/{p}/comm"))
                .map(|c| c.trim() == "systemd")
                .unwrap_or(false)
        })
}

fn console_tail(dir: &Path) -> String {
    let s = fs::read_to_string(dir.join("console.log")).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

/// The booted container of `node`, from its pid file (None when it is not running).
pub fn find(prefix: &str, node: &str) -> Option<Container> {
    let dir = container_dir(prefix, node);
    let nspawn_pid: u32 = fs::read_to_string(dir.join("nspawn.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let init_pid = init_of(nspawn_pid)?;
    Some(Container {
        node: node.to_string(),
        dir,
        nspawn_pid,
        init_pid,
    })
}

/// Installs the package the operator's way, writes the configuration, enables and starts the
/// unit (Type=notify: `enable --now` returns once the first converge is done). Returns the
/// seconds `enable --now` took.
pub fn install(c: &Container, deb: &Path, config: &str) -> Result<f64> {
    let name = deb
        .file_name()
        .ok_or_else(|| anyhow!("{}: not a file", deb.display()))?
        .to_string_lossy()
        .into_owned();
    fs::copy(deb, c.root().join("var/tmp").join(&name))
        .with_context(|| format!("copying {} into {}", deb.display(), c.node))?;
    let inside = format!("/var/tmp/{name}");
    c.run(
        &[
            "apt-get",
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            &inside,
        ],
        Duration::from_secs(180),
    )?;
    fs::write(c.root().join("etc/overlayd/overlayd.toml"), config)?;
    if config.lines().any(|l| l.starts_with("ha_peer")) {
        // a router of a pair: the package's drop-in, as docs/router-ha.md tells operators
        let d = c.root().join("etc/systemd/system/overlayd.service.d");
        fs::create_dir_all(&d)?;
        fs::copy(
            c.root().join("usr/share/overlayd/router-pair.conf"),
            d.join("router-pair.conf"),
        )
        .with_context(|| format!("{}: the package's router-pair.conf", c.node))?;
        c.run(&["systemctl", "daemon-reload"], Duration::from_secs(60))?;
    }
    if config.lines().any(|l| l.trim() == "flood = \"evpn\"") {
        // flood = evpn under systemd: the package's drop-in that lets overlayd write /etc/frr
        let d = c.root().join("etc/systemd/system/overlayd.service.d");
        fs::create_dir_all(&d)?;
        fs::copy(
            c.root().join("usr/share/overlayd/evpn.conf"),
            d.join("evpn.conf"),
        )
        .with_context(|| format!("{}: the package's evpn.conf", c.node))?;
        c.run(&["systemctl", "daemon-reload"], Duration::from_secs(60))?;
    }
    let t0 = Instant::now();
    c.run(
        &["systemctl", "enable", "--now", "overlayd"],
        Duration::from_secs(120),
    )?;
    Ok(t0.elapsed().as_secs_f64())
}

/// `systemctl is-active overlayd` inside.
pub fn is_active(c: &Container) -> String {
    c.probe(
        &["systemctl", "is-active", "overlayd"],
        Duration::from_secs(10),
    )
    .map(|(_, s)| s)
    .unwrap_or_else(|e| format!("unknown ({e:#})"))
}

/// Clean shutdown of one container (`systemctl poweroff` inside; nspawn exits when its
/// init does) and its root unmounted; the disk (upper layer) stays.
pub fn shutdown(c: &Container) -> Result<()> {
    let _ = c.probe(&["systemctl", "poweroff"], Duration::from_secs(10));
    let t0 = Instant::now();
    while alive(c.nspawn_pid as i32) {
        reap(c.nspawn_pid as i32);
        if t0.elapsed() > Duration::from_secs(30) {
            // SAFETY: kill(2) on the nspawn of this container (its pid file).
            unsafe { libc::kill(c.nspawn_pid as i32, libc::SIGKILL) };
            bail!("{}: did not power off within 30 s (killed)", c.node);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    unmount(&c.root());
    let _ = fs::remove_file(c.dir.join("nspawn.pid"));
    Ok(())
}

/// What a reboot takes from the kernel of namespace `ns`, as far as overlayd is concerned:
/// its links (device group 79), routes (protocol 79) and rule, nftables, and the sysctls it
/// raises back at their boot defaults. eth0 and its DHCP address stay (the instance's ENI).
pub fn reset_kernel_state(ns: &str) -> Result<()> {
    let batch = "link delete group 79\n";
    let _ = crate::sys::ip_batch(Some(ns), batch);
    for cmd in [
        "ip route flush table all proto 79",
        "ip rule del pref 1079",
        "nft flush ruleset",
        "sysctl -qw net.ipv4.conf.eth0.force_igmp_version=0",
        "sysctl -qw net.ipv4.ip_forward=0",
        "sysctl -qw net.ipv4.igmp_max_memberships=20",
    ] {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).args(cmd.split(' '));
        let _ = run_timeout(&mut c, None, Duration::from_secs(10))?;
    }
    Ok(())
}

/// Waits for overlayd's start job to finish; returns `systemctl is-active overlayd` then.
pub fn wait_active(c: &Container, timeout: Duration) -> Result<String> {
    let t0 = Instant::now();
    loop {
        let s = is_active(c);
        if s != "activating" && s != "inactive" || t0.elapsed() > timeout {
            return Ok(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every container's systemd runs as the host's root and takes inotify instances from the one
/// per-user limit (fs.inotify.max_user_instances, 128 by default: ~15 containers, then path
/// units fail with "resources"). Raised (never lowered) to 64 per container.
pub fn raise_inotify_limit(containers: usize) -> Result<()> {
    let key = "/proc/sys/fs/inotify/max_user_instances";
    let have: usize = fs::read_to_string(key)?.trim().parse().unwrap_or(0);
    let want = (containers * 64).max(512);
    if have < want {
        fs::write(key, want.to_string()).with_context(|| format!("raising {key} to {want}"))?;
        eprintln!("overlay-lab: raised fs.inotify.max_user_instances {have} -> {want} (systemd in {containers} containers)");
    }
    Ok(())
}

/// Stops every container of lab `prefix` (SIGTERM to nspawn = clean shutdown of the node,
/// SIGKILL after 15 s) and unmounts their roots. Idempotent. Returns how many were running.
pub fn stop_all(prefix: &str) -> usize {
    let mut pids = Vec::new();
    let Ok(rd) = fs::read_dir(run_dir(prefix)) else {
        return 0;
    };
    let dirs: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path().join("container"))
        .filter(|d| d.exists())
        .collect();
    for d in &dirs {
        if let Some(pid) = fs::read_to_string(d.join("nspawn.pid"))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            if alive(pid) {
                // SAFETY: kill(2) on the pid of the nspawn we started (its pid file).
                unsafe { libc::kill(pid, libc::SIGTERM) };
                pids.push(pid);
            }
        }
    }
    let t0 = Instant::now();
    while pids.iter().any(|p| alive(*p)) && t0.elapsed() < Duration::from_secs(15) {
        pids.iter().for_each(|p| reap(*p));
        std::thread::sleep(Duration::from_millis(20));
    }
    for p in &pids {
        if alive(*p) {
            // SAFETY: as above.
            unsafe { libc::kill(*p, libc::SIGKILL) };
        }
    }
    pids.iter().for_each(|p| reap(*p));
    for d in &dirs {
        unmount(&d.join("root"));
    }
    remove_cgroups(prefix);
    pids.len()
}

fn alive(pid: i32) -> bool {
    crate::daemons::alive(pid as u32)
}

/// Collects `pid` if it is an exited child of this process (an nspawn this process started),
/// so it does not linger as a zombie. Only that pid: other children have their own waiters.
fn reap(pid: i32) {
    // SAFETY: waitpid(2) with WNOHANG on one pid; ECHILD when it is not our child.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
}

/// Unmounts `path` if something is mounted there (lazily: a shell still inside cannot keep
/// it busy).
pub fn unmount(path: &Path) {
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let p = path.to_string_lossy();
    if mounts.lines().any(|l| l.split(' ').nth(1) == Some(&*p)) {
        let _ = Command::new("umount").arg("-l").arg(path).status();
    }
}

/// Summed resident memory (KiB) of every process in the container's PID namespace.
pub fn rss_kib(c: &Container) -> u64 {
    let Ok(want) = fs::read_link(format!("/proc/{}/ns/pid", c.init_pid)) else {
        return 0;
    };
    let mut total = 0;
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if fs::read_link(e.path().join("ns/pid")).ok().as_ref() == Some(&want) {
            total += crate::daemons::rss_kib(pid).unwrap_or(0);
        }
    }
    total
}
