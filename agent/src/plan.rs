//! desired × observed → an ordered list of operations. Pure: no kernel access, so every
//! drift case is unit-tested without root. Operations name links, never ifindexes: the
//! executor resolves names at the moment it runs each step (created links get new indexes).

use crate::config::ConfigError;
use crate::desired::disable_ipv6_key;
use crate::files;
use crate::model::*;
use crate::state::State;
use overlay_router::nat::{NatObserved, NatSpec};
use serde::Serialize;
use std::fmt;
use std::net::Ipv4Addr;

mod routing;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    SetSysctl {
        key: String,
        value: String,
        from: Option<String>,
        /// Record `from` so `down` can put it back.
        record: bool,
    },
    DeleteLink {
        name: String,
        why: String,
    },
    CreateBridge {
        name: String,
        mac: Mac,
        mtu: u32,
        mcast_snooping: bool,
    },
    CreateVtep {
        name: String,
        vni: u32,
        port: u16,
        group: Ipv4Addr,
        underlay: String,
        mtu: u32,
        master: String,
    },
    CreateDummy {
        name: String,
        veth_peer: String,
        mtu: u32,
        master: String,
    },
    SetOwner {
        name: String,
    },
    SetMtu {
        name: String,
        mtu: u32,
        from: u32,
    },
    SetMac {
        name: String,
        mac: Mac,
        /// What the link had (display only; may not be six bytes).
        from: String,
    },
    SetStpOff {
        name: String,
    },
    SetMaster {
        name: String,
        master: String,
    },
    SetUp {
        name: String,
    },
    AddAddress {
        dev: String,
        addr: ipnet::Ipv4Net,
    },
    SetMcastSnooping {
        name: String,
        on: bool,
    },
    /// Install one of overlayd's routes. With `replaces`, a foreign route with the same key
    /// (table, destination, metric) is taken over in one step and recorded so `down` puts
    /// it back; `replace` also covers re-pointing one of ours.
    AddRoute {
        route: RouteSpec,
        replace: bool,
        replaces: Option<SavedRoute>,
    },
    DelRoute {
        route: SavedRoute,
        why: String,
    },
    /// `down`: put back a foreign route that overlayd replaced.
    RestoreRoute {
        route: SavedRoute,
    },
    AddRule {
        rule: RuleSpec,
    },
    DelRule {
        priority: u32,
        from: Option<ipnet::Ipv4Net>,
        table: u32,
    },
    WriteHosts {
        path: String,
        line: Option<(Ipv4Addr, String)>,
    },
    WriteResolv {
        path: String,
        servers: Vec<Ipv4Addr>,
    },
    EnsureNat {
        spec: NatSpec,
        why: String,
    },
    RemoveNat,
    ForgetState,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::SetSysctl { key, value, from, .. } => write!(
                f,
                "sysctl {} = {value} (was {})",
                key.replace('/', "."),
                from.as_deref().unwrap_or("unset")
            ),
            Op::DeleteLink { name, why } => write!(f, "delete link {name} ({why})"),
            Op::CreateBridge { name, mac, mtu, mcast_snooping } => write!(
                f,
                "create bridge {name} (mac {mac}, mtu {mtu}, stp off, igmp snooping {}, up)",
                if *mcast_snooping { "on" } else { "off" }
            ),
            Op::CreateVtep { name, vni, port, group, underlay, mtu, master } => write!(
                f,
                "create vxlan {name} (vni {vni}, dstport {port}, group {group}, dev {underlay}, mtu {mtu}, master {master}, up)"
            ),
            Op::CreateDummy { name, mtu, master, .. } => {
                write!(f, "create dummy {name} (mtu {mtu}, master {master}, up)")
            }
            Op::SetOwner { name } => write!(f, "mark {name} as owned by overlayd (device group 79)"),
            Op::SetMtu { name, mtu, from } => write!(f, "set {name} mtu {mtu} (was {from})"),
            Op::SetMac { name, mac, from } => write!(f, "set {name} address {mac} (was {from})"),
            Op::SetStpOff { name } => write!(f, "turn STP off on {name}"),
            Op::SetMaster { name, master } => write!(f, "enslave {name} to {master}"),
            Op::SetUp { name } => write!(f, "set {name} up"),
            Op::AddAddress { dev, addr } => write!(f, "add address {addr} to {dev}"),
            Op::SetMcastSnooping { name, on } => write!(
                f,
                "turn IGMP snooping {} on {name}",
                if *on { "on" } else { "off" }
            ),
            Op::AddRoute { route, replaces, .. } => {
                write!(f, "add route {} ({})", route.describe(), route.why)?;
                if let Some(r) = replaces {
                    write!(f, ", replacing foreign route {r} (down restores it)")?;
                }
                Ok(())
            }
            Op::DelRoute { route, why } => write!(f, "delete route {route} ({why})"),
            Op::RestoreRoute { route } => write!(f, "restore route {route}"),
            Op::AddRule { rule } => write!(f, "add {rule}"),
            Op::DelRule { priority, from, table } => match from {
                Some(n) => write!(f, "delete rule {priority}: from {n} lookup {table}"),
                None => write!(f, "delete rule {priority}: lookup {table}"),
            },
            Op::WriteHosts { path, line } => match line {
                Some((ip, n)) => write!(f, "write \"{ip} {n}\" to {path}"),
                None => write!(f, "remove overlayd line from {path}"),
            },
            Op::WriteResolv { path, servers } if servers.is_empty() => {
                write!(f, "remove overlayd nameservers from {path}")
            }
            Op::WriteResolv { path, servers } => write!(
                f,
                "write nameserver {} to {path}",
                servers.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ")
            ),
            Op::EnsureNat { spec, why } => write!(
                f,
                "install NAT table ip overlayd: masquerade {} out of {} ({} exception(s)) ({why})",
                spec.overlay,
                spec.underlay,
                spec.exceptions.len()
            ),
            Op::RemoveNat => write!(f, "delete NAT table ip overlayd"),
            Op::ForgetState => write!(f, "remove overlayd state file"),
        }
    }
}

impl Op {
    /// A short machine-friendly kind (metrics label, repair catalogue).
    pub fn kind(&self) -> &'static str {
        match self {
            Op::SetSysctl { .. } => "sysctl",
            Op::DeleteLink { .. } => "delete_link",
            Op::CreateBridge { .. } => "create_bridge",
            Op::CreateVtep { .. } => "create_vtep",
            Op::CreateDummy { .. } => "create_dummy",
            Op::SetOwner { .. } => "owner",
            Op::SetMtu { .. } => "mtu",
            Op::SetMac { .. } => "mac",
            Op::SetStpOff { .. } => "stp",
            Op::SetMaster { .. } => "master",
            Op::SetUp { .. } => "up",
            Op::AddAddress { .. } => "address",
            Op::SetMcastSnooping { .. } => "snooping",
            Op::AddRoute { .. } => "route",
            Op::DelRoute { .. } => "route_delete",
            Op::RestoreRoute { .. } => "route_restore",
            Op::AddRule { .. } => "rule",
            Op::DelRule { .. } => "rule_delete",
            Op::WriteHosts { .. } => "hosts",
            Op::WriteResolv { .. } => "resolv",
            Op::EnsureNat { .. } => "nat",
            Op::RemoveNat => "nat_remove",
            Op::ForgetState => "state",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub ops: Vec<Op>,
    pub warnings: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

fn conflict(key: &str, name: &str, what: String) -> ConfigError {
    ConfigError {
        key: key.into(),
        value: name.into(),
        source: None,
        reason: what,
    }
}

fn sysctl_op(
    p: &mut Plan,
    o: &Observed,
    key: &str,
    value: &str,
    record: bool,
    device_created: bool,
) {
    let spec = SysctlSpec {
        key: key.into(),
        value: value.into(),
        restore: record,
        want: SysctlWant::Exact,
    };
    sysctl_spec_op(p, o, &spec, device_created);
}

fn sysctl_spec_op(p: &mut Plan, o: &Observed, s: &SysctlSpec, device_created: bool) {
    let cur = if device_created {
        None
    } else {
        o.sysctls.get(&s.key).cloned().flatten()
    };
    if device_created || !s.satisfied_by(cur.as_deref()) {
        p.ops.push(Op::SetSysctl {
            key: s.key.clone(),
            value: s.value.clone(),
            from: cur.map(|c| c.trim().to_string()),
            record: s.restore,
        });
    }
}

/// Why an existing VTEP cannot be kept (the kernel refuses in-place VNI/port changes).
fn vtep_mismatch(l: &Link, v: &VtepSpec, underlay_index: Option<u32>) -> Option<String> {
    if l.kind.as_deref() != Some("vxlan") {
        return Some(format!(
            "is a {} link, not vxlan",
            l.kind.as_deref().unwrap_or("plain")
        ));
    }
    let x = l.vxlan.clone().unwrap_or_default();
    if x.vni != Some(v.vni) {
        return Some(format!(
            "vni {} != {}",
            x.vni.map_or("none".into(), |n| n.to_string()),
            v.vni
        ));
    }
    if x.port != Some(v.port) {
        return Some(format!(
            "dstport {} != {}",
            x.port.map_or("none".into(), |n| n.to_string()),
            v.port
        ));
    }
    if x.group != Some(v.group) {
        return Some(format!(
            "group {} != {}",
            x.group.map_or("none".into(), |n| n.to_string()),
            v.group
        ));
    }
    if x.dev != underlay_index || underlay_index.is_none() {
        return Some(format!("underlay device differs from {}", v.underlay));
    }
    if x.learning == Some(false) {
        return Some("learning is off".into());
    }
    None
}

/// Plan the changes that turn `o` into `d`.
pub fn plan_apply(d: &Desired, o: &Observed) -> Result<Plan, ConfigError> {
    let mut p = Plan::default();
    let ul_index = o.link(&d.underlay).map(|l| l.index);

    // 1. Shared sysctls first: force_igmp_version must precede the VTEP's join.
    for s in d.sysctls.iter().filter(|s| s.restore) {
        sysctl_spec_op(&mut p, o, s, false);
    }

    // 2. Bridge.
    let br = &d.bridge;
    let mac = Mac(br.mac);
    // (Snooping is set in the creating request; see BridgeSpec::mcast_snooping.)
    let mut bridge_created = false;
    match o.link(&br.name) {
        Some(l) if l.kind.as_deref() != Some("bridge") => {
            if !l.owned() {
                return Err(conflict(
                    "bridge",
                    &br.name,
                    format!(
                        "an existing {} link has this name and overlayd did not create it; remove or rename it",
                        l.kind.as_deref().unwrap_or("physical")
                    ),
                ));
            }
            p.ops.push(Op::DeleteLink {
                name: br.name.clone(),
                why: "not a bridge".into(),
            });
            bridge_created = true;
        }
        None => bridge_created = true,
        Some(l) => {
            if !l.owned() {
                p.ops.push(Op::SetOwner {
                    name: br.name.clone(),
                });
            }
            if l.mac != br.mac {
                p.ops.push(Op::SetMac {
                    name: br.name.clone(),
                    mac,
                    from: fmt_mac(&l.mac),
                });
            }
            if l.mtu != br.mtu {
                p.ops.push(Op::SetMtu {
                    name: br.name.clone(),
                    mtu: br.mtu,
                    from: l.mtu,
                });
            }
            if l.stp.unwrap_or(0) != 0 {
                p.ops.push(Op::SetStpOff {
                    name: br.name.clone(),
                });
            }
            if l.mcast_snooping.is_some_and(|s| s != br.mcast_snooping) {
                p.ops.push(Op::SetMcastSnooping {
                    name: br.name.clone(),
                    on: br.mcast_snooping,
                });
            }
        }
    }
    if bridge_created {
        p.ops.push(Op::CreateBridge {
            name: br.name.clone(),
            mac,
            mtu: br.mtu,
            mcast_snooping: br.mcast_snooping,
        });
    }
    sysctl_op(
        &mut p,
        o,
        &disable_ipv6_key(&br.name),
        "1",
        false,
        bridge_created,
    );
    let br_link = if bridge_created {
        None
    } else {
        o.link(&br.name)
    };
    let has_addr = br_link.is_some_and(|l| o.addrs_of(l.index).any(|a| a.addr == br.address));
    if !has_addr {
        p.ops.push(Op::AddAddress {
            dev: br.name.clone(),
            addr: br.address,
        });
    }
    if let Some(l) = br_link {
        for a in o.addrs_of(l.index).filter(|a| a.addr != br.address) {
            p.warnings.push(format!(
                "{} also carries {} (not configured; left alone)",
                br.name, a.addr
            ));
        }
    }

    // 3. VTEP.
    if let Some(v) = &d.vtep {
        let mut create = false;
        match o.link(&v.name) {
            None => create = true,
            Some(l) => {
                if let Some(why) = vtep_mismatch(l, v, ul_index) {
                    if l.kind.as_deref() != Some("vxlan") && !l.owned() {
                        return Err(conflict(
                            "vtep",
                            &v.name,
                            format!("an existing link with this name {why} and overlayd did not create it; remove or rename it"),
                        ));
                    }
                    p.ops.push(Op::DeleteLink {
                        name: v.name.clone(),
                        why: format!("incompatible: {why}; the kernel cannot change this in place"),
                    });
                    create = true;
                } else {
                    if !l.owned() {
                        p.ops.push(Op::SetOwner {
                            name: v.name.clone(),
                        });
                    }
                    if l.mtu != v.mtu {
                        p.ops.push(Op::SetMtu {
                            name: v.name.clone(),
                            mtu: v.mtu,
                            from: l.mtu,
                        });
                    }
                    let master_ok = !bridge_created
                        && l.master.is_some()
                        && l.master == o.link(&br.name).map(|b| b.index);
                    if !master_ok {
                        p.ops.push(Op::SetMaster {
                            name: v.name.clone(),
                            master: br.name.clone(),
                        });
                    }
                    sysctl_op(&mut p, o, &disable_ipv6_key(&v.name), "1", false, false);
                    if !l.up {
                        p.ops.push(Op::SetUp {
                            name: v.name.clone(),
                        });
                    }
                }
            }
        }
        if create {
            p.ops.push(Op::CreateVtep {
                name: v.name.clone(),
                vni: v.vni,
                port: v.port,
                group: v.group,
                underlay: v.underlay.clone(),
                mtu: v.mtu,
                master: br.name.clone(),
            });
            // Created enslaved and up in one netlink request.
            sysctl_op(&mut p, o, &disable_ipv6_key(&v.name), "1", false, true);
        }
    }

    // 4. Dummy port (standalone).
    if let Some(dm) = &d.dummy {
        let mut create = false;
        match o.link(&dm.name) {
            None => create = true,
            Some(l) if !matches!(l.kind.as_deref(), Some("dummy") | Some("veth")) => {
                if !l.owned() {
                    return Err(conflict(
                        "dummy",
                        &dm.name,
                        format!(
                            "an existing {} link has this name and overlayd did not create it",
                            l.kind.as_deref().unwrap_or("physical")
                        ),
                    ));
                }
                p.ops.push(Op::DeleteLink {
                    name: dm.name.clone(),
                    why: "not a dummy".into(),
                });
                create = true;
            }
            Some(l) => {
                if !l.owned() {
                    p.ops.push(Op::SetOwner {
                        name: dm.name.clone(),
                    });
                }
                if l.mtu != dm.mtu {
                    p.ops.push(Op::SetMtu {
                        name: dm.name.clone(),
                        mtu: dm.mtu,
                        from: l.mtu,
                    });
                }
                let master_ok = !bridge_created
                    && l.master.is_some()
                    && l.master == o.link(&br.name).map(|b| b.index);
                if !master_ok {
                    p.ops.push(Op::SetMaster {
                        name: dm.name.clone(),
                        master: br.name.clone(),
                    });
                }
                if !l.up {
                    p.ops.push(Op::SetUp {
                        name: dm.name.clone(),
                    });
                }
                if l.kind.as_deref() == Some("veth") {
                    if let Some(peer) = l.link.and_then(|i| o.link_by_index(i)) {
                        if !peer.up {
                            p.ops.push(Op::SetUp {
                                name: peer.name.clone(),
                            });
                        }
                    }
                }
            }
        }
        if create {
            p.ops.push(Op::CreateDummy {
                name: dm.name.clone(),
                veth_peer: dm.veth_peer.clone(),
                mtu: dm.mtu,
                master: br.name.clone(),
            });
        }
    }

    // 5. Bridge up (a created bridge is created up).
    if !bridge_created && !br_link.is_some_and(|l| l.up) {
        p.ops.push(Op::SetUp {
            name: br.name.clone(),
        });
    }

    // 6. Routes and rules (see `routing`).
    routing::plan_routes(&mut p, d, o, bridge_created);
    routing::plan_rules(&mut p, d, o);

    // 7. Files.
    let hosts_now = o.hosts.clone().unwrap_or_default();
    if files::render_hosts(&hosts_now, d.hosts_line.as_ref()) != hosts_now
        && (d.hosts_line.is_some() || o.hosts.is_some())
    {
        p.ops.push(Op::WriteHosts {
            path: d.hosts_file.clone(),
            line: d.hosts_line.clone(),
        });
    }
    let resolv_now = o.resolv.clone().unwrap_or_default();
    if files::render_resolv(&resolv_now, &d.dns) != resolv_now
        && (!d.dns.is_empty() || o.resolv.is_some())
    {
        p.ops.push(Op::WriteResolv {
            path: d.resolv_conf.clone(),
            servers: d.dns.clone(),
        });
    }

    // 8. NAT (router/standalone).
    match (&d.nat, &o.nat) {
        (Some(spec), Some(NatObserved::Matches)) => {
            let _ = spec;
        }
        (Some(spec), obs) => p.ops.push(Op::EnsureNat {
            spec: spec.clone(),
            why: match obs {
                Some(NatObserved::Differs(r)) => format!("drifted: {r}"),
                _ => "absent".into(),
            },
        }),
        (None, Some(NatObserved::Matches)) | (None, Some(NatObserved::Differs(_))) => {
            p.ops.push(Op::RemoveNat)
        }
        (None, _) => {}
    }

    Ok(p)
}

/// Names `down` considers: the configured ones plus any recorded in the state file.
pub struct DownInput<'a> {
    pub bridge: &'a str,
    pub vtep: &'a str,
    pub dummy: &'a str,
    pub hosts_file: &'a str,
    pub resolv_conf: &'a str,
}

/// Plan the removal of everything overlayd owns. Links not marked as ours are left alone.
pub fn plan_down(i: &DownInput, o: &Observed, st: &State) -> Plan {
    let mut p = Plan::default();
    let mut names: Vec<String> = vec![i.vtep.to_string(), i.dummy.to_string()];
    for n in &st.links {
        if !names.contains(n) && n != i.bridge {
            names.push(n.clone());
        }
    }
    names.push(i.bridge.to_string());
    for n in names {
        if let Some(l) = o.link(&n) {
            if l.owned() {
                p.ops.push(Op::DeleteLink {
                    name: n.clone(),
                    why: "down".into(),
                });
            } else {
                p.warnings.push(format!(
                    "{n} exists but is not marked as overlayd's; left alone"
                ));
            }
        }
    }
    // Routes we installed vanish with the links; rules and routes on other devices not.
    let deleted: Vec<u32> = p
        .ops
        .iter()
        .filter_map(|op| match op {
            Op::DeleteLink { name, .. } => o.link(name).map(|l| l.index),
            _ => None,
        })
        .collect();
    let routing_ops = routing::plan_down(o, st, &deleted, &mut p.warnings);
    p.ops.extend(routing_ops);
    if matches!(
        o.nat,
        Some(NatObserved::Matches) | Some(NatObserved::Differs(_))
    ) {
        p.ops.push(Op::RemoveNat);
    }
    for (k, orig) in &st.sysctls {
        let cur = o.sysctls.get(k).cloned().flatten();
        match cur {
            Some(c) if c.trim() != orig.trim() => p.ops.push(Op::SetSysctl {
                key: k.clone(),
                value: orig.clone(),
                from: Some(c.trim().to_string()),
                record: false,
            }),
            _ => {}
        }
    }
    if let Some(h) = &o.hosts {
        if files::render_hosts(h, None) != *h {
            p.ops.push(Op::WriteHosts {
                path: i.hosts_file.into(),
                line: None,
            });
        }
    }
    if let Some(r) = &o.resolv {
        if files::render_resolv(r, &[]) != *r {
            p.ops.push(Op::WriteResolv {
                path: i.resolv_conf.into(),
                servers: vec![],
            });
        }
    }
    p
}

/// Sysctl keys a plan needs observed values for.
pub fn sysctl_keys(d: &Desired) -> Vec<String> {
    d.sysctls.iter().map(|s| s.key.clone()).collect()
}
