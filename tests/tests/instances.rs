//! overlayd installed as an operator installs it: the instance lab (`overlay-lab up
//! --instances`), every node a booted systemd container with its own root filesystem, the
//! package from scripts/package installed with apt-get, the service run by real systemd with
//! the shipped unit and its sandbox.
//!
//! One lab for every check (booting is the cost): Type=notify, doctor (every check ok on an
//! EC2-shaped instance; systemd-networkd claiming cloudbr0 named), the sandbox letting every
//! repair through, restart / upgrade without traffic loss, reboot, watchdog, the journal,
//! purge. Needs root, systemd-nspawn, mmdebstrap (the node image, cached under
//! /var/cache/overlay-lab) and both package revisions (scripts/test builds them).

use overlay_tests::*;
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// (revision 1, revision 2) of the overlayd package.
fn debs(test: &str) -> Option<(PathBuf, PathBuf)> {
    let dir = bin_dir().parent().unwrap().join("package");
    let (a, b) = (
        dir.join("overlayd_0.1.0-1_amd64.deb"),
        dir.join("overlayd_0.1.0-2_amd64.deb"),
    );
    if !ready(test) {
        return None;
    }
    let ok = overlay_testkit::gate(test, &["systemd-nspawn", "mmdebstrap", "nsenter"], || {
        for p in [&a, &b] {
            if !p.is_file() {
                return Err(format!(
                    "{} missing: run scripts/package and scripts/package --no-build --deb-revision 2",
                    p.display()
                ));
            }
        }
        Ok(())
    });
    ok.then_some((a, b))
}

struct Nodes<'a> {
    lab: &'a Lab,
}

impl Nodes<'_> {
    fn exec(&self, node: &str, cmd: &[&str]) -> std::process::Output {
        lab_exec(&self.lab.prefix, node, cmd)
    }

    fn ok(&self, node: &str, cmd: &[&str]) -> String {
        let o = self.exec(node, cmd);
        assert!(o.status.success(), "{node}: {cmd:?}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    fn main_pid(&self, node: &str) -> u32 {
        self.ok(
            node,
            &["systemctl", "show", "-p", "MainPID", "--value", "overlayd"],
        )
        .parse()
        .unwrap()
    }

    /// Polls `script` inside `node` until it succeeds; panics after `secs`.
    fn until(&self, node: &str, what: &str, script: &str, secs: u64) -> Duration {
        let t0 = Instant::now();
        loop {
            if self.exec(node, &["sh", "-c", script]).status.success() {
                return t0.elapsed();
            }
            assert!(
                t0.elapsed() < Duration::from_secs(secs),
                "{node}: {what} not within {secs} s; journal:\n{}",
                self.ok(
                    node,
                    &["journalctl", "-u", "overlayd", "--no-pager", "-n", "30"]
                )
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Pings `ip` from namespace `ns` every 100 ms while `during` runs; returns (sent, received).
fn ping_across(ns: &str, ip: &str, during: impl FnOnce()) -> (u32, u32) {
    let child = Command::new("ip")
        .args([
            "netns", "exec", ns, "ping", "-n", "-i", "0.1", "-W", "1", ip,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    std::thread::sleep(Duration::from_millis(1000));
    during();
    std::thread::sleep(Duration::from_millis(1000));
    // SIGINT: ping prints its summary
    unsafe { libc::kill(pid, libc::SIGINT) };
    let o = child.wait_with_output().unwrap();
    let s = String::from_utf8_lossy(&o.stdout);
    let line = s
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no ping summary:\n{s}"));
    let num = |w: &str| -> u32 {
        let i = line.find(w).unwrap();
        line[..i]
            .trim()
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    (num(" packets transmitted"), num(" received"))
}

#[test]
fn overlayd_from_the_package_under_systemd() {
    let Some((deb1, deb2)) = debs("overlayd_from_the_package_under_systemd") else {
        return;
    };
    let _g = heavy_lock();
    let prefix = unique_prefix("in");
    let deb_arg = deb1.to_string_lossy().into_owned();
    let lab = Lab::up(&prefix, &["--instances", "--deb", &deb_arg, "--hosts", "2"]).unwrap();
    let n = Nodes { lab: &lab };
    assert_eq!(
        lab.up["reachability"]["all_ok"], true,
        "{}",
        lab.up["reachability"]
    );

    // --- active only after converge: Type=notify, and `enable --now` returned (the lab waits
    // for it) with nothing left to do
    for node in ["router", "mgmt", "h1", "h2"] {
        let lines = lab.node(node)["apply_output"].to_string();
        assert!(lines.contains("is-active: active"), "{node}: {lines}");
        assert_eq!(
            n.ok(
                node,
                &["systemctl", "show", "-p", "Type", "--value", "overlayd"]
            ),
            "notify"
        );
        let plan = n.ok(node, &["overlayd", "plan"]);
        assert!(
            plan.contains("no changes"),
            "{node} not converged when active: {plan}"
        );
        // installed the operator's way
        assert_eq!(
            n.ok(node, &["dpkg-query", "-W", "-f", "${Version}", "overlayd"]),
            "0.1.0-1"
        );
        assert_eq!(
            n.ok(node, &["systemctl", "is-enabled", "overlayd"]),
            "enabled"
        );
    }

    // --- IMDSv2 from inside the instances (the image's curl), as cloud-init asks it
    let catalog: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("/run/overlay-lab/{prefix}/imds.json")).unwrap(),
    )
    .unwrap();
    let imds = "http://169.254.169.254";
    for node in ["router", "h1"] {
        let id = catalog["instances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["node"] == node)
            .unwrap()["instance_id"]
            .as_str()
            .unwrap()
            .to_string();
        let no_token = n.ok(
            node,
            &[
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &format!("{imds}/latest/meta-data/"),
            ],
        );
        assert_eq!(no_token, "401", "{node}: IMDSv1 must be refused");
        let tok = n.ok(
            node,
            &[
                "curl",
                "-sf",
                "-X",
                "PUT",
                "-H",
                "X-aws-ec2-metadata-token-ttl-seconds: 300",
                &format!("{imds}/latest/api/token"),
            ],
        );
        let hdr = format!("X-aws-ec2-metadata-token: {tok}");
        for v in ["2021-03-23", "latest"] {
            let got = n.ok(
                node,
                &[
                    "curl",
                    "-sf",
                    "-H",
                    &hdr,
                    &format!("{imds}/{v}/meta-data/instance-id"),
                ],
            );
            assert_eq!(got, id, "{node} {v}");
        }
        let role = n.ok(
            node,
            &[
                "curl",
                "-sf",
                "-H",
                &hdr,
                &format!("{imds}/latest/meta-data/tags/instance/overlay:role"),
            ],
        );
        assert_eq!(role, lab.node(node)["role"].as_str().unwrap());
    }
    // hop limit 1: a VM behind h1 (NATed by the router) gets no answer
    let vm_ns = lab.up["vms"][0]["ns"].as_str().unwrap().to_string();
    let o = Command::new("ip")
        .args([
            "netns", "exec", &vm_ns, "curl", "-s", "-m", "2", "-X", "PUT", "-H",
        ])
        .args([
            "X-aws-ec2-metadata-token-ttl-seconds: 60",
            &format!("{imds}/latest/api/token"),
        ])
        .output()
        .unwrap();
    assert!(!o.status.success(), "VM got an IMDS answer: {}", text(&o));

    // --- doctor on an EC2-shaped instance (DHCP default route, IMDS, systemd): every check
    // ok; then systemd-networkd started with a .network file that claims cloudbr0 ahead of
    // the package's unmanaged one: the managers check names it and the file
    let doctor = |node: &str| -> (Option<i32>, Value, String) {
        let o = n.exec(node, &["overlayd", "doctor", "-o", "json"]);
        let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
        (o.status.code(), v, text(&o))
    };
    let mut last = String::new();
    // the daemon has heard the lab TGW's first query once `up` returned; allow a moment
    let clean = wait_for(Duration::from_secs(20), || {
        let (code, v, out) = doctor("h2");
        last = out;
        code == Some(0)
            && v["checks"]
                .as_array()
                .is_some_and(|c| c.iter().all(|c| c["verdict"] == "ok"))
    });
    assert!(clean, "h2: not every check ok: {last}");
    n.ok(
        "h2",
        &[
            "sh",
            "-c",
            "printf '[Match]\\nName=cloudbr0\\n\\n[Network]\\nLinkLocalAddressing=no\\nKeepConfiguration=yes\\n' \\
             > /etc/systemd/network/00-take-cloudbr0.network && systemctl start systemd-networkd",
        ],
    );
    let mut named = Value::Null;
    let found = wait_for(Duration::from_secs(15), || {
        let (code, v, _) = doctor("h2");
        named = v;
        code == Some(1)
    });
    let managers = named["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["id"] == "managers").cloned())
        .unwrap_or(Value::Null);
    assert!(found && managers["verdict"] == "fail", "{named:#}");
    let said = managers["summary"].as_str().unwrap_or_default();
    assert!(
        said.contains("systemd-networkd manages cloudbr0")
            && said.contains("00-take-cloudbr0.network"),
        "{said}"
    );
    println!("doctor on h2 with networkd claiming cloudbr0: {said}");
    n.ok(
        "h2",
        &[
            "sh",
            "-c",
            "systemctl stop systemd-networkd.socket systemd-networkd; rm /etc/systemd/network/00-take-cloudbr0.network; systemctl reload overlayd",
        ],
    );
    assert!(
        wait_for(Duration::from_secs(15), || doctor("h2").0 == Some(0)),
        "h2 after networkd stopped: {}",
        doctor("h2").2
    );

    // --- the sandbox blocks no repair. Links and addresses: netlink events.
    n.ok("h1", &["ip", "link", "del", "ethvxlan0"]);
    let t = n.until(
        "h1",
        "VTEP repaired",
        "ip link show ethvxlan0 | grep -q 'master cloudbr0'",
        10,
    );
    println!(
        "deleted VTEP repaired under systemd in {:.0} ms",
        t.as_secs_f64() * 1e3
    );
    n.ok("h1", &["ip", "addr", "flush", "dev", "cloudbr0"]);
    n.until(
        "h1",
        "address repaired",
        "ip -br addr show cloudbr0 | grep -q 10.101.0.10/16",
        10,
    );
    // sysctls and nftables send no events: a reload (SIGHUP) reconciles at once
    // (inside the container /proc/sys is read-only to a root shell; only the unit's
    // ReadWritePaths=/proc/sys/net makes it writable for overlayd: reset it from the host)
    let h1_ns = lab.node("h1")["ns"].as_str().unwrap().to_string();
    let reset = "net.ipv4.conf.eth0.force_igmp_version=0";
    assert!(!n.exec("h1", &["sysctl", "-qw", reset]).status.success());
    sh(&["ip", "netns", "exec", &h1_ns, "sysctl", "-qw", reset]);
    n.ok("h1", &["systemctl", "reload", "overlayd"]);
    n.until(
        "h1",
        "force_igmp_version repaired",
        "test \"$(cat /proc/sys/net/ipv4/conf/eth0/force_igmp_version)\" = 2",
        10,
    );
    n.ok("router", &["nft", "list", "table", "ip", "overlayd"]);
    n.ok("router", &["nft", "delete", "table", "ip", "overlayd"]);
    n.ok("router", &["systemctl", "reload", "overlayd"]);
    n.until(
        "router",
        "NAT table repaired",
        "nft list table ip overlayd | grep -q masquerade",
        10,
    );
    // the journal: one line per change, saying what and why
    let journal = n.ok(
        "h1",
        &["journalctl", "-u", "overlayd", "--no-pager", "-o", "cat"],
    );
    let vtep: Vec<&str> = journal
        .lines()
        .filter(|l| {
            l.contains("repaired") && l.contains("ethvxlan0") && l.contains("trigger=\"event\"")
        })
        .collect();
    assert!(
        !vtep.is_empty(),
        "no journal line for the VTEP repair:\n{journal}"
    );
    // what (change=, kind=) and why (trigger=: start, event, resync, reload) on every line
    for l in journal.lines().filter(|l| l.contains("repaired change=")) {
        assert!(
            l.contains("kind=") && l.contains("trigger="),
            "line without what/why: {l}"
        );
    }

    // --- restart and upgrade: guests keep their network (loss <= 1 probe at 100 ms)
    let vm = lab.up["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["host"] == "h1")
        .unwrap()
        .clone();
    let vm_ns = vm["ns"].as_str().unwrap();
    let h2_ip = lab.node("h2")["overlay_ip"].as_str().unwrap().to_string();
    let before = n.main_pid("h1");
    let (sent, got) = ping_across(vm_ns, &h2_ip, || {
        n.ok("h1", &["systemctl", "restart", "overlayd"]);
    });
    println!("restart: {sent} probes, {got} answered");
    assert!(
        sent >= 15 && sent - got <= 1,
        "restart lost {} of {sent}",
        sent - got
    );
    let after = n.main_pid("h1");
    assert_ne!(before, after, "restart did not restart");

    let root = PathBuf::from(format!("/run/overlay-lab/{prefix}/h1/container/root"));
    std::fs::copy(&deb2, root.join("var/tmp/overlayd_0.1.0-2_amd64.deb")).unwrap();
    let (sent, got) = ping_across(vm_ns, &h2_ip, || {
        n.ok(
            "h1",
            &[
                "apt-get",
                "install",
                "-y",
                "-q",
                "/var/tmp/overlayd_0.1.0-2_amd64.deb",
            ],
        );
    });
    println!("upgrade: {sent} probes, {got} answered");
    assert!(
        sent >= 15 && sent - got <= 1,
        "upgrade lost {} of {sent}",
        sent - got
    );
    assert_eq!(
        n.ok("h1", &["dpkg-query", "-W", "-f", "${Version}", "overlayd"]),
        "0.1.0-2"
    );
    assert_ne!(
        n.main_pid("h1"),
        after,
        "the upgrade did not restart the daemon"
    );
    assert_eq!(
        n.ok("h1", &["systemctl", "is-active", "overlayd"]),
        "active"
    );
    // the operator's configuration survived the upgrade (conffile)
    assert!(n
        .ok("h1", &["cat", "/etc/overlayd/overlayd.toml"])
        .contains("written by overlay-lab"));

    // --- reboot: back with no manual step (enabled unit, before CloudStack's units)
    let o = lab_cmd(&["reboot", "--prefix", &prefix, "h1", "--json"]).unwrap();
    assert!(o.status.success(), "reboot: {}", text(&o));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    println!("reboot: {r}");
    assert_eq!(r["overlayd"], "active");
    let o = lab_cmd(&["check", "--prefix", &prefix, "--json"]).unwrap();
    let c: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        c["reachability"]["all_ok"], true,
        "after reboot: {}",
        c["reachability"]
    );
    let order = n.ok(
        "h1",
        &["systemctl", "show", "-p", "Before", "--value", "overlayd"],
    );
    for u in [
        "network.target",
        "libvirtd.service",
        "cloudstack-agent.service",
    ] {
        assert!(
            order.contains(u),
            "overlayd not ordered before {u}: {order}"
        );
    }

    // --- watchdog: a stopped daemon is killed and restarted by systemd
    let pid = n.main_pid("h2");
    let t0 = Instant::now();
    n.ok("h2", &["kill", "-STOP", &pid.to_string()]);
    n.until(
        "h2",
        "watchdog restart",
        &format!("p=$(systemctl show -p MainPID --value overlayd); [ \"$p\" != 0 ] && [ \"$p\" != {pid} ] && systemctl is-active -q overlayd"),
        90,
    );
    println!(
        "watchdog: SIGSTOPped daemon replaced and active again after {:.1} s (WatchdogSec=30)",
        t0.elapsed().as_secs_f64()
    );
    let j = n.ok(
        "h2",
        &["journalctl", "-u", "overlayd", "--no-pager", "-o", "cat"],
    );
    assert!(j.contains("Watchdog timeout"), "{j}");

    // --- purge: the daemon stops (the overlay stays up: SIGTERM) and its state goes
    n.ok("h2", &["apt-get", "purge", "-y", "-q", "overlayd"]);
    n.ok("h2", &["test", "!", "-e", "/var/lib/overlayd"]);
    n.ok("h2", &["ip", "link", "show", "cloudbr0"]);
    n.ok("router", &["ping", "-c", "1", "-W", "2", &h2_ip]);
}

/// The router pair as an operator installs it: two router instances with `ha_peer`, the
/// package's unit and sandbox, keepalived (Debian's package, in the node image) run by
/// overlayd inside overlayd.service. Exactly one router holds the VIP; keepalived is in the
/// unit's cgroup; its gratuitous ARP gets through the sandbox (a VM pinging the VIP every
/// 100 ms across a failover loses at most ~2 s, not an ARP timeout); the recovered router
/// stays backup and `overlayd doctor` on both says so (the active one also that it could
/// not move the VPC routes: this lab has no EC2 API; the takeover is proven in
/// ctl/tests/router_ha_lab.rs).
#[test]
fn router_pair_under_systemd() {
    let Some((deb1, _)) = debs("router_pair_under_systemd") else {
        return;
    };
    let _g = heavy_lock();
    let prefix = unique_prefix("ih");
    let deb_arg = deb1.to_string_lossy().into_owned();
    let lab = Lab::up(
        &prefix,
        &[
            "--instances",
            "--deb",
            &deb_arg,
            "--routers",
            "2",
            "--hosts",
            "1",
            "--vms-per-host",
            "1",
        ],
    )
    .unwrap();
    let n = Nodes { lab: &lab };
    let holds = |r: &str| {
        n.exec(
            r,
            &[
                "sh",
                "-c",
                "ip -br addr show cloudbr0 | grep -q ' 10.101.0.1/'",
            ],
        )
        .status
        .success()
    };
    let mut active = None;
    assert!(
        wait_for(Duration::from_secs(20), || {
            active = ["router", "router2"].into_iter().find(|r| holds(r));
            active.is_some()
        }),
        "no router holds the VIP"
    );
    let a = active.unwrap();
    let b = if a == "router" { "router2" } else { "router" };
    assert!(!holds(b), "both routers hold the VIP");
    for r in ["router", "router2"] {
        // keepalived runs, inside overlayd.service's cgroup
        let cg = n.ok(
            r,
            &["sh", "-c", "cat /proc/$(pgrep -o -x keepalived)/cgroup"],
        );
        assert!(cg.contains("overlayd.service"), "{r}: keepalived in {cg}");
        // keepalived's own lines (the AWS SDK's note that ~/.aws is not readable under
        // ProtectHome= is not keepalived's)
        let j = n.ok(
            r,
            &["journalctl", "-u", "overlayd", "--no-pager", "-o", "cat"],
        );
        let kj: Vec<&str> = j.lines().filter(|l| !l.contains("aws_runtime")).collect();
        assert!(
            kj.iter().any(|l| l.contains("Starting VRRP child process")),
            "{r}: no keepalived in the journal:\n{j}"
        );
        for bad in [
            "Address family not supported",
            "Operation not permitted",
            "Permission denied",
            "Bad system call",
        ] {
            assert!(
                !kj.iter().any(|l| l.contains(bad)),
                "{r}: {bad} in the journal:\n{j}"
            );
        }
    }
    // failover: the active router's VPC link cut; the VM follows the VIP by the new active
    // router's gratuitous ARP
    let vm = lab.up["vms"][0]["ns"].as_str().unwrap().to_string();
    let vpc = format!("{prefix}-vpc");
    let (sent, got) = ping_across(&vm, "10.101.0.1", || {
        let o = Command::new("ip")
            .args(["-n", &vpc, "link", "set", &format!("u-{a}"), "down"])
            .output()
            .unwrap();
        assert!(o.status.success());
        assert!(
            wait_for(Duration::from_secs(10), || holds(b)),
            "{b} did not take the VIP"
        );
        std::thread::sleep(Duration::from_secs(2));
    });
    assert!(
        sent - got <= 20,
        "VM → VIP across the failover: {got}/{sent} answered (no gratuitous ARP?)"
    );
    let o = Command::new("ip")
        .args(["-n", &vpc, "link", "set", &format!("u-{a}"), "up"])
        .output()
        .unwrap();
    assert!(o.status.success());
    std::thread::sleep(Duration::from_secs(4));
    assert!(holds(b) && !holds(a), "no preemption");
    let doctor = |node: &str| -> Value {
        let o = n.exec(node, &["overlayd", "doctor", "-o", "json"]);
        serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("{node}: {}", text(&o)))
    };
    for (r, want) in [(a, "standby"), (b, "active")] {
        let v = doctor(r);
        let c = v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == "router.pair")
            .unwrap_or_else(|| panic!("{r}: no router.pair: {v}"))
            .clone();
        let summary = c["summary"].as_str().unwrap();
        if want == "active" && c["verdict"] != "ok" {
            // this lab has no EC2 API: once the active router's first takeover attempt has
            // timed out, doctor says so (the election itself is sound)
            assert_eq!(c["verdict"], "fail", "{r}: {c}");
            assert!(
                summary.starts_with("active, but the VPC routes were not moved"),
                "{r}: {c}"
            );
            assert!(
                c["fix"]
                    .as_str()
                    .unwrap()
                    .contains("EC2 API does not answer"),
                "{r}: {c}"
            );
        } else {
            assert_eq!(c["verdict"], "ok", "{r}: {c}");
            assert!(summary.starts_with(want), "{r}: {c}");
        }
    }
    // without the routers' drop-in the sandbox forbids the packet socket: overlayd says so
    n.ok(
        a,
        &[
            "sh",
            "-c",
            "rm /etc/systemd/system/overlayd.service.d/router-pair.conf && systemctl daemon-reload && systemctl restart overlayd",
        ],
    );
    let v = doctor(a);
    let c = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "router.pair")
        .unwrap()
        .clone();
    assert_eq!(c["verdict"], "fail", "{a} without the drop-in: {c}");
    assert!(
        c["summary"].as_str().unwrap().contains("gratuitous ARP"),
        "{a} without the drop-in: {c}"
    );
    drop(lab);
}
