//! 7. evpn (only with `--only evpn`): BGP EVPN through FRR. A lab of `--evpn-hosts` hosts
//!    (two AZ subnets, the router pair as route reflectors, every node's zebra + bgpd spawned
//!    by its `overlayd run`):
//!    - reachability on the sampled matrix; every node's FDB holds every other node's and
//!      VM's MAC as an entry installed from BGP (`extern_learn`, at the right VTEP);
//!    - unknown-unicast flooding on the underlay, counted by the VPC (copies of unicast
//!      frames delivered to a node that does not own the MAC): none, and a control (a frame
//!      to an unknown MAC) shows the counter counts;
//!    - joins (a host from nothing: `overlayd down`, then `overlayd run`): time until every
//!      other node reaches it; leaves: its MAC gone from the other nodes after a clean stop,
//!      and after a power-off (link cut + kill -9: the BGP hold time);
//!    - reflector failure: FRR of one reflector killed, then the reflector powered off; loss
//!      of host ↔ host traffic, the FDBs, and a join while only one reflector is left;
//!    - memory per node (overlayd + zebra + bgpd), then cold converge of `--evpn-cold` hosts.

use super::*;
use crate::topo::{Endpoint, Node, Topology};
use std::collections::{BTreeMap, BTreeSet};

fn sh(cmd: &str) -> String {
    Command::new("sh")
        .args(["-c", cmd])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn mac_text(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn bridge_mac(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    mac_text([0x02, 0x0f, o[0], o[1], o[2], o[3]])
}

/// A node's VTEP FDB: MAC → (remote VTEP, installed from BGP), and the flood list.
#[derive(Default)]
struct Fdb {
    macs: BTreeMap<String, (Option<String>, bool)>,
    flood: BTreeSet<String>,
}

fn fdb(ns: &str) -> Fdb {
    let out = sh(&format!("bridge -n {ns} -j fdb show dev ethvxlan0"));
    let v: Value = serde_json::from_str(out.trim()).unwrap_or(Value::Null);
    let mut f = Fdb::default();
    for e in v.as_array().into_iter().flatten() {
        let mac = e["mac"].as_str().unwrap_or("").to_string();
        let dst = e["dst"].as_str().map(str::to_string);
        let ext = e["flags"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == "extern_learn"));
        // the VTEP's own address
        if e["state"] == "permanent" && dst.is_none() {
            continue;
        }
        if mac == "00:00:00:00:00:00" {
            if let Some(d) = dst {
                f.flood.insert(d);
            }
            continue;
        }
        // the bridge-side twin (`master cloudbr0`, no dst) and the VTEP-side entry (`self`,
        // dst): keep the one with the destination
        let slot = f.macs.entry(mac).or_insert((None, false));
        if dst.is_some() {
            *slot = (dst, ext);
        } else if slot.0.is_none() {
            slot.1 = ext;
        }
    }
    f
}

fn has_mac(ns: &str, mac: &str) -> bool {
    fdb(ns).macs.contains_key(mac)
}

fn counter(t: &Topology, name: &str) -> u64 {
    crate::vpc::counters(&t.vpc_ns)
        .ok()
        .and_then(|v| v[name].as_u64())
        .unwrap_or(0)
}

fn ns_pids(ns: &str) -> Vec<u32> {
    sh(&format!("ip netns pids {ns}"))
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn kill9_all(ns: &str) {
    for pid in ns_pids(ns) {
        // SAFETY: kill(2) of a process in the lab's own namespace.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
}

/// overlayd + FRR of one node, KiB.
fn node_rss(ns: &str) -> (u64, u64) {
    let (mut od, mut frr) = (0, 0);
    for pid in ns_pids(ns) {
        let kib = bench_daemon::rss_kib(pid).unwrap_or(0);
        match comm(pid).as_str() {
            c if c.starts_with("overlayd") => od += kib,
            "zebra" | "bgpd" => frr += kib,
            _ => {}
        }
    }
    (od, frr)
}

fn wait_until(limit: Duration, mut ok: impl FnMut() -> bool) -> Option<f64> {
    let t0 = Instant::now();
    loop {
        if ok() {
            return Some(t0.elapsed().as_secs_f64());
        }
        if t0.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn evpn_up(ctx: &Ctx, p: &str, hosts: usize, vms: usize) -> Result<Value> {
    let mut c = Command::new(&ctx.me);
    c.args(["up", "--json", "--daemon", "--flood", "evpn", "--prefix", p])
        .args(["--replace", "--routers", "2", "--azs", "2"])
        .args(["--hosts", &hosts.to_string()])
        .args(["--vms-per-host", &vms.to_string()])
        .args(["--timeout", "120"])
        .arg("--overlayd")
        .arg(&ctx.overlayd);
    let out = run_tracked(&mut c, None)?;
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|_| {
        anyhow!(
            "overlay-lab up --flood evpn --hosts {hosts} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })?;
    if !out.status.success() {
        bail!(
            "overlay-lab up --flood evpn --hosts {hosts}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(v)
}

fn node<'a>(t: &'a Topology, name: &str) -> Result<&'a Node> {
    t.nodes
        .iter()
        .find(|n| n.name == name)
        .ok_or_else(|| anyhow!("{name} not in the lab"))
}

fn daemon_pid(t: &Topology, n: &Node) -> Option<u32> {
    std::fs::read_to_string(node_cmd::node_dir(&t.prefix, &n.name).join(bench_daemon::PID_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn start(ctx: &Ctx, t: &Topology, n: &Node) -> Result<()> {
    let child = bench_daemon::spawn_one(&ctx.overlayd, t, n, true)?;
    track(child.id());
    std::mem::forget(child); // the lab's teardown stops it
    Ok(())
}

/// Sessions to a reflector that the nodes' overlayd reset (Established, but the reflector
/// had lost the node as a peer: `evpn.reflector_resets` in their status), summed.
fn reflector_resets(t: &Topology) -> u64 {
    t.nodes
        .iter()
        .map(|n| {
            let sock = node_cmd::node_dir(&t.prefix, &n.name).join(bench_daemon::SOCKET);
            bench_daemon::control(&sock, "status")
                .ok()
                .and_then(|v| v["evpn"]["reflector_resets"].as_u64())
                .unwrap_or(0)
        })
        .sum()
}

fn converged(t: &Topology, n: &Node) -> bool {
    let sock = node_cmd::node_dir(&t.prefix, &n.name).join(bench_daemon::SOCKET);
    bench_daemon::control(&sock, "status").is_ok_and(|v| v["converged"] == true)
}

/// SIGTERM to a node's overlayd (its FRR stops with it: a Cease to the reflectors); waits
/// for it to exit.
fn stop(t: &Topology, n: &Node) -> Result<()> {
    let pid = daemon_pid(t, n).ok_or_else(|| anyhow!("no pid of {}'s overlayd", n.name))?;
    // SAFETY: kill(2) of the lab's daemon.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    if wait_until(Duration::from_secs(10), || !bench_daemon::alive(pid)).is_none() {
        bail!("{}'s overlayd did not stop", n.name);
    }
    untrack(pid);
    Ok(())
}

/// Seconds until every other node answers `n` (echoes re-sent every 50 ms).
fn reach_all(t: &Topology, n: &Node, limit: Duration) -> (Option<f64>, usize) {
    let mut eps: Vec<Endpoint> = t
        .nodes
        .iter()
        .filter(|x| x.name != n.name)
        .map(|x| Endpoint {
            name: x.name.clone(),
            ns: x.ns.clone(),
            ip: x.overlay_ip,
        })
        .collect();
    let target = eps.len();
    eps.push(Endpoint {
        name: n.name.clone(),
        ns: n.ns.clone(),
        ip: n.overlay_ip,
    });
    let pairs: Vec<(usize, usize)> = (0..target).map(|i| (i, target)).collect();
    let r = crate::probe::probe_every(&eps, &pairs, limit, Some(Duration::from_millis(50)));
    let missing = r.rtt.iter().filter(|x| x.is_none()).count();
    let worst = r.rtt.iter().flatten().max().map(|d| d.as_secs_f64());
    (if missing == 0 { worst } else { None }, missing)
}

/// A 20 ms ping stream for `secs` from `ns` to `dst`.
fn stream(ns: &str, dst: Ipv4Addr, secs: f64) -> Result<(std::process::Child, usize)> {
    let count = (secs / 0.02) as usize;
    let c = Command::new("ip")
        .args([
            "netns", "exec", ns, "ping", "-q", "-n", "-i", "0.02", "-W", "1",
        ])
        .args(["-c", &count.to_string(), &dst.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("ping in {ns}"))?;
    track(c.id());
    Ok((c, count))
}

fn lost(c: std::process::Child, count: usize) -> Result<usize> {
    let pid = c.id();
    let out = c.wait_with_output()?;
    untrack(pid);
    let s = String::from_utf8_lossy(&out.stdout);
    let received = s
        .split(',')
        .find(|x| x.contains("received"))
        .and_then(|x| x.split_whitespace().next())
        .and_then(|n| n.parse::<usize>().ok())
        .ok_or_else(|| anyhow!("no ping summary: {s}"))?;
    Ok(count.saturating_sub(received))
}

/// The sessions at a node's bgpd by state (`show bgp l2vpn evpn summary json`).
fn session_states(ns_dir: &Path) -> BTreeMap<String, usize> {
    let out = sh(&format!(
        "vtysh --vty_socket {} -c 'show bgp l2vpn evpn summary json'",
        ns_dir.display()
    ));
    let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
    let mut by = BTreeMap::new();
    for p in v["peers"].as_object().into_iter().flat_map(|p| p.values()) {
        *by.entry(p["state"].as_str().unwrap_or("?").to_string())
            .or_insert(0) += 1;
    }
    by
}

fn established(ns_dir: &Path) -> usize {
    session_states(ns_dir)
        .get("Established")
        .copied()
        .unwrap_or(0)
}

/// The nodes without an Established session at reflector `rr` (absent from its EVPN
/// summary, or not Established there) and, for the first three, both sides' view: the
/// client's bgpd (state, uptime, resets), the reflector's, the TCP sockets, and the
/// reflector's log lines about that client.
fn clients_not_back(t: &Topology, rr: &Node) -> String {
    let rr_dir = node_cmd::node_dir(&t.prefix, &rr.name).join("frr");
    let vty = |dir: &Path, cmd: &str| -> Value {
        let out = sh(&format!("vtysh --vty_socket {} -c '{cmd}'", dir.display()));
        serde_json::from_str(&out).unwrap_or(Value::Null)
    };
    let summary = vty(&rr_dir, "show bgp l2vpn evpn summary json");
    let peers = summary["peers"].as_object().cloned().unwrap_or_default();
    let ip = rr.underlay_ip.to_string();
    let bad: Vec<&Node> = t
        .nodes
        .iter()
        .filter(|n| n.name != rr.name)
        .filter(|n| {
            peers.get(&n.underlay_ip.to_string()).map(|p| &p["state"])
                != Some(&"Established".into())
        })
        .collect();
    let mut out = vec![format!(
        "{} node(s) not Established at {} ({ip})",
        bad.len(),
        rr.name
    )];
    let log =
        std::fs::read_to_string(node_cmd::node_dir(&t.prefix, &rr.name).join(bench_daemon::LOG))
            .unwrap_or_default();
    for n in bad.iter().take(3) {
        let cip = n.underlay_ip.to_string();
        let dir = node_cmd::node_dir(&t.prefix, &n.name).join("frr");
        let c = vty(&dir, &format!("show bgp neighbors {ip} json"));
        let c = &c[&ip];
        let r = vty(&rr_dir, &format!("show bgp neighbors {cip} json"));
        let r = &r[&cip];
        let tcp = sh(&format!(
            "ip netns exec {} ss -tnH state all dst {ip}",
            n.ns
        ));
        let rtcp = sh(&format!(
            "ip netns exec {} ss -tnH state all dst {cip}",
            rr.ns
        ));
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(&cip)).collect();
        let tail = lines[lines.len().saturating_sub(4)..].join(" | ");
        out.push(format!(
            "{} ({cip}): client sees {} (up {} ms, established {} dropped {}, last reset {}, evpn prefixes accepted {}); reflector sees {}; client tcp [{}]; reflector tcp [{}]; reflector log [{}]",
            n.name,
            c["bgpState"].as_str().unwrap_or("?"),
            c["bgpTimerUpMsec"],
            c["connectionsEstablished"],
            c["connectionsDropped"],
            c["lastResetDueTo"].as_str().unwrap_or("-"),
            c["addressFamilyInfo"]["l2VpnEvpn"]["acceptedPrefixCounter"],
            r["bgpState"].as_str().unwrap_or("absent"),
            tcp.split_whitespace().collect::<Vec<_>>().join(" "),
            rtcp.split_whitespace().collect::<Vec<_>>().join(" "),
            tail
        ));
    }
    out.join("; ")
}

/// "118 Established, 4 Active" (what a reflector that is not back has).
fn states_text(ns_dir: &Path) -> String {
    let by = session_states(ns_dir);
    if by.is_empty() {
        return "no sessions (bgpd not answering?)".into();
    }
    by.iter()
        .map(|(s, n)| format!("{n} {s}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every node's FDB against `owner` (MAC → its VTEP): (nodes complete, entries not from
/// BGP, nodes with a full flood list, the first incomplete one).
fn fdb_census(
    t: &Topology,
    owner: &BTreeMap<String, Ipv4Addr>,
    nodes: usize,
) -> (usize, usize, usize, String, BTreeMap<String, Vec<String>>) {
    let mut absent: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut complete = 0;
    let mut not_bgp = 0usize;
    let mut flood_ok = 0;
    let mut worst = String::new();
    for n in &t.nodes {
        let f = fdb(&n.ns);
        let mut missing = 0;
        for (mac, dst) in owner {
            if *dst == n.underlay_ip {
                continue;
            }
            match f.macs.get(mac) {
                Some((Some(d), true)) if *d == dst.to_string() => {}
                _ => {
                    missing += 1;
                    absent.entry(mac.clone()).or_default().push(n.name.clone());
                }
            }
        }
        not_bgp += f.macs.values().filter(|(_, ext)| !ext).count();
        if missing == 0 {
            complete += 1;
        } else if worst.is_empty() {
            worst = format!("{}: {missing} MAC(s) missing or not from BGP", n.name);
        }
        if f.flood.len() == nodes - 1 {
            flood_ok += 1;
        }
    }
    (complete, not_bgp, flood_ok, worst, absent)
}

/// Where the MACs missing from FDBs stopped (at most three): on the owner's bridge (the
/// kernel learnt it), in the owner's zebra (local), in a missing node's zebra (remote: BGP
/// delivered it, the kernel has no entry), or nowhere.
fn diagnose_missing(
    t: &Topology,
    owner: &BTreeMap<String, Ipv4Addr>,
    absent: &BTreeMap<String, Vec<String>>,
) -> String {
    let zebra_mac = |n: &Node, mac: &str| -> String {
        let dir = node_cmd::node_dir(&t.prefix, &n.name).join("frr");
        let out = sh(&format!(
            "vtysh --vty_socket {} -c 'show evpn mac vni all mac {mac} json'",
            dir.display()
        ));
        let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
        // {"100": {"type": "local"|"remote", ...}} or {} / an error text
        v.as_object()
            .and_then(|o| {
                o.values()
                    .find_map(|x| x["type"].as_str().map(str::to_string))
            })
            .unwrap_or_else(|| "absent".into())
    };
    let mut out = Vec::new();
    for (mac, at) in absent.iter().take(3) {
        let Some(o) = owner
            .get(mac)
            .and_then(|ip| t.nodes.iter().find(|n| n.underlay_ip == *ip))
        else {
            continue;
        };
        let on_bridge = sh(&format!("bridge -n {} fdb show br cloudbr0", o.ns))
            .lines()
            .any(|l| l.starts_with(mac.as_str()) && !l.contains("ethvxlan0"));
        let first = t.nodes.iter().find(|n| at.first() == Some(&n.name));
        out.push(format!(
            "{mac} (of {}): missing at {} node(s); on its bridge: {}; its zebra: {}; zebra of {}: {}",
            o.name,
            at.len(),
            if on_bridge { "yes" } else { "NO" },
            zebra_mac(o, mac),
            first.map(|n| n.name.as_str()).unwrap_or("?"),
            first.map(|n| zebra_mac(n, mac)).unwrap_or_default()
        ));
    }
    if absent.len() > 3 {
        out.push(format!("{} MACs missing somewhere in all", absent.len()));
    }
    out.join("; ")
}

/// The kernel's neighbour table is one for all namespaces (`gc_thresh3`, 1024 by default),
/// and a VTEP without a group resolves the underlay address of every peer it sends to: N
/// nodes make ~N² entries, the echoes of the probes more (on EC2 every instance has a table
/// of its own, and 250 peers fit its default). Past the limit new neighbours fail ("neighbor
/// table overflow"), which would pose as slow or missing joins. The run raises the limits
/// for as long as it lasts (written back on drop).
struct NeighLimits(Vec<(&'static str, String)>);

const GC_THRESH: [&str; 2] = [
    "/proc/sys/net/ipv4/neigh/default/gc_thresh3",
    "/proc/sys/net/ipv4/neigh/default/gc_thresh2",
];

impl NeighLimits {
    fn raise(nodes: usize) -> Result<Option<(NeighLimits, String)>> {
        let read = |k: &str| -> Result<String> {
            Ok(std::fs::read_to_string(k)
                .with_context(|| format!("read {k}"))?
                .trim()
                .to_string())
        };
        let old: Vec<(&'static str, String)> = GC_THRESH
            .iter()
            .map(|k| Ok((*k, read(k)?)))
            .collect::<Result<_>>()?;
        let need = nodes * nodes * 4;
        let cur: usize = old[0].1.parse().unwrap_or(1024);
        if cur >= need {
            return Ok(None);
        }
        // thresh3 first: thresh2 may never exceed it
        for (k, v) in [(GC_THRESH[0], need), (GC_THRESH[1], need / 2)] {
            std::fs::write(k, v.to_string()).with_context(|| format!("write {k}"))?;
        }
        let note = format!(
            "the kernel's neighbour table (one for all namespaces) raised for the run: gc_thresh3 {} → {need}, gc_thresh2 {} → {} ({nodes} nodes resolve ~{nodes}² underlay neighbours; each EC2 instance has its own table); restored afterwards",
            old[0].1,
            old[1].1,
            need / 2
        );
        Ok(Some((NeighLimits(old), note)))
    }
}

impl Drop for NeighLimits {
    fn drop(&mut self) {
        // thresh2 first: back below the old thresh3 before that comes down
        for (k, v) in self.0.iter().rev() {
            let _ = std::fs::write(k, v);
        }
    }
}

pub(super) fn evpn(ctx: &Ctx, sec: &mut Section) -> Result<()> {
    let p = format!("{}e", ctx.prefix);
    for tool in [
        "vtysh",
        "/usr/lib/frr/zebra",
        "/usr/lib/frr/bgpd",
        "keepalived",
    ] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .map(|s| !s.success())
            .unwrap_or(true)
        {
            bail!("{tool} is not installed (the evpn benchmark needs FRR and keepalived)");
        }
    }
    let hosts = ctx.a.evpn_hosts.max(3);
    let biggest = ctx
        .a
        .evpn_cold
        .iter()
        .copied()
        .chain([hosts])
        .max()
        .unwrap_or(hosts);
    let _limits = match NeighLimits::raise(biggest + 3)? {
        Some((l, note)) => {
            eprintln!("overlay-lab bench: {note}");
            sec.notes.push(note);
            Some(l)
        }
        None => None,
    };
    let t0 = Instant::now();
    let up = evpn_up(ctx, &p, hosts, 1)?;
    let up_s = t0.elapsed().as_secs_f64();
    let t = lab::topology_of(&p)?;
    let nodes = t.nodes.len();
    let r = &up["reachability"];
    let reach_ok = r["all_ok"] == true;
    sec.check(
        &format!("{hosts} hosts + router pair: reachability on the sampled matrix"),
        format!(
            "{} pairs probed ({}), {} s after up",
            r["pairs_probed"],
            r["mode"].as_str().unwrap_or("?"),
            f1(up["timings"]["reachable_seconds"]
                .as_f64()
                .unwrap_or(f64::NAN))
        ),
        reach_ok,
        None,
    );

    // every remote node's and VM's MAC installed from BGP at its VTEP
    let mut owner: BTreeMap<String, Ipv4Addr> = BTreeMap::new();
    for n in &t.nodes {
        owner.insert(bridge_mac(n.overlay_ip), n.underlay_ip);
    }
    for v in &t.vms {
        let m = nl::in_netns(&v.ns, || nl::mac_of("eth0"))?;
        owner.insert(mac_text(m), node(&t, &v.host)?.underlay_ip);
    }
    // a VM's MAC reaches BGP once it has sent a frame (its host's bridge learns it, as on
    // any EVPN VTEP): a sampled matrix leaves VMs silent, so every VM pings the router once
    let router = node(&t, "router")?;
    let mut eps: Vec<Endpoint> = t
        .vms
        .iter()
        .map(|v| Endpoint {
            name: v.name.clone(),
            ns: v.ns.clone(),
            ip: v.ip,
        })
        .collect();
    eps.push(Endpoint {
        name: router.name.clone(),
        ns: router.ns.clone(),
        ip: router.overlay_ip,
    });
    let pairs: Vec<(usize, usize)> = (0..t.vms.len()).map(|i| (i, t.vms.len())).collect();
    let _ = crate::probe::probe_every(&eps, &pairs, Duration::from_secs(10), None);
    // then until every FDB is complete (at most 30 s)
    let t_fdb = Instant::now();
    let (complete, not_bgp, flood_ok, mut worst, absent) = loop {
        let c = fdb_census(&t, &owner, nodes);
        if (c.0 == nodes && c.1 == 0) || t_fdb.elapsed() > Duration::from_secs(30) {
            break c;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let fdb_s = t_fdb.elapsed().as_secs_f64();
    if !absent.is_empty() {
        let d = diagnose_missing(&t, &owner, &absent);
        eprintln!("overlay-lab bench: evpn FDB incomplete: {d}");
        worst = format!("{worst}; {d}");
    }
    sec.check(
        "every node's FDB holds every remote node's and VM's MAC as installed from BGP (extern_learn, at its VTEP)",
        format!(
            "{complete}/{nodes} nodes, {} MACs each; {not_bgp} entries not from BGP ({fdb_s:.1} s after every VM had sent a frame)",
            owner.len()
        ),
        complete == nodes && not_bgp == 0,
        (!worst.is_empty()).then_some(worst),
    );
    sec.check(
        "flood list (type-3 routes): every other VTEP",
        format!("{flood_ok}/{nodes} nodes"),
        flood_ok == nodes,
        None,
    );

    // unknown unicast on the underlay, once BGP has converged: a second matrix counted
    // alone (the cold start's first frames, sent before the routes arrived, are flooded:
    // reported, not judged); the control proves the counter counts
    let cold_uu = counter(&t, crate::vpc::UNKNOWN_UNICAST);
    let chk = run_tracked(
        Command::new(&ctx.me).args(["check", "--prefix", &p, "--json", "--timeout", "30"]),
        None,
    )?;
    let chk_ok = serde_json::from_slice::<Value>(&chk.stdout)
        .map(|v| v["reachability"]["all_ok"] == true)
        .unwrap_or(false);
    let after = counter(&t, crate::vpc::UNKNOWN_UNICAST);
    let uu = after - cold_uu;
    let h1 = node(&t, "h1")?;
    sh(&format!(
        "ip -n {} neigh replace 10.101.250.250 lladdr 02:00:00:00:fa:fa dev cloudbr0 nud permanent",
        h1.ns
    ));
    sh(&format!(
        "ip netns exec {} ping -q -c 3 -i 0.2 -W 1 10.101.250.250",
        h1.ns
    ));
    sh(&format!(
        "ip -n {} neigh del 10.101.250.250 dev cloudbr0",
        h1.ns
    ));
    let control = counter(&t, crate::vpc::UNKNOWN_UNICAST) - after;
    sec.check(
        "no unknown-unicast flooding on the underlay (VPC counter: unicast frames delivered to a node without that MAC)",
        format!("{uu} copies during a second matrix ({}); control: 3 echoes to an unknown MAC from h1 → {control} copies (3 × {} remote VTEPs); {cold_uu} during the cold start", if chk_ok { "all reachable" } else { "NOT all reachable" }, nodes - 1),
        uu == 0 && chk_ok && control >= (nodes as u64 - 1),
        None,
    );
    let mcast = counter(&t, "multicast_drops");
    sec.notes.push(format!(
        "{mcast} multicast packets dropped by the VPC (it delivers none in this mode): \
         IGMP reports of the nodes' own kernels; no VXLAN traffic is multicast"
    ));

    // memory per node
    let mut host_kib = Vec::new();
    let mut rr_kib = Vec::new();
    let mut od_kib = Vec::new();
    for n in &t.nodes {
        let (od, frr) = node_rss(&n.ns);
        od_kib.push(od as f64 / 1024.0);
        if n.name.starts_with("router") {
            rr_kib.push((od + frr) as f64 / 1024.0);
        } else {
            host_kib.push((od + frr) as f64 / 1024.0);
        }
    }
    let hs = summarize(&host_kib);
    let rs = summarize(&rr_kib);
    let os = summarize(&od_kib);
    sec.check(
        "memory per node: overlayd + zebra + bgpd (VmRSS)",
        format!(
            "hosts median {} / max {} MiB (overlayd alone median {}); reflectors {} / {} MiB",
            f1(hs.p50),
            f1(hs.max),
            f1(os.p50),
            f1(rs.min),
            f1(rs.max)
        ),
        true,
        None,
    );

    // joins and clean leaves
    let observers: Vec<&Node> = ["h1", "router", "router2"]
        .iter()
        .filter_map(|x| node(&t, x).ok())
        .collect();
    let host_nodes: Vec<&Node> = t.nodes.iter().filter(|n| n.name.starts_with('h')).collect();
    let joins = ctx.a.evpn_joins.min(host_nodes.len() - 1);
    let mut join_s = Vec::new();
    let mut leave_s = Vec::new();
    let mut join_fail = Vec::new();
    for k in 0..joins {
        let n = host_nodes[host_nodes.len() - 1 - k];
        let mac = bridge_mac(n.overlay_ip);
        let obs: Vec<&Node> = observers
            .iter()
            .copied()
            .filter(|o| o.name != n.name)
            .collect();
        stop(&t, n)?;
        let t_stop = Instant::now();
        let gone = wait_until(Duration::from_secs(30), || {
            obs.iter().all(|o| !has_mac(&o.ns, &mac))
        });
        let _ = t_stop;
        match gone {
            Some(s) => leave_s.push(s),
            None => join_fail.push(format!("{}: MAC not withdrawn after a clean stop", n.name)),
        }
        // from nothing: the overlay removed, then the daemon started
        let down = node_cmd::overlayd_cmd(&ctx.overlayd, &t, n, &["down"])?.output()?;
        if !down.status.success() {
            bail!(
                "overlayd down on {}: {}",
                n.name,
                String::from_utf8_lossy(&down.stderr).trim()
            );
        }
        start(ctx, &t, n)?;
        let (s, missing) = reach_all(&t, n, Duration::from_secs(15));
        match s {
            Some(s) => join_s.push(s),
            None => join_fail.push(format!("{}: {missing} node(s) never reached it", n.name)),
        }
        eprintln!(
            "overlay-lab bench: evpn join {}/{joins} of {}: reachable from all {} other nodes after {} s; clean leave withdrawn after {} s",
            k + 1,
            n.name,
            nodes - 1,
            s.map(f2).unwrap_or_else(|| "NEVER".into()),
            gone.map(f2).unwrap_or_else(|| "NEVER".into())
        );
        wait_until(Duration::from_secs(20), || converged(&t, n));
    }
    let js = summarize(&join_s);
    sec.check(
        &format!(
            "a new host is reachable from every other node within 2 s (median over {joins} joins)"
        ),
        format!("median {} s, max {} s", f2(js.p50), f2(js.max)),
        join_s.len() == joins && js.p50 <= 2.0,
        (!join_fail.is_empty()).then(|| join_fail.join("; ")),
    );
    let ls = summarize(&leave_s);
    sec.check(
        "a clean stop withdraws the host's MAC at once (seen by h1 and both reflectors)",
        format!("median {} s, max {} s", f2(ls.p50), f2(ls.max)),
        leave_s.len() == joins && ls.max <= 1.0,
        None,
    );

    // power-off: link cut + kill -9; withdrawn by the BGP hold time
    let hold = 9.0;
    let mut off_s = Vec::new();
    for k in 0..ctx.a.evpn_power_offs.min(host_nodes.len() - 1) {
        let n = host_nodes[k + 1];
        let mac = bridge_mac(n.overlay_ip);
        sh(&format!("ip -n {} link set {} down", t.vpc_ns, n.vpc_port));
        kill9_all(&n.ns);
        let gone = wait_until(Duration::from_secs(30), || {
            observers.iter().all(|o| !has_mac(&o.ns, &mac))
        });
        off_s.push(gone.unwrap_or(f64::INFINITY));
        sh(&format!("ip -n {} link set {} up", t.vpc_ns, n.vpc_port));
        start(ctx, &t, n)?;
        let back = reach_all(&t, n, Duration::from_secs(20)).0;
        eprintln!(
            "overlay-lab bench: evpn power-off of {}: MAC withdrawn after {} s; back after {} s",
            n.name,
            gone.map(f2).unwrap_or_else(|| "NEVER".into()),
            back.map(f2).unwrap_or_else(|| "NEVER".into())
        );
    }
    let os_ = summarize(&off_s);
    sec.check(
        &format!("a powered-off host's MAC is withdrawn within the BGP hold time ({hold:.0} s)"),
        format!("{} power-offs: max {} s", off_s.len(), f2(os_.max)),
        off_s.iter().all(|s| *s <= hold + 1.0),
        None,
    );

    // reflector failure: traffic between hosts, the FDB, and a join with one reflector left
    let rr = node(&t, "router")?;
    let a = host_nodes[0];
    let b = host_nodes[host_nodes.len() - 1];
    let before = fdb(&a.ns).macs.len();
    let mut rr_rows = Vec::new();
    for mode in [
        "FRR killed (kill -9 zebra, bgpd)",
        "reflector powered off (link cut + kill -9)",
    ] {
        let window = hold + 6.0;
        let resets0 = reflector_resets(&t);
        let (s1, c1) = stream(&a.ns, b.overlay_ip, window)?;
        let (s2, c2) = stream(&b.ns, a.overlay_ip, window)?;
        std::thread::sleep(Duration::from_millis(1000));
        if mode.starts_with("FRR") {
            for pid in ns_pids(&rr.ns) {
                if matches!(comm(pid).as_str(), "zebra" | "bgpd") {
                    // SAFETY: kill(2) of the lab's FRR daemon.
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                }
            }
        } else {
            sh(&format!("ip -n {} link set {} down", t.vpc_ns, rr.vpc_port));
            kill9_all(&rr.ns);
        }
        let mut min_fdb = usize::MAX;
        let t_f = Instant::now();
        while t_f.elapsed().as_secs_f64() < window - 1.5 {
            min_fdb = min_fdb.min(fdb(&a.ns).macs.len());
            std::thread::sleep(Duration::from_millis(200));
        }
        let lost_ab = lost(s1, c1)? + lost(s2, c2)?;
        // a join while it lasts (powered off: only the second reflector)
        let mut join = None;
        if !mode.starts_with("FRR") {
            let n = host_nodes[host_nodes.len() / 2];
            stop(&t, n)?;
            let _ = node_cmd::overlayd_cmd(&ctx.overlayd, &t, n, &["down"])?.output()?;
            start(ctx, &t, n)?;
            // the node behind the dead reflector is unreachable: everyone but it
            let others: Vec<&Node> = t.nodes.iter().filter(|x| x.name != rr.name).collect();
            let sub = Topology {
                nodes: others.into_iter().cloned().collect(),
                ..t.clone()
            };
            join = reach_all(&sub, n, Duration::from_secs(15)).0;
            sh(&format!("ip -n {} link set {} up", t.vpc_ns, rr.vpc_port));
            start(ctx, &t, rr)?;
            wait_until(Duration::from_secs(30), || converged(&t, rr));
        }
        let rr_dir = node_cmd::node_dir(&t.prefix, &rr.name).join("frr");
        let recovered = wait_until(Duration::from_secs(60), || {
            established(&rr_dir) >= nodes - 1
        });
        if recovered.is_none() {
            eprintln!(
                "overlay-lab bench: evpn reflector {} after 60 s: {} (of {} sessions); {}",
                rr.name,
                states_text(&rr_dir),
                nodes - 1,
                clients_not_back(&t, rr)
            );
        }
        let resets = reflector_resets(&t).saturating_sub(resets0);
        eprintln!(
            "overlay-lab bench: evpn reflector failure ({mode}): h↔h lost {lost_ab} × 20 ms, FDB of {} {before} → min {min_fdb}, join {:?}, reflector back after {:?} s, {resets} session(s) reset by overlayd",
            a.name, join, recovered
        );
        rr_rows.push((mode, lost_ab, min_fdb, join, recovered, resets));
    }
    let mut tbl = Table::new(&[
        "reflector failure",
        "host↔host outage",
        &format!("FDB entries on {} (before {before})", a.name),
        "join meanwhile",
        "reflector back (all sessions)",
        "sessions reset by overlayd",
    ]);
    let mut rr_ok = true;
    for (mode, lost_ab, min_fdb, join, rec, resets) in &rr_rows {
        // the dead reflector's own MAC goes after the hold time: one entry less is right
        rr_ok &= *lost_ab == 0 && *min_fdb + 1 >= before;
        if !mode.starts_with("FRR") {
            rr_ok &= join.is_some_and(|j| j <= 2.0);
        }
        tbl.row(vec![
            mode.to_string(),
            format!("{} ms", lost_ab * 20),
            min_fdb.to_string(),
            join.map(|j| format!("{} s", f2(j)))
                .unwrap_or_else(|| "-".into()),
            rec.map(|r| format!("{} s", f1(r)))
                .unwrap_or_else(|| "NO".into()),
            resets.to_string(),
        ]);
    }
    sec.tables.push(tbl);
    sec.check(
        "one reflector lost: the other keeps the fabric converged (no host↔host loss, FDB kept, a join within 2 s)",
        if rr_ok { "yes" } else { "no" }.into(),
        rr_ok,
        None,
    );

    let lab_json = json!({
        "hosts": hosts, "nodes": nodes, "up_seconds": up_s,
        "reachable_seconds": up["timings"]["reachable_seconds"],
        "pairs_probed": r["pairs_probed"],
        "unknown_unicast_copies": uu, "control_copies": control, "cold_start_copies": cold_uu,
        "rss_mib": {"hosts": hs.to_json(), "reflectors": rs.to_json(), "overlayd": os.to_json()},
        "joins_s": join_s, "clean_leave_s": leave_s, "power_off_leave_s": off_s,
        "reflector_failure": rr_rows.iter().map(|(m, l, f, j, r, x)| json!({
            "mode": m, "lost_20ms": l, "min_fdb": f, "join_s": j, "recovered_s": r,
            "sessions_reset": x,
        })).collect::<Vec<_>>(),
    });
    lab::teardown(&p)?;

    // cold converge of bigger labs
    let mut cold = Vec::new();
    for &n in ctx.a.evpn_cold.iter().filter(|n| **n > 0) {
        let _ = wait_netns_settled(Duration::from_secs(60));
        let t0 = Instant::now();
        let up = evpn_up(ctx, &p, n, 0)?;
        let wall = t0.elapsed().as_secs_f64();
        let t = lab::topology_of(&p)?;
        let rr_dir = node_cmd::node_dir(&p, "router").join("frr");
        let sessions = wait_until(Duration::from_secs(120), || {
            established(&rr_dir) >= t.nodes.len() - 1
        })
        .map(|s| s + wall);
        if sessions.is_none() {
            eprintln!(
                "overlay-lab bench: evpn cold converge, reflector after 120 s: {} (of {} sessions); {}",
                states_text(&rr_dir),
                t.nodes.len() - 1,
                node(&t, "router").map(|r| clients_not_back(&t, r)).unwrap_or_default()
            );
        }
        let mut kib = Vec::new();
        for nn in t.nodes.iter().filter(|x| x.name.starts_with('h')) {
            let (a, b) = node_rss(&nn.ns);
            kib.push((a + b) as f64 / 1024.0);
        }
        let m = summarize(&kib);
        let reach = up["timings"]["reachable_seconds"].as_f64();
        eprintln!(
            "overlay-lab bench: evpn cold converge of {n} hosts: reachable {reach:?} s, all sessions at the reflector after {sessions:?} s, {} MiB per host",
            f1(m.p50)
        );
        sec.check(
            &format!("cold converge, {n} hosts + router pair (up → sampled matrix reachable; every session at a reflector)"),
            format!(
                "{} s reachable ({} pairs), {} s all {} sessions; {} MiB per host (median)",
                reach.map(f1).unwrap_or_else(|| "?".into()),
                up["reachability"]["pairs_probed"],
                sessions.map(f1).unwrap_or_else(|| "NOT".into()),
                t.nodes.len() - 1,
                f1(m.p50)
            ),
            up["reachability"]["all_ok"] == true && sessions.is_some(),
            None,
        );
        cold.push(
            json!({"hosts": n, "up_seconds": wall, "reachable_seconds": reach,
            "sessions_seconds": sessions, "rss_mib_hosts": m.to_json()}),
        );
        lab::teardown(&p)?;
    }
    sec.notes.push(
        "lab figures: FRR 8.4 (Debian 12) zebra + bgpd per node, spawned by `overlayd run` \
         (evpn_frr = spawn); hold time 9 s, keepalive 3 s; two AZ subnets, the router pair \
         the route reflectors (evpn_listen 10.0.0.0/16); joins: `overlayd down` then \
         `overlayd run` on a host, then 50 ms echoes from every other node"
            .into(),
    );
    sec.data = json!({"lab": lab_json, "cold": cold});
    Ok(())
}
