//! Helpers for cross-crate integration tests (root + network namespaces).
//!
//! Rules the helpers enforce:
//! - every test names its namespaces with a unique prefix (`unique_prefix`), so parallel tests
//!   and parallel test runs do not collide;
//! - everything a test creates is removed by a Drop guard, also when the test panics;
//! - a test that cannot run here (not root, no netns, binary missing) fails when `CI=true` and
//!   is skipped with a printed reason otherwise (`ready()`);
//! - every subprocess has a timeout.

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

pub use overlay_testkit::{
    enter_netns, in_ci, in_netns, ip_batch, ns_exists, run, sh, NsGuard, NETNS_DIR,
};

/// Heavy tests (whole labs) take this so at most one runs at a time per test binary.
pub fn heavy_lock() -> MutexGuard<'static, ()> {
    static M: Mutex<()> = Mutex::new(());
    M.lock().unwrap_or_else(|e| e.into_inner())
}

/// `ot<pid%10000><abbrev>`: valid as an overlay-lab prefix ([a-z0-9], starts with a letter).
pub fn unique_prefix(abbrev: &str) -> String {
    assert!(abbrev
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
    let p = format!("ot{}{}", std::process::id() % 10000, abbrev);
    assert!(p.len() <= 16, "prefix {p} too long");
    p
}

/// target/debug (or the profile dir) holding this test executable's sibling binaries.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> -> target/<profile>
    exe.parent()
        .and_then(|d| d.parent())
        .expect("test executable lives in target/<profile>/deps")
        .to_path_buf()
}

/// Path of a workspace binary (overlayd, overlay-lab). `cargo test` does not build the binaries
/// of other packages, so build them once per test process if missing or older than sources.
pub fn workspace_bin(name: &str) -> Result<PathBuf> {
    static BUILT: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    let r = BUILT.get_or_init(|| {
        if std::env::var_os("OVERLAY_TESTS_NO_BUILD").is_some() {
            return Ok(());
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        let target_dir = bin_dir()
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let profile = bin_dir()
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut c = Command::new(cargo);
        c.arg("build")
            .arg("--manifest-path")
            .arg(&manifest)
            .args(["-p", "overlay-agent", "--bin", "overlayd"])
            .args(["-p", "overlay-lab", "--bin", "overlay-lab"])
            .arg("--target-dir")
            .arg(&target_dir);
        if profile == "release" {
            c.arg("--release");
        }
        match run(&mut c, Duration::from_secs(900)) {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(format!(
                "cargo build of overlayd/overlay-lab failed: {}",
                String::from_utf8_lossy(&o.stderr)
            )),
            Err(e) => Err(format!("{e:#}")),
        }
    });
    let p = bin_dir().join(name);
    if p.is_file() {
        return Ok(p);
    }
    if let Err(e) = r {
        bail!("{name} not found at {} ({e})", p.display());
    }
    bail!("{name} not found at {}", p.display())
}

/// The overlayd under test: target/<profile>/overlayd, or `OVERLAY_TESTS_OVERLAYD` (only meant
/// for developing the tests themselves against a stand-in).
pub fn overlayd() -> PathBuf {
    if let Some(p) = std::env::var_os("OVERLAY_TESTS_OVERLAYD") {
        return PathBuf::from(p);
    }
    workspace_bin("overlayd").expect("overlayd binary")
}

pub fn overlay_lab() -> PathBuf {
    workspace_bin("overlay-lab").expect("overlay-lab binary")
}

/// Can this test run here? Returns false (after printing why) to skip; panics under
/// `CI=true` (the one gate, [`overlay_testkit::gate`]): root, iproute2, the workspace
/// binaries, and a namespace that can be created.
pub fn ready(test: &str) -> bool {
    // checked once per test process (parallel tests would race on the probe namespace)
    static ENV: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    let env = ENV.get_or_init(|| check_env().map_err(|e| format!("{e:#}")));
    overlay_testkit::gate(test, &["ip", "bridge"], || env.clone())
}

fn check_env() -> Result<()> {
    if std::env::var_os("OVERLAY_TESTS_OVERLAYD").is_none() {
        workspace_bin("overlayd")?;
    }
    workspace_bin("overlay-lab")?;
    let probe = format!("{}probe", unique_prefix("x"));
    let o = run(
        Command::new("ip").args(["netns", "add", &probe]),
        Duration::from_secs(10),
    )?;
    let _ = run(
        Command::new("ip").args(["netns", "del", &probe]),
        Duration::from_secs(10),
    );
    if !o.status.success() {
        bail!(
            "cannot create network namespaces: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(())
}

pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Namespaces named `<prefix>-*` (a lab's).
pub fn namespaces_with_prefix(prefix: &str) -> Vec<String> {
    let want = format!("{prefix}-");
    let mut v: Vec<String> = std::fs::read_dir(NETNS_DIR)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with(&want))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A scratch directory removed on drop.
pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "overlay-tests-{}-{tag}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A single overlay node namespace `<p>-node` whose `eth0` (10.0.0.10/22, MTU `mtu`) is the
/// peer of `u0` in a second namespace `<p>-sw` (10.0.0.1/22) standing in for the VPC subnet.
/// Like an EC2 instance, the node boots with a DHCP default route via 10.0.0.1 on `eth0`.
/// IPv6 is disabled in both so link-local addresses do not make dumps racy.
pub struct Node {
    pub ns: String,
    pub sw: String,
    pub dir: PathBuf,
    _guard: NsGuard,
    _dir: TempDir,
}

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Node {
    pub fn new(prefix: &str, mtu: u32) -> Node {
        let ns = format!("{prefix}-node");
        let sw = format!("{prefix}-sw");
        // IPv6 off in both (NsGuard): link-local addresses would make dumps racy
        let guard = NsGuard::new(&[&ns, &sw]);
        let dir = temp_dir(prefix);
        ip_batch(
            &sw,
            &format!(
                "link set lo up\nlink add u0 mtu {mtu} type veth peer name eth0 netns {ns} mtu {mtu}\n\
                 addr add 10.0.0.1/22 dev u0\nlink set u0 up\n"
            ),
        );
        ip_batch(
            &ns,
            // as an EC2 instance boots: a DHCP default route via the VPC router
            "link set lo up\naddr add 10.0.0.10/22 dev eth0\nlink set eth0 up\n\
             route add default via 10.0.0.1 dev eth0 proto dhcp\n",
        );
        std::fs::create_dir_all(dir.join("state")).unwrap();
        std::fs::write(dir.join("overlayd.toml"), "# test\n").unwrap();
        std::fs::write(
            dir.join("hosts"),
            "127.0.0.1 localhost\n192.0.2.7 foreign.example # not ours\n",
        )
        .unwrap();
        std::fs::write(dir.join("resolv.conf"), "nameserver 192.0.2.53\n").unwrap();
        Node {
            ns,
            sw,
            dir: dir.clone(),
            _guard: guard,
            _dir: TempDir(dir),
        }
    }

    pub fn path(&self, f: &str) -> String {
        self.dir.join(f).to_string_lossy().into_owned()
    }

    /// Flags for a valid node of `role` (host/management get the gateway).
    pub fn flags(&self, role: &str) -> Vec<String> {
        let mut v: Vec<String> = [
            "--config",
            &self.path("overlayd.toml"),
            "--role",
            role,
            "--underlay",
            "eth0",
            "--group",
            "239.255.0.1",
            "--state-dir",
            &self.path("state"),
            "--hosts-file",
            &self.path("hosts"),
            "--resolv-conf",
            &self.path("resolv.conf"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if role == "router" {
            v.extend(["--address".into(), "10.101.0.1/16".into()]);
        } else {
            v.extend([
                "--address".into(),
                "10.101.0.10/16".into(),
                "--gateway".into(),
                "10.101.0.1".into(),
            ]);
        }
        v
    }

    /// `ip netns exec NS overlayd SUB ARGS` with a clean OVERLAYD_* environment.
    pub fn overlayd(&self, sub: &str, args: &[String]) -> Output {
        overlayd_in(&self.ns, sub, args)
    }
}

pub fn overlayd_in(ns: &str, sub: &str, args: &[String]) -> Output {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns])
        .arg(overlayd())
        .arg(sub)
        .args(args);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("OVERLAYD_") {
            c.env_remove(k);
        }
    }
    run(&mut c, Duration::from_secs(60)).expect("overlayd ran")
}

pub fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Drop volatile fields (counters, timers, ages) from `ip -j` output, recursively.
pub fn normalise(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| {
                !(k.starts_with("stats")
                    || k.ends_with("_timer")
                    || k == "used"
                    || k == "updated"
                    || k == "age"
                    || k == "expires"
                    || k == "cacheinfo")
            });
            for x in m.values_mut() {
                normalise(x);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(normalise),
        _ => {}
    }
}

fn ip_json(ns: &str, args: &[&str]) -> Value {
    let mut full = vec!["ip", "-n", ns, "-j", "-d"];
    full.extend_from_slice(args);
    let out = sh(&full);
    let mut v: Value = if out.trim().is_empty() {
        Value::Array(vec![])
    } else {
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("ip {args:?} json: {e}: {out}"))
    };
    normalise(&mut v);
    v
}

/// Everything a node's configuration could touch, normalised.
#[derive(Debug, PartialEq, Clone)]
pub struct Snapshot {
    pub links: Value,
    pub addrs: Value,
    pub routes: Value,
    pub rules: Value,
    pub sysctls: Vec<(String, String)>,
}

pub const SYSCTLS: &[&str] = &[
    "net.ipv4.ip_forward",
    "net.ipv4.conf.all.forwarding",
    "net.ipv4.conf.default.forwarding",
    "net.ipv4.conf.all.rp_filter",
    "net.ipv4.conf.default.rp_filter",
    "net.ipv4.conf.all.force_igmp_version",
    "net.ipv4.conf.eth0.force_igmp_version",
    "net.ipv4.conf.eth0.forwarding",
    "net.ipv4.conf.eth0.rp_filter",
    "net.ipv4.igmp_max_memberships",
    "net.ipv4.icmp_echo_ignore_broadcasts",
];

pub fn sysctls(ns: &str, keys: &[&str]) -> Vec<(String, String)> {
    keys.iter()
        .map(|k| {
            let path = format!("/proc/sys/{}", k.replace('.', "/"));
            let o = run(
                Command::new("ip").args(["netns", "exec", ns, "cat", &path]),
                Duration::from_secs(10),
            )
            .unwrap();
            let val = if o.status.success() {
                String::from_utf8_lossy(&o.stdout).trim().to_string()
            } else {
                "<absent>".into()
            };
            (k.to_string(), val)
        })
        .collect()
}

pub fn snapshot(ns: &str, extra_sysctls: &[&str]) -> Snapshot {
    let mut keys: Vec<&str> = SYSCTLS.to_vec();
    keys.extend_from_slice(extra_sysctls);
    Snapshot {
        links: ip_json(ns, &["link", "show"]),
        addrs: ip_json(ns, &["addr", "show"]),
        routes: ip_json(ns, &["route", "show", "table", "all"]),
        rules: ip_json(ns, &["rule", "show"]),
        sysctls: sysctls(ns, &keys),
    }
}

/// Wait (at most 10 s) until no IPv6 address in `ns` is still tentative (DAD finishing right
/// after links come up produces netlink events that are nobody's change).
pub fn wait_ipv6_settled(ns: &str) {
    wait_for(Duration::from_secs(10), || {
        Command::new("ip")
            .args(["-n", ns, "-6", "addr", "show", "tentative"])
            .output()
            .map(|o| o.status.success() && o.stdout.is_empty())
            .unwrap_or(true)
    });
}

/// A snapshot once the namespace has settled (link operstate changes are asynchronous after a
/// link comes up): two equal snapshots 200 ms apart, at most 5 s.
pub fn settled_snapshot(ns: &str, extra_sysctls: &[&str]) -> Snapshot {
    let mut last = snapshot(ns, extra_sysctls);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(200));
        let now = snapshot(ns, extra_sysctls);
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

/// Readable diff of two snapshots for assertion messages: only the entries that differ.
pub fn diff(a: &Snapshot, b: &Snapshot) -> String {
    let mut s = String::new();
    for (name, x, y) in [
        ("links", &a.links, &b.links),
        ("addrs", &a.addrs, &b.addrs),
        ("routes", &a.routes, &b.routes),
        ("rules", &a.rules, &b.rules),
    ] {
        let xs = x.as_array().cloned().unwrap_or_default();
        let ys = y.as_array().cloned().unwrap_or_default();
        for e in xs.iter().filter(|e| !ys.contains(e)) {
            s.push_str(&format!("{name} before only: {e}\n"));
        }
        for e in ys.iter().filter(|e| !xs.contains(e)) {
            s.push_str(&format!("{name} after only:  {e}\n"));
        }
    }
    for (p, q) in a.sysctls.iter().zip(&b.sysctls) {
        if p != q {
            s.push_str(&format!("sysctl {}: {} -> {}\n", p.0, p.1, q.1));
        }
    }
    s
}

/// Only the entries of a dump array whose `key` (e.g. "ifname", "dev") is in `names`.
pub fn only(v: &Value, key: &str, names: &[&str]) -> Vec<Value> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter(|e| e[key].as_str().map(|n| names.contains(&n)).unwrap_or(false))
        .cloned()
        .collect()
}

pub fn link_exists(ns: &str, dev: &str) -> bool {
    Command::new("ip")
        .args(["-n", ns, "link", "show", "dev", dev])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// An overlay lab built with `overlay-lab up --json`, torn down on drop.
pub struct Lab {
    pub prefix: String,
    pub up: Value,
}

impl Lab {
    pub fn up(prefix: &str, extra: &[&str]) -> Result<Lab> {
        // remove leftovers of an earlier crashed run with the same prefix
        let _ = lab_cmd(&["down", "--prefix", prefix]);
        let mut args = vec!["up", "--prefix", prefix, "--json"];
        args.extend_from_slice(extra);
        let o = lab_cmd(&args)?;
        let mut lab = Lab {
            prefix: prefix.to_string(),
            up: Value::Null,
        };
        if o.status.code() == Some(2) || o.stdout.is_empty() {
            return Err(anyhow!("overlay-lab up failed:\n{}", text(&o)));
        }
        let up: Value = serde_json::from_slice(&o.stdout)
            .with_context(|| format!("overlay-lab up output is not JSON:\n{}", text(&o)))?;
        lab.up = up;
        Ok(lab)
    }

    pub fn status(&self) -> Value {
        let o = lab_cmd(&["status", "--prefix", &self.prefix, "--json"]).unwrap();
        assert!(o.status.success(), "status failed:\n{}", text(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    }

    pub fn node<'a>(&'a self, name: &str) -> &'a Value {
        self.up["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == name)
            .unwrap_or_else(|| panic!("no node {name} in lab"))
    }

    pub fn node_flags(&self, name: &str) -> Vec<String> {
        self.node(name)["overlayd_flags"]
            .as_array()
            .expect("overlayd_flags in lab JSON")
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = lab_cmd(&["down", "--prefix", &self.prefix]);
    }
}

/// `overlay-lab exec --prefix P NODE -- CMD...` (a command inside an instance-lab node).
pub fn lab_exec(prefix: &str, node: &str, cmd: &[&str]) -> Output {
    let mut args = vec!["exec", "--prefix", prefix, node, "--"];
    args.extend_from_slice(cmd);
    lab_cmd(&args).unwrap()
}

pub fn lab_cmd(args: &[&str]) -> Result<Output> {
    let mut c = Command::new(overlay_lab());
    c.args(args).env("OVERLAY_LAB_OVERLAYD", overlayd());
    c.env_remove("OVERLAY_LAB_PREFIX");
    Ok(run(&mut c, Duration::from_secs(300))?)
}

/// A child process killed (and reaped) on drop.
pub struct Bg {
    pub child: Child,
}

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `tcpdump` writing a pcap; returns once it is listening (or after 10 s).
pub fn tcpdump(ns: &str, dev: &str, filter: &str, pcap: &Path) -> Result<Bg> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "tcpdump", "-U", "-n", "-i", dev, "-w"])
        .arg(pcap)
        .arg(filter)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting tcpdump")?;
    let err = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(|l| l.ok()) {
            if line.contains("listening on") {
                let _ = tx.send(());
            }
        }
    });
    let bg = Bg { child };
    rx.recv_timeout(Duration::from_secs(10))
        .map_err(|_| anyhow!("tcpdump did not start listening on {ns}/{dev}"))?;
    Ok(bg)
}

/// Packets of a pcap file (Ethernet link type), as raw frames.
pub fn pcap_frames(path: &Path) -> Vec<Vec<u8>> {
    let b = std::fs::read(path).unwrap_or_default();
    if b.len() < 24 {
        return vec![];
    }
    let le = match &b[0..4] {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => return vec![],
    };
    let u32_at = |i: usize| {
        let x = [b[i], b[i + 1], b[i + 2], b[i + 3]];
        if le {
            u32::from_le_bytes(x)
        } else {
            u32::from_be_bytes(x)
        }
    };
    let mut frames = Vec::new();
    let mut i = 24;
    while i + 16 <= b.len() {
        let incl = u32_at(i + 8) as usize;
        let start = i + 16;
        if start + incl > b.len() {
            break;
        }
        frames.push(b[start..start + incl].to_vec());
        i = start + incl;
    }
    frames
}

/// IGMP messages in Ethernet frames: (igmp type, group address).
pub fn igmp_messages(frames: &[Vec<u8>]) -> Vec<(u8, [u8; 4])> {
    let mut v = Vec::new();
    for f in frames {
        if f.len() < 14 + 20 || f[12..14] != [0x08, 0x00] {
            continue;
        }
        let ip = &f[14..];
        let ihl = ((ip[0] & 0x0f) as usize) * 4;
        if ip[9] != 2 || ip.len() < ihl + 8 {
            continue;
        }
        let igmp = &ip[ihl..];
        let group = if igmp[0] == 0x22 && igmp.len() >= 16 {
            // IGMPv3 report: first group record's multicast address
            [igmp[12], igmp[13], igmp[14], igmp[15]]
        } else {
            [igmp[4], igmp[5], igmp[6], igmp[7]]
        };
        v.push((igmp[0], group));
    }
    v
}

/// Poll `f` until it returns true or `timeout` passes.
pub fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// A NETLINK_ROUTE socket inside a namespace, subscribed to link, address, route and rule
/// notifications (IPv4 and IPv6). Subscribed before it is returned, so nothing that happens
/// afterwards can be missed (unlike a monitor process that needs time to start).
pub struct NetlinkWatch {
    sock: netlink_sys::Socket,
}

impl NetlinkWatch {
    pub fn start(ns: &str) -> Result<NetlinkWatch> {
        let ns = ns.to_string();
        let sock = std::thread::spawn(move || -> Result<netlink_sys::Socket> {
            // only this short-lived thread enters the namespace; the socket stays in it
            enter_netns(&ns)?;
            let mut sock = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_ROUTE)?;
            let groups = (libc::RTMGRP_LINK
                | libc::RTMGRP_IPV4_IFADDR
                | libc::RTMGRP_IPV4_ROUTE
                | libc::RTMGRP_IPV4_RULE
                | libc::RTMGRP_IPV6_IFADDR
                | libc::RTMGRP_IPV6_ROUTE) as u32;
            sock.bind(&netlink_sys::SocketAddr::new(0, groups))?;
            sock.set_non_blocking(true)?;
            Ok(sock)
        })
        .join()
        .map_err(|_| anyhow!("netlink watch thread panicked"))??;
        Ok(NetlinkWatch { sock })
    }

    /// Everything received so far, waiting until the socket has been quiet for `quiet`
    /// (bounded by 10 s). Each event as "RTM_NEWLINK (type 16) ifindex 4" and the like,
    /// decoded by netlink-packet-route.
    pub fn drain(&self, quiet: Duration) -> Vec<String> {
        use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
        use netlink_packet_route::RouteNetlinkMessage as M;
        let mut events = Vec::new();
        let start = Instant::now();
        let mut last = Instant::now();
        while last.elapsed() < quiet && start.elapsed() < Duration::from_secs(10) {
            let mut buf: Vec<u8> = Vec::with_capacity(65536);
            let n = match self.sock.recv(&mut buf, 0) {
                Ok(n) if n > 0 => n,
                _ => {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
            };
            last = Instant::now();
            let mut off = 0;
            while off < n {
                let Ok(msg) = NetlinkMessage::<M>::deserialize(&buf[off..n]) else {
                    events.push("undecodable (type ?)".into());
                    break;
                };
                let len = msg.header.length as usize;
                let ty = msg.header.message_type;
                let ev = match &msg.payload {
                    NetlinkPayload::InnerMessage(m) => match m {
                        M::NewLink(l) => {
                            format!("RTM_NEWLINK (type {ty}) ifindex {}", l.header.index)
                        }
                        M::DelLink(l) => {
                            format!("RTM_DELLINK (type {ty}) ifindex {}", l.header.index)
                        }
                        M::NewAddress(a) => format!(
                            "RTM_NEWADDR (type {ty}) family {} ifindex {}",
                            u8::from(a.header.family),
                            a.header.index
                        ),
                        M::DelAddress(a) => format!(
                            "RTM_DELADDR (type {ty}) family {} ifindex {}",
                            u8::from(a.header.family),
                            a.header.index
                        ),
                        M::NewRoute(_) => format!("RTM_NEWROUTE (type {ty})"),
                        M::DelRoute(_) => format!("RTM_DELROUTE (type {ty})"),
                        M::NewRule(_) => format!("RTM_NEWRULE (type {ty})"),
                        M::DelRule(_) => format!("RTM_DELRULE (type {ty})"),
                        _ => format!("other (type {ty})"),
                    },
                    _ => format!("other (type {ty})"),
                };
                events.push(ev);
                if len == 0 {
                    break;
                }
                off += (len + 3) & !3;
            }
        }
        events
    }
}
