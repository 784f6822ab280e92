//! `overlayd run` under fire: the repair catalogue with traffic checks, pause/resume,
//! SIGTERM leaving the network up, no netlink writes while idle, and kill -9 at random
//! points of a from-scratch converge. Root + network namespaces (fail under CI=true).

mod common;
use common::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Daemon {
    child: Option<Child>,
}

impl Daemon {
    fn start(ns: &Ns, args: &[String]) -> Daemon {
        Self::start_logging(ns, args, Stdio::null())
    }
    fn start_logging(ns: &Ns, args: &[String], log: impl Into<Stdio>) -> Daemon {
        Self::start_env(ns, args, log, &[])
    }
    fn start_env(ns: &Ns, args: &[String], log: impl Into<Stdio>, env: &[(&str, &str)]) -> Daemon {
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .arg(overlayd())
            .arg("run")
            .args(args)
            .env("OVERLAYD_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Daemon { child: Some(child) }
    }
    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }
    fn signal(&self, sig: &str) {
        sh(&format!("kill -{sig} {}", self.pid()));
    }
    fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let t = Instant::now();
        let c = self.child.as_mut().unwrap();
        while t.elapsed() < timeout {
            if let Some(s) = c.try_wait().unwrap() {
                self.child = None;
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("daemon did not exit within {timeout:?}");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn status(ns: &Ns, args: &[String]) -> serde_json::Value {
    let o = ns.overlayd("status", &[args, &["--json".to_string()]].concat());
    serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null)
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while t.elapsed() < timeout {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out after {timeout:?} waiting for: {what}");
}

fn wait_converged(ns: &Ns, args: &[String]) {
    wait_until(
        "daemon running and converged",
        Duration::from_secs(10),
        || {
            let s = status(ns, args);
            s["daemon"] == "running" && s["status"]["converged"] == true
        },
    );
}

fn ping(ns: &Ns, ip: &str) -> bool {
    Command::new("ip")
        .args(["netns", "exec", &ns.name, "ping", "-c1", "-W1", ip])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

fn ping_soon(ns: &Ns, ip: &str) -> bool {
    (0..5).any(|_| ping(ns, ip))
}

/// The peer namespace becomes a second overlay host (10.101.0.20) so traffic can be checked.
fn peer_node(ns: &Ns) {
    let d = ns.dir.display();
    sh(&format!(
        "ip netns exec {p} {bin} apply --role host --underlay eth0 --address 10.101.0.20/16 --gateway 10.101.0.1 \
         --group 239.255.0.1 --state-dir {d}/peer-state --hosts-file {d}/peer-hosts --resolv-conf {d}/peer-resolv",
        p = ns.peer,
        bin = overlayd().display()
    ));
}

/// Daemon flags: a 1 s resync so tests of event-less state stay short.
fn daemon_args(base: Vec<String>) -> Vec<String> {
    let mut a = base;
    a.extend(["--resync-interval", "1"].map(String::from));
    a
}

#[test]
fn daemon_repairs_the_catalogue_and_traffic_passes_again() {
    if !require_root("daemon_repairs") {
        return;
    }
    let ns = Ns::new("dc");
    peer_node(&ns);
    let args = daemon_args(ns.host_args());
    let _d = Daemon::start(&ns, &args);
    wait_converged(&ns, &args);
    assert!(
        ping_soon(&ns, "10.101.0.20"),
        "overlay does not pass traffic after converge"
    );

    // (name, break command run inside the node namespace)
    let catalogue: &[(&str, &str)] = &[
        ("VTEP deleted", "ip link del ethvxlan0"),
        ("bridge deleted", "ip link del cloudbr0"),
        ("VTEP down", "ip link set ethvxlan0 down"),
        ("bridge down", "ip link set cloudbr0 down"),
        ("VTEP detached", "ip link set ethvxlan0 nomaster"),
        // The kernel changes a VXLAN group in place: no window for the daemon to win.
        ("VTEP group changed", "ip link set ethvxlan0 type vxlan group 239.255.9.9 dev eth0"),
        // Recreating with another VNI/underlay needs delete + add; the daemon repairs the
        // gap faster than any shell can fill it, so these are done under `overlayd pause`
        // (as an operator would) and must be repaired by the resume reconcile. They carry
        // overlayd's mark (device group 79), as its own VTEP does after a configuration
        // change; an unmarked one would be foreign and refused (see executor_netns adopt).
        ("VTEP recreated with wrong VNI", "PAUSE ip link del ethvxlan0 && ip link add ethvxlan0 group 79 type vxlan id 200 dstport 4789 group 239.255.0.1 dev eth0"),
        ("VTEP recreated with wrong underlay", "PAUSE ip link del ethvxlan0 && ip link add ethvxlan0 group 79 type vxlan id 100 dstport 4789 group 239.255.0.1 dev lo"),
        ("MTU changed", "ip link set ethvxlan0 mtu 1300"),
        ("overlay address removed", "ip addr del 10.101.0.10/16 dev cloudbr0"),
        ("overlay-sourced rule removed", "ip rule del priority 1079"),
        ("gateway route of table 79 removed", "ip route del default via 10.101.0.1 table 79"),
        ("IMDS route removed", "ip route del 169.254.169.254/32 dev eth0"),
        ("igmp_max_memberships reset", "echo 20 > /proc/sys/net/ipv4/igmp_max_memberships"),
        ("IGMP snooping on cloudbr0 turned on", "ip link set cloudbr0 type bridge mcast_snooping 1"),
        ("force_igmp_version reset", "echo 0 > /proc/sys/net/ipv4/conf/eth0/force_igmp_version"),
        ("bridge MAC changed", "ip link set cloudbr0 address 02:aa:bb:cc:dd:ee"),
    ];
    for (name, cmd) in catalogue {
        if let Some(cmd) = cmd.strip_prefix("PAUSE ") {
            ns.overlayd_ok("pause", &args);
            wait_until("paused", Duration::from_secs(5), || {
                status(&ns, &args)["status"]["paused"] == true
            });
            ns.exec(&format!("bash -c '{cmd}'"));
            assert!(ns.pending(&args) > 0, "{name}: break not visible");
            ns.overlayd_ok("resume", &args);
            wait_until(&format!("{name} repaired"), Duration::from_secs(5), || {
                ns.pending(&args) == 0
            });
            assert!(
                ping_soon(&ns, "10.101.0.20"),
                "{name}: overlay traffic did not recover"
            );
            continue;
        }
        // A break can lose the race against the daemon (it repairs within ~1 ms); retry
        // until the break itself went through, so each item is really exercised.
        let mut broke = false;
        for _ in 0..20 {
            let ok = Command::new("ip")
                .args(["netns", "exec", &ns.name, "bash", "-c", cmd])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap()
                .success();
            if ok {
                broke = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(broke, "{name}: could not apply the break `{cmd}`");
        wait_until(&format!("{name} repaired"), Duration::from_secs(5), || {
            ns.pending(&args) == 0
        });
        assert!(
            ping_soon(&ns, "10.101.0.20"),
            "{name}: overlay traffic did not recover"
        );
    }
    let s = status(&ns, &args);
    assert!(
        s["status"]["repairs"].as_u64().unwrap() >= catalogue.len() as u64,
        "{s}"
    );
}

#[test]
fn router_daemon_repairs_forwarding_and_nat() {
    if !require_root("router_daemon") {
        return;
    }
    let ns = Ns::new("rd");
    let base = ns.args(&[
        "--role",
        "router",
        "--address",
        "10.101.0.1/16",
        "--group",
        "239.255.0.1",
        "--nat",
    ]);
    let args = daemon_args(base);
    let _d = Daemon::start(&ns, &args);
    wait_converged(&ns, &args);
    ns.exec("sh -c 'echo 0 > /proc/sys/net/ipv4/ip_forward'");
    wait_until("ip_forward repaired", Duration::from_secs(5), || {
        ns.sysctl("net/ipv4/ip_forward") == "1"
    });
    ns.exec("nft flush table ip overlayd");
    wait_until("NAT table repaired", Duration::from_secs(5), || {
        ns.exec("nft list table ip overlayd").contains("masquerade")
    });
    assert_eq!(ns.pending(&args), 0);
}

#[test]
fn pause_resume_and_sigterm_leaves_network_up() {
    if !require_root("pause_sigterm") {
        return;
    }
    let ns = Ns::new("ps");
    peer_node(&ns);
    let args = daemon_args(ns.host_args());
    let mut d = Daemon::start(&ns, &args);
    wait_converged(&ns, &args);
    ns.overlayd_ok("pause", &args);
    ns.ip("link set ethvxlan0 mtu 1400");
    std::thread::sleep(Duration::from_millis(1500)); // longer than the resync interval
    assert!(
        ns.ip("link show ethvxlan0").contains("mtu 1400"),
        "paused daemon must not repair"
    );
    assert_eq!(status(&ns, &args)["status"]["paused"], true);
    ns.overlayd_ok("resume", &args);
    wait_until("repaired after resume", Duration::from_secs(5), || {
        ns.pending(&args) == 0
    });
    // SIGUSR1 / SIGUSR2 do the same.
    d.signal("USR1");
    wait_until("paused by SIGUSR1", Duration::from_secs(5), || {
        status(&ns, &args)["status"]["paused"] == true
    });
    d.signal("USR2");
    wait_until("resumed by SIGUSR2", Duration::from_secs(5), || {
        status(&ns, &args)["status"]["paused"] == false
    });
    // SIGTERM: exits 0, the overlay stays.
    d.signal("TERM");
    assert_eq!(d.wait_exit(Duration::from_secs(5)), Some(0));
    assert!(ns.ip("-br link").contains("ethvxlan0"));
    assert_eq!(ns.pending(&args), 0);
    assert!(ping_soon(&ns, "10.101.0.20"));
    assert!(
        !ns.dir.join("ctl.sock").exists(),
        "control socket removed on exit"
    );
}

#[test]
fn idle_daemon_makes_no_netlink_writes() {
    if !require_root("idle") {
        return;
    }
    let ns = Ns::new("id");
    let args = daemon_args(ns.host_args());
    let _d = Daemon::start(&ns, &args);
    wait_converged(&ns, &args);
    // Let the kernel's own deferred notifications (linkwatch operstate, up to ~1 s late
    // under load) pass before watching.
    std::thread::sleep(Duration::from_millis(2000));
    // Watch every link/address/route/neighbour-free change for 3 s (3 resyncs).
    let out = ns.exec("timeout 3 ip monitor link address route || true");
    assert!(
        out.trim().is_empty(),
        "idle daemon changed the kernel:\n{out}"
    );
    let s = status(&ns, &args);
    assert!(
        s["status"]["reconciles"].as_u64().unwrap() >= 3,
        "resyncs ran: {s}"
    );
}

/// Deterministic pseudo-random delays (no extra dependency): SplitMix64.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }
}

#[test]
fn kill_9_at_random_points_of_a_converge_then_restart_converges() {
    if !require_root("crash_safety") {
        return;
    }
    let seed: u64 = std::env::var("OVERLAYD_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261127);
    let runs: usize = std::env::var("OVERLAYD_CRASH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    eprintln!("crash test: seed {seed}, {runs} runs (OVERLAYD_CRASH_SEED / OVERLAYD_CRASH_RUNS)");
    let mut rng = Rng(seed);
    let ns = Ns::new("k9");
    let mut base = ns.host_args();
    base.extend(["--fqdn", "h.example"].map(String::from));
    let args = daemon_args(base);
    for i in 0..runs {
        // From scratch.
        let _ = ns.overlayd("down", &args);
        ns.exec("sh -c 'ip link del ethvxlan0 2>/dev/null; ip link del cloudbr0 2>/dev/null; echo 0 > /proc/sys/net/ipv4/conf/eth0/force_igmp_version; true'");
        let delay = Duration::from_micros(rng.next() % 40_000);
        let mut d = Daemon::start(&ns, &args);
        std::thread::sleep(delay);
        d.signal("KILL");
        let _ = d.wait_exit(Duration::from_secs(5));
        let d2 = Daemon::start(&ns, &args);
        wait_converged(&ns, &args);
        assert_eq!(
            ns.pending(&args),
            0,
            "run {i} (delay {delay:?}): restart did not converge"
        );
        let links = ns.ip("-br link");
        assert_eq!(links.matches("cloudbr0").count(), 1, "run {i}: {links}");
        assert_eq!(links.matches("ethvxlan0").count(), 1, "run {i}: {links}");
        let addrs = ns.ip("-4 addr show dev cloudbr0");
        assert_eq!(addrs.matches("inet ").count(), 1, "run {i}: {addrs}");
        let routes = ns.ip("route show default");
        assert_eq!(routes.lines().count(), 1, "run {i}: {routes}");
        let hosts = std::fs::read_to_string(ns.dir.join("hosts")).unwrap();
        assert_eq!(hosts.matches("# overlayd").count(), 1, "run {i}: {hosts}");
        drop(d2);
        // The state file must always let `down` restore the original sysctl.
        ns.overlayd_ok("down", &args);
        assert_eq!(
            ns.sysctl("net/ipv4/conf/eth0/force_igmp_version"),
            "0",
            "run {i} (delay {delay:?})"
        );
    }
}

#[test]
fn refused_change_backs_off_logs_once_and_recovers() {
    if !require_root("backoff") {
        return;
    }
    let ns = Ns::new("bo");
    let args = daemon_args(ns.host_args());
    // Make the kernel refuse the VTEP: a foreign VXLAN device with the same VNI and port
    // exists (EEXIST "A VXLAN device with the specified VNI already exists").
    ns.ip("link add vxforeign type vxlan id 100 dstport 4789 group 239.255.0.1 dev eth0");
    let log_path = ns.dir.join("daemon.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let _d = Daemon::start_logging(&ns, &args, log);
    wait_until("first reconcile recorded", Duration::from_secs(10), || {
        status(&ns, &args)["status"]["reconciles"]
            .as_u64()
            .unwrap_or(0)
            >= 1
    });
    std::thread::sleep(Duration::from_secs(3));
    let s = status(&ns, &args);
    assert_eq!(s["status"]["converged"], false, "{s}");
    let err = s["status"]["last"]["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(err.contains("File exists"), "{err}");
    let attempts = s["status"]["reconciles"].as_u64().unwrap();
    assert!(
        (2..=8).contains(&attempts),
        "backoff: {attempts} attempts in ~3 s"
    );
    let text = std::fs::read_to_string(&log_path).unwrap();
    assert_eq!(
        text.matches("reconcile failed").count(),
        1,
        "log once per cause:\n{text}"
    );
    // The operator removes the conflict: the next retry converges on its own.
    ns.ip("link del vxforeign");
    wait_until(
        "converged after the conflict is gone",
        Duration::from_secs(15),
        || status(&ns, &args)["status"]["converged"] == true,
    );
    assert_eq!(ns.pending(&args), 0);
}

#[test]
fn netlink_overrun_forces_a_full_resync_that_repairs() {
    if !require_root("overrun") {
        return;
    }
    let ns = Ns::new("ov");
    let args = daemon_args(ns.host_args());
    // A small event buffer (64 KiB) so a modest flood overruns it.
    let d = Daemon::start_env(
        &ns,
        &args,
        Stdio::null(),
        &[("OVERLAYD_NETLINK_RCVBUF", "65536")],
    );
    wait_converged(&ns, &args);
    // Freeze the daemon, break the node and flood its event socket far past its buffer.
    d.signal("STOP");
    let mut batch = String::from("link del ethvxlan0\n");
    for i in 0..300 {
        batch.push_str(&format!("link add fl{i} type veth peer name fp{i}\n"));
    }
    for i in 0..300 {
        batch.push_str(&format!("link del fl{i}\n"));
    }
    let path = ns.dir.join("flood.batch");
    std::fs::write(&path, batch).unwrap();
    ns.ip(&format!("-batch {}", path.display()));
    d.signal("CONT");
    wait_until(
        "repaired after the overrun",
        Duration::from_secs(10),
        || ns.pending(&args) == 0,
    );
    let s = status(&ns, &args);
    assert!(
        s["status"]["overruns"].as_u64().unwrap() >= 1,
        "no overrun seen: {s}"
    );
    assert!(ns.ip("-d link show ethvxlan0").contains("master cloudbr0"));
}

#[test]
fn systemd_notify_ready_status_and_watchdog() {
    if !require_root("sd_notify") {
        return;
    }
    let ns = Ns::new("sd");
    let args = daemon_args(ns.host_args());
    let sock_path = ns.dir.join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let path = sock_path.display().to_string();
    let _d = Daemon::start_env(
        &ns,
        &args,
        Stdio::null(),
        &[("NOTIFY_SOCKET", &path), ("WATCHDOG_USEC", "200000")],
    );
    let mut got = Vec::new();
    let t = Instant::now();
    let mut buf = [0u8; 4096];
    while t.elapsed() < Duration::from_secs(10) {
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).to_string());
        }
        let ready = got.iter().any(|m| m.contains("READY=1"));
        let pings = got.iter().filter(|m| m.as_str() == "WATCHDOG=1").count();
        if ready && pings >= 3 {
            break;
        }
    }
    let ready = got.iter().position(|m| m.contains("READY=1"));
    assert!(ready.is_some(), "no READY=1: {got:?}");
    assert!(got[ready.unwrap()].contains("STATUS=converged"), "{got:?}");
    assert!(
        got.iter().filter(|m| m.as_str() == "WATCHDOG=1").count() >= 3,
        "watchdog pings at half of WATCHDOG_USEC: {got:?}"
    );
    // READY only after the node is converged.
    assert_eq!(ns.pending(&args), 0);
}

/// A DHCP client renewing its lease (dhclient deletes and re-adds its default route, or
/// re-adds it and gets EEXIST, or replaces it) never fights `gateway_mode = all`: the half
/// routes are more specific, so nothing collides, no repair is made and nothing flaps.
#[test]
fn gateway_mode_all_survives_dhcp_renewals_without_repairs() {
    if !require_root("gateway_mode_all") {
        return;
    }
    let ns = Ns::new("ga");
    let mut args = daemon_args(ns.host_args());
    args.extend(["--gateway-mode", "all"].map(String::from));
    let _d = Daemon::start(&ns, &args);
    wait_converged(&ns, &args);
    let main = ns.ip("-4 route show");
    for want in [
        "0.0.0.0/1 via 10.101.0.1 dev cloudbr0 proto 79",
        "128.0.0.0/1 via 10.101.0.1 dev cloudbr0 proto 79",
        "default via 10.77.0.1 dev eth0 proto dhcp",
    ] {
        assert!(main.contains(want), "{want} missing:\n{main}");
    }
    let repairs = |ns: &Ns| status(ns, &args)["status"]["repairs"].as_u64().unwrap();
    let before = repairs(&ns);
    for _ in 0..5 {
        ns.ip("route del default via 10.77.0.1 dev eth0");
        ns.ip("route add default via 10.77.0.1 dev eth0 proto dhcp");
        ns.ip("route replace default via 10.77.0.1 dev eth0 proto dhcp");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Two resyncs later: still converged, no repair, the DHCP route as the client left it.
    std::thread::sleep(Duration::from_millis(2200));
    let s = status(&ns, &args);
    assert_eq!(s["status"]["converged"], true, "{s}");
    assert_eq!(repairs(&ns), before, "renewals caused repairs: {s}");
    let main = ns.ip("-4 route show");
    assert!(
        main.contains("default via 10.77.0.1 dev eth0 proto dhcp"),
        "{main}"
    );
    assert!(main.contains("0.0.0.0/1 via 10.101.0.1"), "{main}");
    assert_eq!(ns.pending(&args), 0);
}

/// overlay-sourced (the default): the main-table default via the gateway exists only while
/// the node has no default route of its own — it appears when the DHCP route is lost and
/// goes away when the DHCP client puts its route back.
#[test]
fn overlay_sourced_fallback_default_follows_the_dhcp_route() {
    if !require_root("fallback_default") {
        return;
    }
    let ns = Ns::new("fb");
    let args = daemon_args(ns.host_args());
    let _d = Daemon::start(&ns, &args);
    wait_converged(&ns, &args);
    assert!(!ns.ip("-4 route show default").contains("cloudbr0"));
    ns.ip("route del default via 10.77.0.1 dev eth0");
    wait_until(
        "fallback default via the gateway",
        Duration::from_secs(5),
        || {
            ns.ip("-4 route show default")
                .contains("default via 10.101.0.1 dev cloudbr0 proto 79")
        },
    );
    ns.ip("route add default via 10.77.0.1 dev eth0 proto dhcp metric 100");
    wait_until("fallback removed again", Duration::from_secs(5), || {
        let d = ns.ip("-4 route show default");
        !d.contains("cloudbr0") && d.contains("via 10.77.0.1")
    });
    wait_converged(&ns, &args);
}

/// Unicast flooding under `overlayd run`: the flood list is repaired at the resync when an
/// entry is deleted by hand, and follows a new peer list on SIGHUP (the reload runs off the
/// loop); status shows the peers.
#[test]
fn unicast_daemon_repairs_the_flood_list_and_follows_peers_on_sighup() {
    if !require_root("unicast_daemon") {
        return;
    }
    let ns = Ns::new("ud");
    let conf = ns.dir.join("overlayd.toml");
    let write = |peers: &str| {
        std::fs::write(&conf, format!("flood = \"unicast\"\npeers = [{peers}]\n")).unwrap();
    };
    write("\"10.77.0.1\", \"10.77.0.50\"");
    let mut args = daemon_args(ns.args(&[
        "--role",
        "host",
        "--address",
        "10.101.0.10/16",
        "--gateway",
        "10.101.0.1",
    ]));
    args.extend(["--config".to_string(), conf.display().to_string()]);
    let d = Daemon::start(&ns, &args);
    wait_converged(&ns, &args);
    let zeros = || ns.flood_list();
    wait_until("flood list of two peers", Duration::from_secs(5), || {
        zeros() == ["10.77.0.1", "10.77.0.50"]
    });
    let s = status(&ns, &args);
    assert_eq!(s["status"]["peers"]["discovery"], "static", "{s}");
    assert_eq!(s["status"]["peers"]["count"], 2, "{s}");
    // deleted by hand: back at the next resync (FDB changes send no link/route events)
    ns.exec("bridge fdb del 00:00:00:00:00:00 dev ethvxlan0 dst 10.77.0.50");
    wait_until("deleted entry repaired", Duration::from_secs(5), || {
        zeros() == ["10.77.0.1", "10.77.0.50"]
    });
    // a new peer list, SIGHUP
    write("\"10.77.0.1\", \"10.77.0.60\"");
    d.signal("HUP");
    wait_until(
        "flood list follows the reload",
        Duration::from_secs(5),
        || zeros() == ["10.77.0.1", "10.77.0.60"],
    );
    // a bad reload is refused and changes nothing
    std::fs::write(&conf, "flood = \"unicast\"\npeers = [\"not-an-ip\"]\n").unwrap();
    d.signal("HUP");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(zeros(), ["10.77.0.1", "10.77.0.60"]);
}
