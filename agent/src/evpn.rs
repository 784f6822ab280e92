//! flood = evpn: the node's BGP EVPN speaker is FRR (zebra + bgpd). overlayd renders FRR's
//! whole configuration from its own (pure, here), runs it, and reads its state back.
//!
//! - Every node is an iBGP speaker of one private AS with `advertise-all-vni` (zebra finds
//!   the VNI from the VTEP enslaved to the bridge) and `advertise-svi-ip` (the bridge's own
//!   MAC and address, the node's overlay identity, become type-2 routes; without it a
//!   node's MAC is never advertised, every frame to it is unknown unicast and flooded).
//! - Nodes peer only with the route reflectors (`evpn_reflectors`), never with each other.
//!   A reflector accepts clients from `evpn_listen` (`bgp listen range`: it needs no list of
//!   hosts) and peers with the other reflectors as ordinary iBGP peers. Each reflector keeps
//!   its own cluster id (its router id): a reflector is also a VTEP, and must accept a
//!   client's routes reflected by the other reflector when its own session to that client
//!   is down (a shared cluster id would make it drop them as a loop).
//! - FRR runs as the distribution's `frr.service` (`evpn_frr = systemd`: overlayd writes
//!   `frr.conf` and `daemons` and restarts the unit when they change) or as overlayd's own
//!   children (`spawn`: zebra and bgpd with their configuration, sockets and pid files in
//!   `evpn_frr_dir`, one node per network namespace as in overlay-lab).
//!
//! The data plane is the kernel's: zebra installs the remote MACs as `extern_learn` FDB
//! entries and the flood list (type-3 routes) as all-zeros entries on the VTEP; overlayd
//! plans neither (they are zebra's).

use crate::config::FrrMode;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// Marks the files overlayd owns.
pub const MARKER: &str = "# Written by overlayd from its own configuration: edits are overwritten.";

/// What the node's BGP speaker is to be (from the configuration and the underlay).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvpnSpec {
    pub asn: u32,
    pub router_id: Ipv4Addr,
    /// The VTEP's tunnel source.
    pub local: Ipv4Addr,
    pub vni: u32,
    pub bridge: String,
    pub vtep: String,
    pub reflector: bool,
    /// The reflectors to peer with (this node's own address taken out).
    pub reflectors: Vec<Ipv4Addr>,
    /// Reflector: the ranges clients connect from.
    pub listen: Vec<Ipv4Net>,
    pub hold_secs: u16,
    pub frr: FrrMode,
    pub frr_dir: String,
}

impl EvpnSpec {
    pub fn keepalive_secs(&self) -> u16 {
        (self.hold_secs / 3).max(1)
    }
}

/// The dynamic-neighbour limit of a reflector (FRR's default, 100, is the very limit this
/// mode exists to pass).
pub const LISTEN_LIMIT: u32 = 5000;
/// zebra's netlink receive buffer (bytes), spawn mode; frr.service's `daemons` file has
/// the same by default.
pub const ZEBRA_NL_BUFSIZE: &str = "90000000";
pub const CLIENTS: &str = "OVERLAY_CLIENTS";

fn header(s: &mut String, spec: &EvpnSpec) {
    let _ = writeln!(s, "{MARKER}");
    let _ = writeln!(
        s,
        "# BGP EVPN for VNI {} ({} on {}): AS {}, {}.",
        spec.vni,
        spec.vtep,
        spec.bridge,
        spec.asn,
        if spec.reflector {
            "route reflector"
        } else {
            "route-reflector client"
        }
    );
}

/// zebra's part (spawn: zebra.conf).
pub fn zebra_conf(spec: &EvpnSpec, log: &str) -> String {
    let mut s = String::new();
    header(&mut s, spec);
    let _ = writeln!(s, "hostname overlayd-{}", spec.local);
    let _ = writeln!(s, "log {log} informational");
    // a reflector in another subnet (AZ) is reached by the default route: without this
    // zebra resolves no next hop through it and bgpd never connects ("Waiting for NHT")
    let _ = writeln!(s, "ip nht resolve-via-default");
    s
}

/// bgpd's part (spawn: bgpd.conf; systemd: the rest of frr.conf).
pub fn bgpd_conf(spec: &EvpnSpec, log: &str) -> String {
    let (k, h) = (spec.keepalive_secs(), spec.hold_secs);
    let mut s = String::new();
    header(&mut s, spec);
    let _ = writeln!(s, "hostname overlayd-{}", spec.local);
    let _ = writeln!(s, "log {log} informational");
    let _ = writeln!(s, "router bgp {}", spec.asn);
    let _ = writeln!(s, " bgp router-id {}", spec.router_id);
    let _ = writeln!(s, " no bgp default ipv4-unicast");
    let _ = writeln!(s, " bgp log-neighbor-changes");
    let _ = writeln!(s, " timers bgp {k} {h}");
    // a joining node's routes go out at once, not after the default 1 s of coalescing
    let _ = writeln!(s, " coalesce-time 100");
    if spec.reflector {
        let _ = writeln!(s, " bgp listen limit {LISTEN_LIMIT}");
        let _ = writeln!(s, " neighbor {CLIENTS} peer-group");
        let _ = writeln!(s, " neighbor {CLIENTS} remote-as {}", spec.asn);
        let _ = writeln!(s, " neighbor {CLIENTS} timers {k} {h}");
        for n in &spec.listen {
            let _ = writeln!(s, " bgp listen range {n} peer-group {CLIENTS}");
        }
    }
    for r in &spec.reflectors {
        let _ = writeln!(s, " neighbor {r} remote-as {}", spec.asn);
        let _ = writeln!(s, " neighbor {r} timers {k} {h}");
        // retry a refused connection every second (FRR's default is 120 s)
        let _ = writeln!(s, " neighbor {r} timers connect 1");
    }
    let _ = writeln!(s, " address-family l2vpn evpn");
    if spec.reflector {
        let _ = writeln!(s, "  neighbor {CLIENTS} activate");
        let _ = writeln!(s, "  neighbor {CLIENTS} route-reflector-client");
    }
    for r in &spec.reflectors {
        let _ = writeln!(s, "  neighbor {r} activate");
    }
    let _ = writeln!(s, "  advertise-all-vni");
    let _ = writeln!(s, "  advertise-svi-ip");
    let _ = writeln!(s, " exit-address-family");
    let _ = writeln!(s, "exit");
    s
}

/// systemd: the integrated frr.conf (zebra's and bgpd's parts in one file).
pub fn frr_conf(spec: &EvpnSpec) -> String {
    let mut s = zebra_conf(spec, "syslog");
    for l in bgpd_conf(spec, "syslog").lines() {
        if l.starts_with('#') || l.starts_with("hostname") || l.starts_with("log ") {
            continue;
        }
        s.push_str(l);
        s.push('\n');
    }
    s
}

/// systemd: FRR's `daemons` file with bgpd switched on (zebra always runs); everything else
/// as the operator or the package left it. None: nothing to change.
pub fn daemons_file(existing: &str) -> Option<String> {
    let mut found = false;
    let mut changed = false;
    let mut out = String::new();
    for l in existing.lines() {
        if l.trim_start().starts_with("bgpd=") {
            found = true;
            if l.trim() != "bgpd=yes" {
                changed = true;
                out.push_str("bgpd=yes\n");
                continue;
            }
        }
        out.push_str(l);
        out.push('\n');
    }
    if !found {
        out.push_str("bgpd=yes\n");
        changed = true;
    }
    changed.then_some(out)
}

/// Whether overlayd may (over)write FRR's `frr.conf` whose text is `existing`: absent, ours,
/// or the package's stub (no routing protocol configured). Err names what is in the way.
pub fn may_take(path: &Path, existing: Option<&str>) -> Result<(), String> {
    let Some(t) = existing else { return Ok(()) };
    if t.contains(MARKER) {
        return Ok(());
    }
    if let Some(l) = t
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("router ") || l.starts_with("interface "))
    {
        return Err(format!(
            "{} is not overlayd's and configures {l:?}: overlayd owns FRR with flood = evpn; \
             move that configuration away (or the file, to keep it) and overlayd writes its own",
            path.display()
        ));
    }
    Ok(())
}

/// The EVPN part of `overlayd status` (read from FRR over its vty sockets).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct EvpnStatus {
    pub asn: u32,
    pub reflector: bool,
    /// "systemd" or "spawn".
    pub frr: String,
    /// Configured reflectors (this node's own address out).
    pub reflectors: Vec<Ipv4Addr>,
    /// BGP sessions in state Established / all configured or dynamic ones.
    pub sessions_up: u32,
    pub sessions: u32,
    /// Peers not Established (address: state).
    pub down: Vec<String>,
    /// VNIs zebra knows.
    pub vnis: u32,
    /// Remote VTEPs of the flood list (type-3 routes).
    pub remote_vteps: u32,
    /// Local and remote MACs of the VNI (type-2).
    pub local_macs: u32,
    pub remote_macs: u32,
    /// zebra advertises the bridge's own MAC/IP (advertise-svi-ip: how the other nodes reach
    /// this node's overlay address without flooding); None: not read.
    #[serde(default)]
    pub svi_advertised: Option<bool>,
    /// Reads in a row that found it missing (see [`svi_repair_due`]).
    #[serde(default)]
    pub svi_missing_reads: u32,
    /// Times overlayd had bgpd advertise it again.
    #[serde(default)]
    pub svi_readvertised: u64,
    /// Reflectors whose session is Established but that send this node nothing (see
    /// [`silent_reflectors`]).
    #[serde(default)]
    pub silent_reflectors: Vec<Ipv4Addr>,
    /// Reads in a row that found one (see [`reflector_reset_due`]).
    #[serde(default)]
    pub silent_reads: u32,
    /// Times overlayd reset such a session (`clear bgp <reflector>`).
    #[serde(default)]
    pub reflector_resets: u64,
    /// FRR (re)starts by overlayd after the first.
    pub frr_restarts: u64,
    pub frr_pids: Vec<u32>,
    /// Why FRR cannot be run or read, while it lasts.
    pub error: Option<String>,
}

/// Where FRR's daemons keep their vty sockets (`<daemon>.vty`): the spawned ones in
/// `frr_dir`, frr.service's in /run/frr.
pub fn vty_dir(spec: &EvpnSpec) -> PathBuf {
    match spec.frr {
        FrrMode::Spawn => PathBuf::from(&spec.frr_dir),
        FrrMode::Systemd => PathBuf::from("/run/frr"),
    }
}

/// One command to a daemon over its vty socket, as vtysh sends it: the line with its NUL,
/// answered by the output and a four-byte trailer `0 0 0 <status>` (0: success). No vtysh
/// process per question: at 10 s per node that was the lab's largest CPU cost.
pub fn vty_command(socket: &Path, cmd: &str) -> Result<String, String> {
    Ok(vty_session(socket, &[cmd.to_string()])?
        .pop()
        .unwrap_or_default())
}

/// Several lines over one connection (the daemon keeps the session's node between them:
/// `enable`, `configure terminal`, `router bgp ...`); the first refused line ends it.
pub fn vty_session(socket: &Path, lines: &[String]) -> Result<Vec<String>, String> {
    use std::io::{Read, Write};
    let name = socket.display();
    let mut s = std::os::unix::net::UnixStream::connect(socket)
        .map_err(|e| format!("{name}: {e} (is FRR running?)"))?;
    let t = Some(std::time::Duration::from_secs(5));
    s.set_read_timeout(t)
        .and_then(|_| s.set_write_timeout(t))
        .map_err(|e| format!("{name}: {e}"))?;
    let mut answers = Vec::new();
    for cmd in lines {
        let mut line = cmd.as_bytes().to_vec();
        line.push(0);
        s.write_all(&line).map_err(|e| format!("{name}: {e}"))?;
        let mut out = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            let n = s
                .read(&mut buf)
                .map_err(|e| format!("{name}: {cmd:?}: {e}"))?;
            if n == 0 {
                return Err(format!("{name}: {cmd:?}: closed before the answer ended"));
            }
            out.extend_from_slice(&buf[..n]);
            if out.len() >= 4 && out[out.len() - 4..out.len() - 1] == [0, 0, 0] {
                break;
            }
        }
        let status = out[out.len() - 1];
        out.truncate(out.len() - 4);
        let text = String::from_utf8_lossy(&out).into_owned();
        if status != 0 {
            return Err(format!("{name}: {cmd:?}: status {status}: {}", text.trim()));
        }
        answers.push(text);
    }
    Ok(answers)
}

/// The vty lines that turn a running bgpd of `old` into one of `new` when the reflector set
/// is all that differs (a discovered router came or went): sessions to the other reflectors
/// stay up, the node keeps its routes. None: anything else changed (bgpd is restarted).
pub fn reflector_delta(old: &EvpnSpec, new: &EvpnSpec) -> Option<Vec<String>> {
    let mut same = old.clone();
    same.reflectors = new.reflectors.clone();
    if same != *new || old.reflectors == new.reflectors {
        return None;
    }
    let (k, h) = (new.keepalive_secs(), new.hold_secs);
    let added: Vec<&Ipv4Addr> = new
        .reflectors
        .iter()
        .filter(|r| !old.reflectors.contains(r))
        .collect();
    let mut v: Vec<String> = vec![
        "enable".into(),
        "configure terminal".into(),
        format!("router bgp {}", new.asn),
    ];
    for r in old
        .reflectors
        .iter()
        .filter(|r| !new.reflectors.contains(r))
    {
        v.push(format!("no neighbor {r}"));
    }
    for r in &added {
        v.push(format!("neighbor {r} remote-as {}", new.asn));
        v.push(format!("neighbor {r} timers {k} {h}"));
        v.push(format!("neighbor {r} timers connect 1"));
    }
    if !added.is_empty() {
        v.push("address-family l2vpn evpn".into());
        for r in &added {
            v.push(format!("neighbor {r} activate"));
        }
        v.push("exit-address-family".into());
    }
    v.push("end".into());
    Some(v)
}

fn show(spec: &EvpnSpec, daemon: &str, cmd: &str) -> Result<serde_json::Value, String> {
    let text = vty_command(&vty_dir(spec).join(format!("{daemon}.vty")), cmd)?;
    if text.trim().is_empty() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_str(&text).map_err(|e| format!("{daemon} {cmd:?}: not JSON ({e})"))
}

/// Sessions from `show bgp l2vpn evpn summary json`: (up, all, the ones down).
pub fn parse_summary(v: &serde_json::Value) -> (u32, u32, Vec<String>) {
    let peers = v
        .get("peers")
        .and_then(|p| p.as_object())
        .cloned()
        .unwrap_or_default();
    let mut up = 0;
    let mut down = Vec::new();
    for (addr, p) in &peers {
        let st = p.get("state").and_then(|s| s.as_str()).unwrap_or("?");
        if st == "Established" {
            up += 1;
        } else {
            down.push(format!("{addr}: {st}"));
        }
    }
    (up, peers.len() as u32, down)
}

/// The reflectors among the sessions of `show bgp l2vpn evpn summary json` that have been
/// Established for a hold time or longer and sent no route. Every reflector is a VTEP of the
/// VNI itself (the router pair, the management node) and advertises at least its own
/// type-3 route, so a healthy session never stays empty. An empty one is FRR's lost dynamic
/// peer (FRRouting/frr#9929): when many clients reconnect at once (a reflector back from a
/// power-off) the reflector now and then keeps a session alive with keepalives but drops it
/// from its peer list, and sends that client no update again; the client's other reflectors
/// hide it until they fail too.
pub fn silent_reflectors(
    v: &serde_json::Value,
    reflectors: &[Ipv4Addr],
    hold_secs: u16,
) -> Vec<Ipv4Addr> {
    let Some(peers) = v.get("peers").and_then(|p| p.as_object()) else {
        return vec![];
    };
    reflectors
        .iter()
        .filter(|r| {
            peers.get(&r.to_string()).is_some_and(|p| {
                let n = |k: &str| p.get(k).and_then(|x| x.as_u64());
                p.get("state").and_then(|s| s.as_str()) == Some("Established")
                    && n("peerUptimeMsec").is_some_and(|ms| ms >= u64::from(hold_secs) * 1000)
                    && n("pfxRcd") == Some(0)
            })
        })
        .copied()
        .collect()
}

/// A silent reflector in two reads in a row (a read interval for updates still on their
/// way): (reads in a row, reset the sessions now).
pub fn reflector_reset_due(prev_reads: u32, st: &EvpnStatus) -> (u32, bool) {
    if st.silent_reflectors.is_empty() || st.error.is_some() {
        return (0, false);
    }
    let n = prev_reads + 1;
    (n, n >= 2)
}

/// The vty lines that reset the sessions to `silent` (a hard reset: the reflector drops
/// its lost peer on the Cease, the client connects again within a second and gets the
/// reflector's whole table).
pub fn reflector_reset_lines(silent: &[Ipv4Addr]) -> Vec<String> {
    let mut v = vec!["enable".to_string()];
    v.extend(silent.iter().map(|r| format!("clear bgp {r}")));
    v
}

/// After a read (`st`; `prev` the one before): count a silent reflector and, when
/// [`reflector_reset_due`], reset the session (blocking: one vty session).
pub fn repair_reflectors(spec: &EvpnSpec, prev: Option<&EvpnStatus>, st: &mut EvpnStatus) {
    st.reflector_resets = prev.map_or(0, |p| p.reflector_resets);
    let (reads, due) = reflector_reset_due(prev.map_or(0, |p| p.silent_reads), st);
    st.silent_reads = reads;
    if !due {
        return;
    }
    match vty_session(
        &vty_dir(spec).join("bgpd.vty"),
        &reflector_reset_lines(&st.silent_reflectors),
    ) {
        Ok(_) => {
            tracing::warn!(
                reflectors = ?st.silent_reflectors,
                "evpn: session Established but no route from the reflector (it lost this node as a peer, FRRouting/frr#9929); reset it"
            );
            st.reflector_resets += st.silent_reflectors.len() as u64;
            st.silent_reads = 0;
        }
        Err(e) => tracing::error!(error = %e, "evpn: resetting a silent reflector's session"),
    }
}

/// VNIs and remote VTEPs from `show evpn vni json` (an object keyed by VNI; a list in the
/// detail view).
pub fn parse_vnis(v: &serde_json::Value, vni: u32) -> (u32, u32) {
    let items: Vec<&serde_json::Value> = match v {
        serde_json::Value::Array(a) => a.iter().collect(),
        serde_json::Value::Object(o) => o.values().collect(),
        _ => vec![],
    };
    let mut remotes = 0;
    for i in &items {
        if i.get("vni").and_then(|n| n.as_u64()) == Some(u64::from(vni)) {
            // a number in `show evpn vni json`; FRR 8.4's detail view puts the list there
            let n = |k: &str| {
                i.get(k)
                    .and_then(|n| n.as_u64().or_else(|| n.as_array().map(|a| a.len() as u64)))
            };
            remotes = n("numRemoteVteps")
                .or_else(|| n("remoteVteps"))
                .unwrap_or(0) as u32;
        }
    }
    (items.len() as u32, remotes)
}

/// Local and remote MACs from `show evpn mac vni <vni> json`.
pub fn parse_macs(v: &serde_json::Value) -> (u32, u32) {
    let macs = v
        .get("macs")
        .and_then(|m| m.as_object())
        .cloned()
        .unwrap_or_default();
    let mut local = 0;
    let mut remote = 0;
    for m in macs.values() {
        match m.get("type").and_then(|t| t.as_str()) {
            Some("local") => local += 1,
            Some("remote") => remote += 1,
            _ => {}
        }
    }
    (local, remote)
}

/// Whether zebra holds the bridge's own MAC as a local MAC of the VNI (`show evpn mac vni
/// <vni> json`: type local, intf the bridge) — what `advertise-svi-ip` puts there.
pub fn parse_svi(v: &serde_json::Value, bridge: &str) -> bool {
    v.get("macs").and_then(|m| m.as_object()).is_some_and(|m| {
        m.values().any(|x| {
            x.get("type").and_then(|t| t.as_str()) == Some("local")
                && x.get("intf").and_then(|i| i.as_str()) == Some(bridge)
        })
    })
}

/// FRR loses `advertise-svi-ip` now and then when bgpd hands it to zebra before their
/// connection is ready (FRRouting/frr#21441; in the lab about one node in 120 at a cold
/// start): the node's own MAC/IP is then never advertised and every frame to its overlay
/// address is flooded to every VTEP. Missing in two reads in a row (zebra had a read
/// interval to do it itself) while zebra knows the VNI: (reads in a row, re-advertise now).
pub fn svi_repair_due(prev_missing: u32, st: &EvpnStatus) -> (u32, bool) {
    if st.svi_advertised != Some(false) || st.vnis == 0 || st.error.is_some() {
        return (0, false);
    }
    let n = prev_missing + 1;
    (n, n >= 2)
}

/// The vty lines that make bgpd hand `advertise-svi-ip` to zebra again (off, then on: the
/// configuration ends as it was).
pub fn svi_readvertise_lines(spec: &EvpnSpec) -> Vec<String> {
    vec![
        "enable".into(),
        "configure terminal".into(),
        format!("router bgp {}", spec.asn),
        "address-family l2vpn evpn".into(),
        "no advertise-svi-ip".into(),
        "advertise-svi-ip".into(),
        "exit-address-family".into(),
        "end".into(),
    ]
}

/// [`svi_readvertise_lines`] sent to the node's bgpd.
pub fn svi_readvertise(spec: &EvpnSpec) -> Result<(), String> {
    vty_session(
        &vty_dir(spec).join("bgpd.vty"),
        &svi_readvertise_lines(spec),
    )
    .map(|_| ())
}

/// After a read (`st`; `prev` the one before): count a missing SVI advertisement and, when
/// [`svi_repair_due`], tell bgpd again (blocking: one vty session).
pub fn repair_svi(spec: &EvpnSpec, prev: Option<&EvpnStatus>, st: &mut EvpnStatus) {
    st.svi_readvertised = prev.map_or(0, |p| p.svi_readvertised);
    let (missing, due) = svi_repair_due(prev.map_or(0, |p| p.svi_missing_reads), st);
    st.svi_missing_reads = missing;
    if !due {
        return;
    }
    match svi_readvertise(spec) {
        Ok(()) => {
            tracing::warn!(
                bridge = %spec.bridge,
                "evpn: zebra was not advertising the bridge's MAC/IP (advertise-svi-ip lost at FRR's start); told bgpd again"
            );
            st.svi_readvertised += 1;
            st.svi_missing_reads = 0;
        }
        Err(e) => tracing::error!(error = %e, "evpn: re-advertising the bridge's MAC/IP"),
    }
}

/// Ask FRR for the state of `spec`'s speaker (blocking: three questions over vty sockets).
pub fn read_status(spec: &EvpnSpec, st: &mut EvpnStatus) {
    st.asn = spec.asn;
    st.reflector = spec.reflector;
    st.frr = match spec.frr {
        FrrMode::Systemd => "systemd".into(),
        FrrMode::Spawn => "spawn".into(),
    };
    st.reflectors = spec.reflectors.clone();
    let mut errors = Vec::new();
    match show(spec, "bgpd", "show bgp l2vpn evpn summary json") {
        Ok(v) => {
            let (up, all, down) = parse_summary(&v);
            st.sessions_up = up;
            st.sessions = all;
            st.down = down;
            st.silent_reflectors = silent_reflectors(&v, &spec.reflectors, spec.hold_secs);
        }
        Err(e) => errors.push(e),
    }
    match show(spec, "zebra", "show evpn vni json") {
        Ok(v) => {
            let (n, r) = parse_vnis(&v, spec.vni);
            st.vnis = n;
            st.remote_vteps = r;
        }
        Err(e) => errors.push(e),
    }
    match show(
        spec,
        "zebra",
        &format!("show evpn mac vni {} json", spec.vni),
    ) {
        Ok(v) => {
            let (l, r) = parse_macs(&v);
            st.local_macs = l;
            st.remote_macs = r;
            st.svi_advertised = Some(parse_svi(&v, &spec.bridge));
        }
        Err(e) => errors.push(e),
    }
    if !errors.is_empty() && st.error.is_none() {
        st.error = Some(errors.join("; "));
    }
}

/// FRR run for `spec`: written and (re)started as its mode says.
pub struct Supervisor {
    bin_dir: PathBuf,
    zebra: Option<std::process::Child>,
    bgpd: Option<std::process::Child>,
    written: Option<(String, String)>,
    /// The spec the spawned bgpd runs (for a live change of the reflectors).
    running: Option<EvpnSpec>,
    unit_checked: Option<std::time::Instant>,
    pub starts: u64,
}

impl Default for Supervisor {
    fn default() -> Self {
        Self::new()
    }
}

fn chown_frr(p: &Path) -> Result<(), String> {
    let name = std::ffi::CString::new("frr").expect("no NUL");
    // SAFETY: getpwnam with a valid C string; the result is read at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return Err("there is no user frr: install the frr package".into());
    }
    // SAFETY: pw is non-null and points at libc's static passwd entry.
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    std::os::unix::fs::chown(p, Some(uid), Some(gid))
        .map_err(|e| format!("chown frr {}: {e}", p.display()))
}

fn write_file(p: &Path, text: &str) -> Result<(), String> {
    let tmp = p.with_extension("overlayd-tmp");
    std::fs::write(&tmp, text)
        .and_then(|_| std::fs::rename(&tmp, p))
        .map_err(|e| format!("write {}: {e}", p.display()))
}

impl Supervisor {
    pub fn new() -> Supervisor {
        Supervisor {
            bin_dir: std::env::var_os("OVERLAYD_FRR_BIN_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| "/usr/lib/frr".into()),
            zebra: None,
            bgpd: None,
            written: None,
            running: None,
            unit_checked: None,
            starts: 0,
        }
    }

    pub fn pids(&self) -> Vec<u32> {
        [&self.zebra, &self.bgpd]
            .iter()
            .filter_map(|c| c.as_ref().map(|c| c.id()))
            .collect()
    }

    /// Make FRR run with `spec`'s configuration.
    pub fn ensure(&mut self, spec: &EvpnSpec) -> Result<(), String> {
        match spec.frr {
            FrrMode::Spawn => self.ensure_spawned(spec),
            FrrMode::Systemd => self.ensure_unit(spec),
        }
    }

    fn alive(c: &mut Option<std::process::Child>, what: &str) -> bool {
        if let Some(ch) = c {
            match ch.try_wait() {
                Ok(None) => return true,
                Ok(Some(st)) => tracing::warn!(status = %st, "{what} exited; restarting"),
                Err(e) => tracing::warn!(error = %e, "{what}: wait failed; restarting"),
            }
        }
        *c = None;
        false
    }

    fn spawn(&self, daemon: &str, dir: &Path) -> Result<std::process::Child, String> {
        let bin = self.bin_dir.join(daemon);
        let mut cmd = std::process::Command::new(&bin);
        cmd.arg("-f")
            .arg(dir.join(format!("{daemon}.conf")))
            .arg("-i")
            .arg(dir.join(format!("{daemon}.pid")))
            .arg("-z")
            .arg(dir.join("zserv.api"))
            .arg("--vty_socket")
            .arg(dir)
            // no TCP vty (2601/2605 on every address): the unix sockets are the only way in
            .args(["-P", "0"])
            .stdin(std::process::Stdio::null());
        if daemon == "zebra" {
            // netlink receive buffer as Debian's frr `daemons` file sets it: the kernel's
            // default (~200 KiB) overruns when a busy zebra falls behind a burst of FDB
            // events, and a dropped event is a MAC that never reaches BGP
            cmd.args(["-s", ZEBRA_NL_BUFSIZE]);
        }
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl only, async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                // FRR stops on SIGTERM: whatever mask overlayd was started with
                let mut none: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut none);
                libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
                Ok(())
            });
        }
        let c = cmd
            .spawn()
            .map_err(|e| format!("start {}: {e}", bin.display()))?;
        tracing::info!(pid = c.id(), daemon, dir = %dir.display(), "FRR daemon started");
        Ok(c)
    }

    fn ensure_spawned(&mut self, spec: &EvpnSpec) -> Result<(), String> {
        let dir = PathBuf::from(&spec.frr_dir);
        let z = zebra_conf(spec, "stdout");
        let b = bgpd_conf(spec, "stdout");
        let (zc, bc) = match &self.written {
            Some((wz, wb)) => (*wz != z, *wb != b),
            None => (true, true),
        };
        // only the reflectors changed: told to the running bgpd, no restart
        if !zc && bc && Self::alive(&mut self.bgpd, "bgpd") {
            if let Some(lines) = self.running.as_ref().and_then(|o| reflector_delta(o, spec)) {
                match vty_session(&dir.join("bgpd.vty"), &lines) {
                    Ok(_) => {
                        write_file(&dir.join("bgpd.conf"), &b)?;
                        self.written = Some((z, b));
                        self.running = Some(spec.clone());
                        tracing::info!(reflectors = ?spec.reflectors, "evpn: reflectors changed in the running bgpd");
                        return Ok(());
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "evpn: live change refused; restarting bgpd")
                    }
                }
            }
        }
        if zc || bc {
            std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
            // the daemons drop to user frr and create their sockets here
            chown_frr(&dir)?;
            write_file(&dir.join("zebra.conf"), &z)?;
            write_file(&dir.join("bgpd.conf"), &b)?;
            self.written = Some((z, b));
        }
        if zc {
            Self::stop_child(&mut self.bgpd);
            Self::stop_child(&mut self.zebra);
        } else if bc {
            Self::stop_child(&mut self.bgpd);
        }
        if !Self::alive(&mut self.zebra, "zebra") {
            // bgpd follows a new zebra (it keeps no state across zebra restarts)
            Self::stop_child(&mut self.bgpd);
            // a socket left by an earlier zebra would pass for the new one: bgpd would then
            // talk to nobody and retry only 10 s later (a join that takes 10 s)
            let api = dir.join("zserv.api");
            let _ = std::fs::remove_file(&api);
            self.zebra = Some(self.spawn("zebra", &dir)?);
            // bgpd connects to zebra's socket: wait (at most 2 s) until zebra accepts on it
            for _ in 0..100 {
                if std::os::unix::net::UnixStream::connect(&api).is_ok() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        if !Self::alive(&mut self.bgpd, "bgpd") {
            self.bgpd = Some(self.spawn("bgpd", &dir)?);
            self.starts += 1;
        }
        self.running = Some(spec.clone());
        Ok(())
    }

    fn systemctl(args: &[&str]) -> Result<bool, String> {
        let out = std::process::Command::new(
            std::env::var_os("OVERLAYD_SYSTEMCTL").unwrap_or_else(|| "systemctl".into()),
        )
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("systemctl {}: {e}", args.join(" ")))?;
        Ok(out.status.success())
    }

    fn ensure_unit(&mut self, spec: &EvpnSpec) -> Result<(), String> {
        let dir = PathBuf::from(&spec.frr_dir);
        let conf_path = dir.join("frr.conf");
        let conf = frr_conf(spec);
        let mut changed = false;
        let mut conf_changed = false;
        let cur = std::fs::read_to_string(&conf_path).ok();
        if cur.as_deref() != Some(conf.as_str()) {
            may_take(&conf_path, cur.as_deref())?;
            write_file(&conf_path, &conf)?;
            let _ = chown_frr(&conf_path);
            conf_changed = true;
        }
        let daemons = dir.join("daemons");
        let cur = std::fs::read_to_string(&daemons).map_err(|e| {
            format!(
                "read {}: {e} (is the frr package installed?)",
                daemons.display()
            )
        })?;
        if let Some(new) = daemons_file(&cur) {
            write_file(&daemons, &new)?;
            let _ = chown_frr(&daemons);
            changed = true;
        }
        // asked at most every 10 s (and after a change): one process per ask
        let due = changed
            || conf_changed
            || self
                .unit_checked
                .is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(10));
        if !due {
            return Ok(());
        }
        self.unit_checked = Some(std::time::Instant::now());
        let active = Self::systemctl(&["is-active", "--quiet", "frr.service"])?;
        // frr.conf alone: frr.service's reload applies the difference (frr-reload), and the
        // sessions that stay keep their routes; a failed reload is followed by a restart
        if conf_changed && !changed && active {
            if Self::systemctl(&["reload", "frr.service"])? {
                tracing::info!(conf = %conf_path.display(), "frr.service reloaded");
                return Ok(());
            }
            tracing::warn!("systemctl reload frr.service failed; restarting it");
            changed = true;
        }
        if changed || !active {
            let verb = if active { "restart" } else { "start" };
            if !Self::systemctl(&[verb, "frr.service"])? {
                return Err(format!(
                    "systemctl {verb} frr.service failed (journalctl -u frr)"
                ));
            }
            tracing::info!(verb, conf = %conf_path.display(), "frr.service");
            self.starts += 1;
        }
        Ok(())
    }

    fn stop_child(c: &mut Option<std::process::Child>) {
        if let Some(mut ch) = c.take() {
            // SAFETY: signalling our own child. SIGTERM: bgpd sends its peers a Cease, so
            // they withdraw this node's routes at once.
            unsafe { libc::kill(ch.id() as i32, libc::SIGTERM) };
            let _ = ch.wait();
        }
    }

    /// Stop the spawned daemons (evpn switched off, or overlayd stopping). A unit is left
    /// running: frr.service is the system's.
    pub fn stop(&mut self) {
        Self::stop_child(&mut self.bgpd);
        Self::stop_child(&mut self.zebra);
        self.written = None;
        self.running = None;
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_a_reflector_change_is_applied_live() {
        let old = EvpnSpec {
            asn: 65000,
            router_id: "10.0.0.10".parse().unwrap(),
            local: "10.0.0.10".parse().unwrap(),
            vni: 100,
            bridge: "cloudbr0".into(),
            vtep: "ethvxlan0".into(),
            reflector: false,
            reflectors: vec!["10.0.0.4".parse().unwrap()],
            listen: vec![],
            hold_secs: 9,
            frr: FrrMode::Spawn,
            frr_dir: "/run/overlayd/frr".into(),
        };
        assert_eq!(reflector_delta(&old, &old), None, "nothing to do");
        let mut new = old.clone();
        new.reflectors = vec!["10.0.4.4".parse().unwrap()];
        let d = reflector_delta(&old, &new).unwrap();
        assert_eq!(
            &d[..4],
            [
                "enable",
                "configure terminal",
                "router bgp 65000",
                "no neighbor 10.0.0.4"
            ]
        );
        assert!(d.contains(&"neighbor 10.0.4.4 remote-as 65000".to_string()));
        assert!(d.contains(&"neighbor 10.0.4.4 timers 3 9".to_string()));
        assert!(d.contains(&"neighbor 10.0.4.4 activate".to_string()));
        assert_eq!(d.last().unwrap(), "end");
        new.hold_secs = 30;
        assert_eq!(reflector_delta(&old, &new), None, "timers too: a restart");
    }

    #[test]
    fn vty_command_speaks_vtysh_protocol() {
        use std::io::{Read, Write};
        let dir = std::env::temp_dir().join(format!("ovl-vty-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("bgpd.vty");
        let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let server = std::thread::spawn(move || {
            for status in [0u8, 1] {
                let (mut c, _) = l.accept().unwrap();
                let mut got = Vec::new();
                let mut b = [0u8; 1];
                while c.read(&mut b).unwrap() == 1 && b[0] != 0 {
                    got.push(b[0]);
                }
                assert_eq!(got, b"show x json");
                // the answer in two writes, then the trailer
                c.write_all(b"{\"peers\":").unwrap();
                c.write_all(b"{}}\n").unwrap();
                c.write_all(&[0, 0, 0, status]).unwrap();
            }
        });
        assert_eq!(
            vty_command(&sock, "show x json").unwrap(),
            "{\"peers\":{}}\n"
        );
        let e = vty_command(&sock, "show x json").unwrap_err();
        assert!(e.contains("status 1"), "{e}");
        server.join().unwrap();
        let e = vty_command(&dir.join("zebra.vty"), "show evpn vni json").unwrap_err();
        assert!(e.contains("is FRR running?"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    use super::*;

    fn spec(reflector: bool) -> EvpnSpec {
        EvpnSpec {
            asn: 65000,
            router_id: "10.0.0.21".parse().unwrap(),
            local: "10.0.0.21".parse().unwrap(),
            vni: 100,
            bridge: "cloudbr0".into(),
            vtep: "ethvxlan0".into(),
            reflector,
            reflectors: vec!["10.0.0.10".parse().unwrap(), "10.0.4.10".parse().unwrap()],
            listen: vec!["10.0.0.0/16".parse().unwrap()],
            hold_secs: 9,
            frr: FrrMode::Spawn,
            frr_dir: "/run/overlayd/frr".into(),
        }
    }

    #[test]
    fn a_client_peers_with_each_reflector_and_advertises_its_vni_and_bridge() {
        let c = bgpd_conf(&spec(false), "stdout");
        for want in [
            "router bgp 65000",
            " bgp router-id 10.0.0.21",
            " no bgp default ipv4-unicast",
            " timers bgp 3 9",
            " neighbor 10.0.0.10 remote-as 65000",
            " neighbor 10.0.4.10 remote-as 65000",
            " neighbor 10.0.0.10 timers connect 1",
            " address-family l2vpn evpn",
            "  neighbor 10.0.0.10 activate",
            "  neighbor 10.0.4.10 activate",
            "  advertise-all-vni",
            "  advertise-svi-ip",
        ] {
            assert!(c.contains(want), "{want:?} missing:\n{c}");
        }
        assert!(!c.contains("listen"), "a client listens for nobody:\n{c}");
        assert!(!c.contains("route-reflector-client"), "{c}");
    }

    #[test]
    fn a_reflector_listens_for_clients_and_peers_with_the_other_reflector() {
        let mut s = spec(true);
        s.reflectors = vec!["10.0.4.10".parse().unwrap()];
        let c = bgpd_conf(&s, "stdout");
        for want in [
            " bgp listen limit 5000",
            " neighbor OVERLAY_CLIENTS peer-group",
            " neighbor OVERLAY_CLIENTS remote-as 65000",
            " bgp listen range 10.0.0.0/16 peer-group OVERLAY_CLIENTS",
            "  neighbor OVERLAY_CLIENTS activate",
            "  neighbor OVERLAY_CLIENTS route-reflector-client",
            " neighbor 10.0.4.10 remote-as 65000",
            "  neighbor 10.0.4.10 activate",
            "  advertise-all-vni",
        ] {
            assert!(c.contains(want), "{want:?} missing:\n{c}");
        }
        // the peer reflector is no client of this one
        assert!(
            !c.contains("neighbor 10.0.4.10 route-reflector-client"),
            "{c}"
        );
    }

    #[test]
    fn frr_conf_is_one_file_with_one_hostname() {
        let c = frr_conf(&spec(false));
        assert_eq!(c.matches("hostname ").count(), 1, "{c}");
        assert_eq!(c.matches("log syslog").count(), 1, "{c}");
        assert!(c.starts_with(MARKER), "{c}");
        assert!(c.contains("router bgp 65000"));
        assert!(c.contains("ip nht resolve-via-default"), "{c}");
    }

    #[test]
    fn daemons_gets_bgpd_and_nothing_else_changes() {
        let d = "zebra=yes\nbgpd=no\nospfd=no\nvtysh_enable=yes\n";
        let n = daemons_file(d).unwrap();
        assert_eq!(n, "zebra=yes\nbgpd=yes\nospfd=no\nvtysh_enable=yes\n");
        assert_eq!(daemons_file(&n), None, "idempotent");
        assert!(daemons_file("ospfd=no\n").unwrap().ends_with("bgpd=yes\n"));
    }

    #[test]
    fn frr_conf_is_taken_only_when_absent_ours_or_the_package_stub() {
        let p = Path::new("/etc/frr/frr.conf");
        assert!(may_take(p, None).is_ok());
        assert!(may_take(
            p,
            Some("frr version 8.4\nhostname x\nlog syslog informational\n")
        )
        .is_ok());
        assert!(may_take(p, Some(&frr_conf(&spec(false)))).is_ok());
        let e = may_take(p, Some("router ospf\n network 10.0.0.0/8 area 0\n")).unwrap_err();
        assert!(
            e.contains("/etc/frr/frr.conf") && e.contains("router ospf"),
            "{e}"
        );
    }

    #[test]
    fn frr_json_is_counted() {
        let s: serde_json::Value = serde_json::from_str(
            r#"{"routerId":"10.0.0.21","as":65000,"peers":{"10.0.0.10":{"state":"Established"},"10.0.4.10":{"state":"Active"}}}"#,
        )
        .unwrap();
        assert_eq!(
            parse_summary(&s),
            (1, 2, vec!["10.0.4.10: Active".to_string()])
        );
        let v: serde_json::Value = serde_json::from_str(
            r#"{"100":{"vni":100,"type":"L2","numRemoteVteps":2,"remoteVteps":["10.0.0.10","10.0.0.22"]}}"#,
        )
        .unwrap();
        assert_eq!(parse_vnis(&v, 100), (1, 2));
        // FRR 8.4's detail view: the list under numRemoteVteps
        let d: serde_json::Value = serde_json::from_str(
            r#"[{"vni":100,"numRemoteVteps":["10.0.0.10","10.0.0.22","10.0.0.23"]}]"#,
        )
        .unwrap();
        assert_eq!(parse_vnis(&d, 100), (1, 3));
        let m: serde_json::Value = serde_json::from_str(
            r#"{"numMacs":3,"macs":{"aa:aa:aa:aa:aa:01":{"type":"local"},"aa:aa:aa:aa:aa:02":{"type":"remote"},"aa:aa:aa:aa:aa:03":{"type":"remote"}}}"#,
        )
        .unwrap();
        assert_eq!(parse_macs(&m), (1, 2));
        assert_eq!(parse_summary(&serde_json::Value::Null), (0, 0, vec![]));
    }

    #[test]
    fn a_reflector_that_lost_this_node_is_reset_on_the_second_read() {
        let rr: Vec<Ipv4Addr> = vec!["10.0.0.4".parse().unwrap(), "10.0.4.4".parse().unwrap()];
        let v: serde_json::Value = serde_json::from_str(
            r#"{"peers":{
                "10.0.0.4":{"state":"Established","peerUptimeMsec":29000,"pfxRcd":0},
                "10.0.4.4":{"state":"Established","peerUptimeMsec":29000,"pfxRcd":244}}}"#,
        )
        .unwrap();
        assert_eq!(silent_reflectors(&v, &rr, 9), vec![rr[0]]);
        // just up (routes still on their way), down, or not a reflector: not silent
        for p in [
            r#"{"peers":{"10.0.0.4":{"state":"Established","peerUptimeMsec":3000,"pfxRcd":0}}}"#,
            r#"{"peers":{"10.0.0.4":{"state":"Active","peerUptimeMsec":0,"pfxRcd":0}}}"#,
            r#"{"peers":{"10.0.0.9":{"state":"Established","peerUptimeMsec":29000,"pfxRcd":0}}}"#,
            r#"{}"#,
        ] {
            let v: serde_json::Value = serde_json::from_str(p).unwrap();
            assert!(silent_reflectors(&v, &rr, 9).is_empty(), "{p}");
        }
        let mut st = EvpnStatus {
            silent_reflectors: vec![rr[0]],
            ..Default::default()
        };
        assert_eq!(reflector_reset_due(0, &st), (1, false));
        assert_eq!(reflector_reset_due(1, &st), (2, true));
        st.silent_reflectors.clear();
        assert_eq!(reflector_reset_due(1, &st), (0, false));
        assert_eq!(
            reflector_reset_lines(&rr[..1]),
            vec!["enable".to_string(), "clear bgp 10.0.0.4".to_string()]
        );
    }

    #[test]
    fn a_lost_svi_advertisement_is_repaired_on_the_second_read() {
        // FRR 8.4's answer: the bridge's own MAC is local with intf = the bridge
        let with: serde_json::Value = serde_json::from_str(
            r#"{"numMacs":2,"macs":{"02:0f:0a:65:00:0a":{"type":"local","intf":"cloudbr0"},"c2:8d:33:26:2d:04":{"type":"local","intf":"vm2"}}}"#,
        )
        .unwrap();
        let without: serde_json::Value = serde_json::from_str(
            r#"{"numMacs":2,"macs":{"c2:8d:33:26:2d:04":{"type":"local","intf":"vm2"},"02:0f:0a:65:00:0b":{"type":"remote","remoteVtep":"10.0.0.11"}}}"#,
        )
        .unwrap();
        assert!(parse_svi(&with, "cloudbr0"));
        assert!(!parse_svi(&without, "cloudbr0"));
        assert!(!parse_svi(&with, "cloudbr1"));
        let st = EvpnStatus {
            vnis: 1,
            svi_advertised: Some(false),
            ..Default::default()
        };
        // the first read after a start may be before zebra did it: only counted
        assert_eq!(svi_repair_due(0, &st), (1, false));
        assert_eq!(svi_repair_due(1, &st), (2, true));
        // advertised, not read, no VNI yet, or FRR not answering: nothing to repair
        for f in [
            |s: &mut EvpnStatus| s.svi_advertised = Some(true),
            |s: &mut EvpnStatus| s.svi_advertised = None,
            |s: &mut EvpnStatus| s.vnis = 0,
            |s: &mut EvpnStatus| s.error = Some("zebra: refused".into()),
        ] {
            let mut x = st.clone();
            f(&mut x);
            assert_eq!(svi_repair_due(5, &x), (0, false));
        }
        let lines = svi_readvertise_lines(&spec(false));
        let at = |l: &str| lines.iter().position(|x| x == l).unwrap();
        assert_eq!(lines[..2], ["enable", "configure terminal"]);
        assert!(at("router bgp 65000") < at("address-family l2vpn evpn"));
        // off, then on: the configuration ends as it was
        assert_eq!(at("no advertise-svi-ip") + 1, at("advertise-svi-ip"));
        assert_eq!(lines.last().unwrap(), "end");
    }
}
