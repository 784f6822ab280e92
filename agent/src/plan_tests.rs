//! Unit tests of desired-state and plan for every role and every drift, without root.

use crate::config::{self, Config, FileConfig, Overrides, Role, Source};
use crate::desired::{desired, disable_ipv6_key, igmp_key, IP_FORWARD};
use crate::files;
use crate::model::*;
use crate::plan::{plan_adopt, plan_apply, plan_down, DownInput, Op};
use crate::state::State;
use overlay_router::nat::NatObserved;

fn cfg(pairs: &[(&'static str, &str)]) -> Config {
    let mut o = Overrides::default();
    for (k, v) in pairs {
        o.set(k, vec![v.to_string()], Source::Flag);
    }
    config::build(&FileConfig::default(), &o).unwrap()
}

pub(crate) fn role_cfg(role: Role) -> Config {
    let mut p: Vec<(&'static str, &str)> = vec![("role", role.as_str()), ("underlay", "eth0")];
    match role {
        Role::Host => p.extend([
            ("address", "10.101.0.10/16"),
            ("gateway", "10.101.0.1"),
            ("group", "239.255.0.1"),
        ]),
        Role::Management => p.extend([
            ("address", "10.101.0.2/16"),
            ("gateway", "10.101.0.1"),
            ("group", "239.255.0.1"),
            ("fqdn", "cloudstack-management.localdomain"),
            ("dns", "10.0.0.2"),
        ]),
        Role::Router => p.extend([
            ("address", "10.101.0.1/16"),
            ("group", "239.255.0.1"),
            ("nat", "true"),
            ("nat_exceptions", "10.0.0.0/16"),
        ]),
        Role::Standalone => p.extend([("address", "10.100.0.1/16"), ("nat", "true")]),
    }
    cfg(&p)
}

/// Just the underlay: eth0, MTU 9001 (EC2), 10.0.1.5/24, default route.
pub(crate) fn bare() -> Observed {
    Observed {
        links: vec![
            Link {
                group: 0,
                index: 1,
                name: "lo".into(),
                kind: None,
                up: true,
                carrier: true,
                mtu: 65536,
                master: None,
                mac: vec![0; 6],
                alias: None,
                vxlan: None,
                brport: None,
                stp: None,
                mcast_snooping: None,
                link: None,
            },
            Link {
                group: 0,
                index: 2,
                name: "eth0".into(),
                kind: None,
                up: true,
                carrier: true,
                mtu: 9001,
                master: None,
                mac: vec![2, 0, 0, 0, 0, 5],
                alias: None,
                vxlan: None,
                brport: None,
                stp: None,
                mcast_snooping: None,
                link: None,
            },
        ],
        addrs: vec![Addr {
            index: 2,
            addr: "10.0.1.5/24".parse().unwrap(),
        }],
        routes: vec![Route {
            dst: "0.0.0.0/0".parse().unwrap(),
            gateway: Some("10.0.1.1".parse().unwrap()),
            oif: Some(2),
            metric: 100,
            protocol: 16,
            table: 254,
            scope: 0,
            kind: 1,
            prefsrc: None,
        }],
        rules: vec![],
        sysctls: Default::default(),
        hosts: Some("127.0.0.1 localhost\n".into()),
        resolv: Some("nameserver 10.0.0.2\n".into()),
        nat: Some(NatObserved::Absent),
        ..Default::default()
    }
}

/// The observed state a correct apply leaves behind.
pub(crate) fn converged(d: &Desired) -> Observed {
    let mut o = bare();
    for s in &d.sysctls {
        o.sysctls.insert(s.key.clone(), Some(s.value.clone()));
    }
    o.links.push(Link {
        group: OWNER_GROUP,
        index: 10,
        name: d.bridge.name.clone(),
        kind: Some("bridge".into()),
        up: true,
        carrier: true,
        mtu: d.bridge.mtu,
        master: None,
        mac: d.bridge.mac.to_vec(),
        alias: None,
        vxlan: None,
        brport: None,
        stp: Some(0),
        mcast_snooping: Some(false),
        link: None,
    });
    o.addrs.push(Addr {
        index: 10,
        addr: d.bridge.address,
    });
    if let Some(v) = &d.vtep {
        o.links.push(Link {
            group: OWNER_GROUP,
            index: 11,
            name: v.name.clone(),
            kind: Some("vxlan".into()),
            up: true,
            carrier: true,
            mtu: v.mtu,
            master: Some(10),
            mac: vec![2, 1, 1, 1, 1, 1],
            alias: None,
            vxlan: Some(VxlanInfo {
                vni: Some(v.vni),
                port: Some(v.port),
                group: v.group,
                dev: Some(2),
                learning: Some(v.learning),
                local: v.local,
            }),
            brport: Some(BrPortInfo {
                learning: Some(!v.neigh_suppress),
                neigh_suppress: Some(v.neigh_suppress),
            }),
            stp: None,
            mcast_snooping: None,
            link: None,
        });
    }
    if let Some(dm) = &d.dummy {
        o.links.push(Link {
            group: OWNER_GROUP,
            index: 12,
            name: dm.name.clone(),
            kind: Some("veth".into()),
            up: true,
            carrier: true,
            mtu: dm.mtu,
            master: Some(10),
            mac: vec![2, 2, 2, 2, 2, 2],
            alias: None,
            vxlan: None,
            brport: None,
            stp: None,
            mcast_snooping: None,
            link: Some(13),
        });
        o.links.push(Link {
            group: OWNER_GROUP,
            index: 13,
            name: dm.veth_peer.clone(),
            kind: Some("veth".into()),
            up: true,
            carrier: true,
            mtu: dm.mtu,
            master: None,
            mac: vec![2, 2, 2, 2, 2, 3],
            alias: None,
            vxlan: None,
            brport: None,
            stp: None,
            mcast_snooping: None,
            link: Some(12),
        });
    }
    let has_default = o.routes.iter().any(|r| r.dst.prefix_len() == 0);
    for r in d.routes.iter().filter(|r| !(r.fallback && has_default)) {
        o.routes.push(Route {
            dst: r.dst,
            gateway: r.gateway,
            oif: o.link(&r.dev).map(|l| l.index),
            metric: r.metric,
            protocol: RTPROT_OVERLAYD,
            table: r.table,
            scope: if r.gateway.is_some() { 0 } else { 253 },
            kind: 1,
            prefsrc: r.src,
        });
    }
    for r in &d.rules {
        o.rules.push(Rule {
            priority: r.priority,
            src: Some(r.from),
            dst: None,
            table: r.table,
            protocol: RTPROT_OVERLAYD,
            action: 1,
            other_selectors: false,
        });
    }
    let h = o.hosts.clone().unwrap();
    o.hosts = Some(files::render_hosts(&h, d.hosts_line.as_ref()));
    let r = o.resolv.clone().unwrap();
    o.resolv = Some(files::render_resolv(&r, &d.dns));
    o.nat = Some(if d.nat.is_some() {
        NatObserved::Matches
    } else {
        NatObserved::Absent
    });
    o
}

const ROLES: [Role; 4] = [Role::Host, Role::Management, Role::Router, Role::Standalone];

fn kinds(ops: &[Op]) -> Vec<&'static str> {
    ops.iter().map(|o| o.kind()).collect()
}

fn setup(role: Role) -> (Desired, Observed) {
    let c = role_cfg(role);
    let d = desired(&c, &bare()).unwrap();
    let o = converged(&d);
    (d, o)
}

#[test]
fn desired_per_role() {
    let b = bare();
    let h = desired(&role_cfg(Role::Host), &b).unwrap();
    assert_eq!(h.bridge.mtu, 8450, "9001-50 capped at 8450 (TGW multicast)");
    assert_eq!(h.vtep.as_ref().unwrap().underlay, "eth0");
    let gw: std::net::Ipv4Addr = "10.101.0.1".parse().unwrap();
    assert!(h
        .routes
        .iter()
        .any(|r| r.table == 79 && r.dst.prefix_len() == 0 && r.gateway == Some(gw)));
    assert_eq!(h.rules.len(), 1);
    assert!(h.nat.is_none() && h.dummy.is_none());
    assert_eq!(h.sysctls[0].key, igmp_key("eth0"));
    assert!(!h.sysctls.iter().any(|s| s.key == IP_FORWARD));
    assert_eq!(h.bridge.mac, [0x02, 0x0f, 10, 101, 0, 10]);

    let m = desired(&role_cfg(Role::Management), &b).unwrap();
    assert_eq!(
        m.hosts_line.as_ref().unwrap().1,
        "cloudstack-management.localdomain"
    );
    assert_eq!(m.dns.len(), 1);

    let r = desired(&role_cfg(Role::Router), &b).unwrap();
    assert!(r
        .routes
        .iter()
        .all(|x| x.gateway.is_none() && x.dst.prefix_len() == 32));
    assert!(r.rules.is_empty());
    assert!(r
        .sysctls
        .iter()
        .any(|s| s.key == IP_FORWARD && s.value == "1"));
    let nat = r.nat.as_ref().unwrap();
    assert_eq!(nat.overlay.to_string(), "10.101.0.0/16");
    assert_eq!(nat.underlay, "eth0");

    let s = desired(&role_cfg(Role::Standalone), &b).unwrap();
    assert!(s.vtep.is_none());
    assert_eq!(s.dummy.as_ref().unwrap().name, "ethdummy0");
    assert!(!s.sysctls.iter().any(|x| x.key.contains("force_igmp")));
    assert!(s.sysctls.iter().any(|x| x.key == IP_FORWARD));
}

#[test]
fn underlay_defaults_to_default_route_interface() {
    let mut c = role_cfg(Role::Host);
    c.underlay = None;
    let d = desired(&c, &bare()).unwrap();
    assert_eq!(d.underlay, "eth0");
    let mut o = bare();
    o.routes.clear();
    let e = desired(&c, &o).unwrap_err();
    assert_eq!(e.key, "underlay");
}

#[test]
fn fact_checks() {
    let mut c = role_cfg(Role::Host);
    c.underlay = Some("eth7".into());
    assert_eq!(desired(&c, &bare()).unwrap_err().key, "underlay");
    let mut c = role_cfg(Role::Host);
    c.address = "10.0.0.10/16".parse().unwrap();
    c.gateway = Some("10.0.0.1".parse().unwrap());
    let e = desired(&c, &bare()).unwrap_err();
    assert_eq!(e.key, "address");
    assert!(e.reason.contains("overlaps"));
    let mut c = role_cfg(Role::Host);
    c.mtu = config::Mtu::Fixed(8952);
    assert_eq!(desired(&c, &bare()).unwrap_err().key, "mtu");
    let mut o = bare();
    o.links[1].mtu = 1500;
    let mut c = role_cfg(Role::Host);
    c.mtu = config::Mtu::Fixed(1451);
    assert_eq!(desired(&c, &o).unwrap_err().key, "mtu");
    c.mtu = config::Mtu::Auto;
    assert_eq!(desired(&c, &o).unwrap().bridge.mtu, 1450);
}

#[test]
fn plan_empty_when_converged_every_role() {
    for r in ROLES {
        let (d, o) = setup(r);
        let p = plan_apply(&d, &o).unwrap();
        assert!(p.is_empty(), "{r}: {:?}", p.ops);
    }
}

#[test]
fn fresh_host_plan_is_ordered() {
    let d = desired(&role_cfg(Role::Host), &bare()).unwrap();
    let p = plan_apply(&d, &bare()).unwrap();
    let k = kinds(&p.ops);
    assert_eq!(
        k,
        vec![
            "sysctl", // force_igmp_version
            "sysctl", // igmp_max_memberships
            "create_bridge",
            "sysctl",
            "address",
            "create_vtep",
            "sysctl",
            "route", // 3 x link-local
            "route",
            "route",
            "route", // table 79: overlay subnet
            "route", // table 79: default via gateway
            "rule"
        ]
    );
    // force_igmp_version strictly before the VTEP exists (and so before it joins)
    let igmp = p
        .ops
        .iter()
        .position(|o| matches!(o, Op::SetSysctl { key, .. } if key.contains("force_igmp")))
        .unwrap();
    let vtep = p
        .ops
        .iter()
        .position(|o| matches!(o, Op::CreateVtep { .. }))
        .unwrap();
    assert!(igmp < vtep);
    // IPv6 off on the VTEP right after it exists (it is created with addr_gen_mode none,
    // so it never has a link-local address meanwhile)
    let v6 = p
        .ops
        .iter()
        .position(
            |o| matches!(o, Op::SetSysctl { key, .. } if *key == disable_ipv6_key("ethvxlan0")),
        )
        .unwrap();
    assert_eq!(v6, vtep + 1);
    assert!(
        !p.ops.iter().any(|o| matches!(o, Op::SetUp { .. })),
        "created up"
    );
}

#[test]
fn fresh_plans_every_role() {
    for r in ROLES {
        let d = desired(&role_cfg(r), &bare()).unwrap();
        let p = plan_apply(&d, &bare()).unwrap();
        let k = kinds(&p.ops);
        assert!(k.contains(&"create_bridge"), "{r}");
        assert_eq!(k.contains(&"create_vtep"), r != Role::Standalone, "{r}");
        assert_eq!(k.contains(&"create_dummy"), r == Role::Standalone, "{r}");
        assert_eq!(
            k.contains(&"rule"),
            matches!(r, Role::Host | Role::Management),
            "{r}"
        );
        assert!(k.contains(&"route"), "{r}: link-local routes on every role");
        assert_eq!(
            k.contains(&"nat"),
            matches!(r, Role::Router | Role::Standalone),
            "{r}"
        );
        assert_eq!(k.contains(&"hosts"), r == Role::Management, "{r}");
        assert_eq!(k.contains(&"resolv"), r == Role::Management, "{r}");
        // Applying the plan's result gives an empty plan.
        assert!(plan_apply(&d, &converged(&d)).unwrap().is_empty());
    }
}

fn drift(role: Role, f: impl FnOnce(&mut Observed)) -> Vec<Op> {
    let (d, mut o) = setup(role);
    f(&mut o);
    plan_apply(&d, &o).unwrap().ops
}

fn vtep_mut(o: &mut Observed) -> &mut Link {
    o.links.iter_mut().find(|l| l.name == "ethvxlan0").unwrap()
}
fn bridge_mut(o: &mut Observed) -> &mut Link {
    o.links.iter_mut().find(|l| l.name == "cloudbr0").unwrap()
}

#[test]
fn drift_missing_vtep() {
    let ops = drift(Role::Host, |o| o.links.retain(|l| l.name != "ethvxlan0"));
    assert_eq!(kinds(&ops), vec!["create_vtep", "sysctl"]);
}

#[test]
fn drift_wrong_vni_port_group_underlay_recreate() {
    for f in [
        (|x: &mut VxlanInfo| x.vni = Some(200)) as fn(&mut VxlanInfo),
        |x| x.port = Some(8472),
        |x| x.group = Some("239.255.9.9".parse().unwrap()),
        |x| x.dev = Some(1),
    ] {
        let ops = drift(Role::Host, |o| f(vtep_mut(o).vxlan.as_mut().unwrap()));
        assert_eq!(
            kinds(&ops),
            vec!["delete_link", "create_vtep", "sysctl"],
            "{ops:?}"
        );
    }
}

#[test]
fn drift_detached_vtep() {
    let ops = drift(Role::Host, |o| vtep_mut(o).master = None);
    assert_eq!(
        ops,
        vec![Op::SetMaster {
            name: "ethvxlan0".into(),
            master: "cloudbr0".into()
        }]
    );
}

#[test]
fn drift_down() {
    let ops = drift(Role::Host, |o| vtep_mut(o).up = false);
    assert_eq!(
        ops,
        vec![Op::SetUp {
            name: "ethvxlan0".into()
        }]
    );
    let ops = drift(Role::Host, |o| bridge_mut(o).up = false);
    assert_eq!(
        ops,
        vec![Op::SetUp {
            name: "cloudbr0".into()
        }]
    );
}

#[test]
fn drift_wrong_mtu() {
    let ops = drift(Role::Host, |o| {
        vtep_mut(o).mtu = 1500;
        bridge_mut(o).mtu = 1500;
    });
    assert_eq!(kinds(&ops), vec!["mtu", "mtu"]);
}

#[test]
fn drift_missing_address_and_route() {
    let ops = drift(Role::Host, |o| o.addrs.retain(|a| a.index != 10));
    assert_eq!(
        ops,
        vec![Op::AddAddress {
            dev: "cloudbr0".into(),
            addr: "10.101.0.10/16".parse().unwrap()
        }]
    );
    let ops = drift(Role::Host, |o| {
        o.routes
            .retain(|r| r.protocol != RTPROT_OVERLAYD || r.table != 79)
    });
    assert_eq!(kinds(&ops), vec!["route", "route"]);
    let ops = drift(Role::Host, |o| o.rules.clear());
    assert_eq!(kinds(&ops), vec!["rule"]);
}

#[test]
fn drift_wrong_sysctl() {
    let ops = drift(Role::Host, |o| {
        o.sysctls.insert(igmp_key("eth0"), Some("0".into()));
    });
    assert_eq!(
        ops,
        vec![Op::SetSysctl {
            key: igmp_key("eth0"),
            value: "2".into(),
            from: Some("0".into()),
            record: true
        }]
    );
    let ops = drift(Role::Router, |o| {
        o.sysctls.insert(IP_FORWARD.into(), Some("0".into()));
    });
    assert_eq!(kinds(&ops), vec!["sysctl"]);
}

#[test]
fn drift_bridge_mac_stp_and_missing_bridge() {
    let ops = drift(Role::Host, |o| bridge_mut(o).mac = vec![2, 1, 1, 1, 1, 1]);
    assert_eq!(kinds(&ops), vec!["mac"]);
    let ops = drift(Role::Host, |o| bridge_mut(o).stp = Some(1));
    assert_eq!(kinds(&ops), vec!["stp"]);
    let ops = drift(Role::Host, |o| {
        o.links.retain(|l| l.name != "cloudbr0");
        o.addrs.retain(|a| a.index != 10);
        o.routes.retain(|r| r.oif != Some(10));
        vtep_mut(o).master = None;
    });
    assert_eq!(
        kinds(&ops),
        vec![
            "create_bridge",
            "sysctl",
            "address",
            "master",
            "route",
            "route"
        ]
    );
    let ops = drift(Role::Host, |o| bridge_mut(o).mcast_snooping = Some(true));
    assert_eq!(
        ops,
        vec![Op::SetMcastSnooping {
            name: "cloudbr0".into(),
            on: false
        }]
    );
}

#[test]
fn drift_nat_flushed() {
    let ops = drift(Role::Router, |o| {
        o.nat = Some(NatObserved::Differs("flushed".into()))
    });
    assert_eq!(kinds(&ops), vec!["nat"]);
}

#[test]
fn drift_hosts_and_resolv() {
    let ops = drift(Role::Management, |o| {
        o.hosts = Some("127.0.0.1 localhost\n".into())
    });
    assert_eq!(kinds(&ops), vec!["hosts"]);
    let ops = drift(Role::Management, |o| o.resolv = None);
    assert_eq!(kinds(&ops), vec!["resolv"]);
}

#[test]
fn foreign_bridge_ports_and_addresses_untouched() {
    let ops = drift(Role::Host, |o| {
        o.links.push(Link {
            group: 0,
            index: 30,
            name: "vnet0".into(),
            kind: Some("tun".into()),
            up: true,
            carrier: true,
            mtu: 8450,
            master: Some(10),
            mac: vec![0xfe, 0, 0, 0, 0, 1],
            alias: None,
            vxlan: None,
            brport: None,
            stp: None,
            mcast_snooping: None,
            link: None,
        });
        o.addrs.push(Addr {
            index: 10,
            addr: "169.254.0.1/16".parse().unwrap(),
        });
        o.routes.push(Route {
            dst: "192.168.0.0/16".parse().unwrap(),
            gateway: None,
            oif: Some(10),
            metric: 0,
            protocol: 4,
            table: 254,
            scope: 0,
            kind: 1,
            prefsrc: None,
        });
    });
    assert!(ops.is_empty(), "{ops:?}");
}

#[test]
fn foreign_link_with_our_name_is_refused() {
    let (d, mut o) = setup(Role::Host);
    let b = bridge_mut(&mut o);
    b.kind = Some("veth".into());
    b.group = 0;
    let e = plan_apply(&d, &o).unwrap_err();
    assert_eq!(e.key, "bridge");
}

#[test]
fn unowned_but_compatible_is_refused_and_left_to_adopt() {
    // The device group is the only mark: an alias "overlayd" no longer counts.
    for name in ["cloudbr0", "ethvxlan0"] {
        let (d, mut o) = setup(Role::Host);
        let l = o.links.iter_mut().find(|l| l.name == name).unwrap();
        l.group = 0;
        l.alias = Some("overlayd".into());
        let e = plan_apply(&d, &o).unwrap_err();
        assert_eq!(e.key, if name == "cloudbr0" { "bridge" } else { "vtep" });
        assert!(e.reason.contains("overlayd adopt"), "{e}");
        // adopt marks it, and then nothing is left to do
        let a = plan_adopt(&d, &o).unwrap();
        assert_eq!(
            a.ops,
            vec![Op::SetOwner {
                name: name.to_string()
            }]
        );
        o.links.iter_mut().find(|l| l.name == name).unwrap().group = OWNER_GROUP;
        assert!(plan_apply(&d, &o).unwrap().is_empty());
    }
}

#[test]
fn adopt_refuses_a_device_that_does_not_match_naming_the_difference() {
    let (d, mut o) = setup(Role::Host);
    for l in o
        .links
        .iter_mut()
        .filter(|l| l.name == "cloudbr0" || l.name == "ethvxlan0")
    {
        l.group = 0;
    }
    vtep_mut(&mut o).vxlan.as_mut().unwrap().vni = Some(200);
    let e = plan_adopt(&d, &o).unwrap_err();
    assert_eq!(e.key, "vtep");
    assert!(e.reason.contains("vni 200 != 100"), "{e}");
    // a bridge that is no bridge
    let (d, mut o) = setup(Role::Host);
    let b = bridge_mut(&mut o);
    b.group = 0;
    b.kind = Some("dummy".into());
    let e = plan_adopt(&d, &o).unwrap_err();
    assert_eq!(e.key, "bridge");
    // nothing foreign: nothing to adopt
    let (d, o) = setup(Role::Standalone);
    assert!(plan_adopt(&d, &o).unwrap().is_empty());
}

#[test]
fn standalone_dummy_drift() {
    let ops = drift(Role::Standalone, |o| {
        o.links
            .iter_mut()
            .find(|l| l.name == "ethdummy0")
            .unwrap()
            .master = None;
    });
    assert_eq!(kinds(&ops), vec!["master"]);
    let ops = drift(Role::Standalone, |o| {
        o.links.retain(|l| !l.name.starts_with("ethdummy0"))
    });
    assert_eq!(kinds(&ops), vec!["create_dummy"]);
}

#[test]
fn router_removes_stale_default_route_it_installed() {
    let ops = drift(Role::Router, |o| {
        o.routes.push(Route {
            dst: "0.0.0.0/0".parse().unwrap(),
            gateway: Some("10.101.0.9".parse().unwrap()),
            oif: Some(10),
            metric: 0,
            protocol: RTPROT_OVERLAYD,
            table: 254,
            scope: 0,
            kind: 1,
            prefsrc: None,
        });
    });
    assert_eq!(kinds(&ops), vec!["route_delete"]);
}

#[test]
fn down_removes_only_owned() {
    let (d, mut o) = setup(Role::Management);
    let mut st = State::default();
    st.sysctls.insert(igmp_key("eth0"), "0".into());
    o.links.push(Link {
        group: 0,
        index: 40,
        name: "br-foreign".into(),
        kind: Some("bridge".into()),
        up: true,
        carrier: true,
        mtu: 1500,
        master: None,
        mac: vec![2; 6],
        alias: None,
        vxlan: None,
        brport: None,
        stp: None,
        mcast_snooping: None,
        link: None,
    });
    let i = DownInput {
        bridge: "cloudbr0",
        vtep: "ethvxlan0",
        dummy: "ethdummy0",
        hosts_file: "/h",
        resolv_conf: "/r",
    };
    let p = plan_down(&i, &o, &st);
    let k = kinds(&p.ops);
    // table-79 routes vanish with cloudbr0; the rule and the link-local routes on eth0
    // are deleted explicitly
    assert_eq!(
        k,
        vec![
            "delete_link",
            "delete_link",
            "rule_delete",
            "route_delete",
            "route_delete",
            "route_delete",
            "sysctl",
            "hosts",
            "resolv"
        ]
    );
    assert!(matches!(&p.ops[0], Op::DeleteLink { name, .. } if name == "ethvxlan0"));
    assert!(matches!(&p.ops[6], Op::SetSysctl { value, .. } if value == "0"));
    let _ = d;
    // A link with our name that we never marked is left alone.
    bridge_mut(&mut o).group = 0;
    let p = plan_down(&i, &o, &st);
    assert_eq!(
        p.ops.iter().filter(|x| x.kind() == "delete_link").count(),
        1
    );
    assert_eq!(p.warnings.len(), 1);
}

/// A link overlayd did not create (device group 0), up.
fn foreign_link(index: u32, name: &str, kind: &str, master: Option<u32>) -> Link {
    Link {
        group: 0,
        index,
        name: name.into(),
        kind: Some(kind.into()),
        up: true,
        carrier: true,
        mtu: 1500,
        master,
        mac: vec![2, 9, 9, 9, 9, index as u8],
        alias: None,
        vxlan: None,
        brport: None,
        stp: None,
        mcast_snooping: None,
        link: None,
    }
}

fn route(dst: &str, gw: Option<&str>, oif: u32, metric: u32, proto: u8, table: u32) -> Route {
    Route {
        dst: dst.parse().unwrap(),
        gateway: gw.map(|g| g.parse().unwrap()),
        oif: Some(oif),
        metric,
        protocol: proto,
        table,
        scope: if gw.is_some() { 0 } else { 253 },
        kind: 1,
        prefsrc: None,
    }
}

pub(crate) fn cfg_with(role: Role, extra: &[(&'static str, &str)]) -> Config {
    let base = role_cfg(role);
    let mut o = Overrides::default();
    o.set("role", vec![role.as_str().into()], Source::Flag);
    o.set("underlay", vec!["eth0".into()], Source::Flag);
    o.set("address", vec![base.address.to_string()], Source::Flag);
    if let Some(g) = base.gateway {
        o.set("gateway", vec![g.to_string()], Source::Flag);
    }
    // (a flood mode without a group takes none)
    let groupless = extra
        .iter()
        .any(|(k, v)| *k == "flood" && *v != "multicast");
    if let Some(g) = base.group.filter(|_| !groupless) {
        o.set("group", vec![g.to_string()], Source::Flag);
    }
    for (k, v) in extra {
        o.set(k, vec![v.to_string()], Source::Flag);
    }
    config::build(&FileConfig::default(), &o).unwrap()
}

#[test]
fn dhcp_default_route_is_left_alone_and_fallback_only_without_it() {
    // bare() has the DHCP default (proto 16, metric 100): overlay-sourced adds no main default.
    let (d, o) = setup(Role::Host);
    assert!(!o
        .routes
        .iter()
        .any(|r| r.table == 254 && r.dst.prefix_len() == 0 && r.owned()));
    assert!(plan_apply(&d, &o).unwrap().is_empty());
    // No default route at all: the main-table default via the gateway is installed too.
    let mut none = o.clone();
    none.routes
        .retain(|r| r.dst.prefix_len() != 0 || r.table != 254);
    let p = plan_apply(&d, &none).unwrap();
    assert_eq!(p.ops.len(), 1, "{:?}", p.ops);
    assert!(
        matches!(&p.ops[0], Op::AddRoute { route, replace: false, replaces: None }
            if route.table == 254 && route.dst.prefix_len() == 0 && route.fallback)
    );
    // Our fallback present and the DHCP client adds its route back: ours goes.
    let mut both = none.clone();
    both.routes.push(route(
        "0.0.0.0/0",
        Some("10.101.0.1"),
        10,
        0,
        RTPROT_OVERLAYD,
        254,
    ));
    assert!(plan_apply(&d, &both).unwrap().is_empty());
    both.routes
        .push(route("0.0.0.0/0", Some("10.0.1.1"), 2, 0, 16, 254));
    let p = plan_apply(&d, &both).unwrap();
    assert_eq!(kinds(&p.ops), vec!["route_delete"]);
}

#[test]
fn gateway_mode_all_uses_half_routes_that_beat_any_default() {
    let c = cfg_with(Role::Host, &[("gateway_mode", "all")]);
    let d = desired(&c, &bare()).unwrap();
    let halves: Vec<String> = d
        .routes
        .iter()
        .filter(|r| r.table == 254 && r.gateway.is_some())
        .map(|r| r.dst.to_string())
        .collect();
    assert_eq!(halves, vec!["0.0.0.0/1", "128.0.0.0/1"]);
    let o = converged(&d);
    assert!(plan_apply(&d, &o).unwrap().is_empty());
    // A renewal re-adding the DHCP default (any metric) changes nothing.
    let mut renewed = o.clone();
    renewed
        .routes
        .push(route("0.0.0.0/0", Some("10.0.1.1"), 2, 0, 16, 254));
    assert!(plan_apply(&d, &renewed).unwrap().is_empty());
    // Back to overlay-sourced: the halves are removed.
    let d2 = desired(&role_cfg(Role::Host), &bare()).unwrap();
    let p = plan_apply(&d2, &o).unwrap();
    assert_eq!(kinds(&p.ops), vec!["route_delete", "route_delete"]);
}

#[test]
fn foreign_route_with_our_key_is_kept_when_equivalent_and_replaced_otherwise() {
    let (d, mut o) = setup(Role::Host);
    // The instance already routes IMDS via eth0 (as ec2-net-utils does): kept, not ours.
    o.routes
        .retain(|r| !(r.owned() && r.dst.to_string() == "169.254.169.254/32"));
    o.routes
        .push(route("169.254.169.254/32", None, 2, 0, 3, 254));
    assert!(plan_apply(&d, &o).unwrap().is_empty());
    // A foreign route sends it into cloud0 instead: replaced in one step, recorded.
    o.links.push(foreign_link(50, "cloud0", "bridge", None));
    o.routes
        .retain(|r| r.dst.to_string() != "169.254.169.254/32");
    o.routes
        .push(route("169.254.169.254/32", None, 50, 0, 4, 254));
    let p = plan_apply(&d, &o).unwrap();
    assert_eq!(p.ops.len(), 1);
    let Op::AddRoute {
        route: r,
        replace: true,
        replaces: Some(old),
    } = &p.ops[0]
    else {
        panic!("{:?}", p.ops)
    };
    assert_eq!(r.dev, "eth0");
    assert_eq!(old.dev, "cloud0");
    // down puts it back.
    let mut st = State::default();
    st.replaced_routes.push(old.clone());
    let mut after = o.clone();
    after
        .routes
        .retain(|x| x.dst.to_string() != "169.254.169.254/32");
    after.routes.push(route(
        "169.254.169.254/32",
        None,
        2,
        0,
        RTPROT_OVERLAYD,
        254,
    ));
    let i = DownInput {
        bridge: "cloudbr0",
        vtep: "ethvxlan0",
        dummy: "ethdummy0",
        hosts_file: "/h",
        resolv_conf: "/r",
    };
    let p = plan_down(&i, &after, &st);
    assert!(p
        .ops
        .iter()
        .any(|x| matches!(x, Op::RestoreRoute { route } if route == old)));
    assert!(!p.ops.iter().any(
        |x| matches!(x, Op::DelRoute { route, .. } if route.dst.to_string() == "169.254.169.254/32")
    ));
}

#[test]
fn cloudstack_devices_and_routes_never_make_a_plan() {
    let ops = drift(Role::Host, |o| {
        for (i, name, kind, master) in [
            (60, "cloud0", "bridge", None),
            (61, "vxlan1", "vxlan", Some(62)),
            (62, "brvx-1", "bridge", None),
            (63, "brvlan10", "bridge", None),
            (64, "vnet0", "tun", Some(62)),
            (65, "breth0-10", "bridge", None),
        ] {
            o.links.push(foreign_link(i, name, kind, master));
        }
        o.addrs.push(Addr {
            index: 60,
            addr: "169.254.0.1/16".parse().unwrap(),
        });
        o.routes.push(route("169.254.0.0/16", None, 60, 0, 2, 254));
        for n in 1..=25 {
            o.routes
                .push(route(&format!("239.0.0.{n}/32"), None, 10, 0, 3, 254));
        }
    });
    assert!(ops.is_empty(), "{ops:?}");
}

#[test]
fn igmp_max_memberships_is_raised_never_lowered() {
    let (d, mut o) = setup(Role::Host);
    let key = crate::desired::IGMP_MAX_MEMBERSHIPS;
    o.sysctls.insert(key.into(), Some("20".into()));
    let p = plan_apply(&d, &o).unwrap();
    assert_eq!(
        p.ops,
        vec![Op::SetSysctl {
            key: key.into(),
            value: "1024".into(),
            from: Some("20".into()),
            record: true
        }]
    );
    o.sysctls.insert(key.into(), Some("4096".into()));
    assert!(plan_apply(&d, &o).unwrap().is_empty());
    // Not on the router or management (no guests there).
    for r in [Role::Router, Role::Management] {
        let d = desired(&role_cfg(r), &bare()).unwrap();
        assert!(!d.sysctls.iter().any(|s| s.key == key), "{r}");
    }
    let c = cfg_with(Role::Host, &[("igmp_max_memberships", "0")]);
    let d = desired(&c, &bare()).unwrap();
    assert!(!d.sysctls.iter().any(|s| s.key == key));
}

#[test]
fn link_local_routes_configurable_and_guest_mtu() {
    let c = cfg_with(Role::Router, &[("link_local_routes", "none")]);
    let d = desired(&c, &bare()).unwrap();
    assert!(d.routes.is_empty());
    let c = cfg_with(
        Role::Router,
        &[("link_local_routes", "169.254.169.254,169.254.170.2")],
    );
    let d = desired(&c, &bare()).unwrap();
    assert_eq!(d.routes.len(), 2);
    assert!(d
        .routes
        .iter()
        .all(|r| r.dev == "eth0" && r.gateway.is_none()));
    let h = desired(&role_cfg(Role::Host), &bare()).unwrap();
    assert_eq!(crate::desired::guest_mtu(&h), Some(8400));
    let mut o = bare();
    o.links[1].mtu = 1500;
    let h = desired(&role_cfg(Role::Host), &o).unwrap();
    assert_eq!(crate::desired::guest_mtu(&h), Some(1400));
    assert_eq!(
        crate::desired::guest_mtu(&desired(&role_cfg(Role::Router), &bare()).unwrap()),
        None
    );
}

#[test]
fn mac_round_trips_as_text() {
    let m: Mac = "02:0f:0a:65:00:0a".parse().unwrap();
    assert_eq!(m.0, [2, 15, 10, 101, 0, 10]);
    assert_eq!(serde_json::to_string(&m).unwrap(), "\"02:0f:0a:65:00:0a\"");
    assert!("02:0f:0a".parse::<Mac>().is_err());
    assert!("zz:0f:0a:65:00:0a".parse::<Mac>().is_err());
}

// --- unicast flooding: the VTEP's all-zeros FDB entries

fn unicast_host(peers: &str) -> Config {
    cfg(&[
        ("role", "host"),
        ("underlay", "eth0"),
        ("address", "10.101.0.10/16"),
        ("gateway", "10.101.0.1"),
        ("flood", "unicast"),
        ("peers", peers),
    ])
}

fn ip(s: &str) -> std::net::Ipv4Addr {
    s.parse().unwrap()
}

#[test]
fn unicast_host_from_empty_gets_a_groupless_vtep_then_its_flood_list() {
    // 10.0.1.5 is this node (eth0's address): never its own peer.
    let c = unicast_host("10.0.1.6,10.0.1.7,10.0.1.5");
    let o = bare();
    let d = desired(&c, &o).unwrap();
    assert_eq!(d.vtep.as_ref().unwrap().group, None);
    assert!(
        !d.sysctls.iter().any(|s| s.key == igmp_key("eth0")),
        "no IGMP without multicast"
    );
    let p = plan_apply(&d, &o).unwrap();
    let vtep_at = p
        .ops
        .iter()
        .position(|o| matches!(o, Op::CreateVtep { group: None, .. }))
        .unwrap();
    let fl_at = p
        .ops
        .iter()
        .position(|o| matches!(o, Op::SetFloodList { .. }))
        .unwrap();
    assert!(vtep_at < fl_at);
    match &p.ops[fl_at] {
        Op::SetFloodList { add, remove, .. } => {
            assert_eq!(add, &vec![ip("10.0.1.6"), ip("10.0.1.7")]);
            assert!(remove.is_empty());
        }
        _ => unreachable!(),
    }
    assert!(p.ops[fl_at]
        .to_string()
        .contains("add 2 peer(s) [10.0.1.6, 10.0.1.7]"));
}

#[test]
fn flood_list_drift_adds_missing_removes_only_our_departed_entries() {
    let c = unicast_host("10.0.1.6,10.0.1.7");
    let d = desired(&c, &bare()).unwrap();
    let mut o = converged(&d);
    // present: .6 (wanted), .8 (ours, departed), .9 (someone else's)
    o.flood_list = [ip("10.0.1.6"), ip("10.0.1.8"), ip("10.0.1.9")].into();
    o.flood_list_owned = [ip("10.0.1.6"), ip("10.0.1.8")].into();
    let p = plan_apply(&d, &o).unwrap();
    assert_eq!(
        p.ops,
        vec![Op::SetFloodList {
            vtep: "ethvxlan0".into(),
            add: vec![ip("10.0.1.7")],
            remove: vec![ip("10.0.1.8")],
        }]
    );
    // converged: nothing to do
    o.flood_list = [ip("10.0.1.6"), ip("10.0.1.7"), ip("10.0.1.9")].into();
    assert!(plan_apply(&d, &o).unwrap().is_empty());
}

#[test]
fn unknown_ec2_peers_leave_the_flood_list_alone_and_multicast_to_unicast_recreates() {
    let mut c = unicast_host("10.0.1.6");
    c.peers.clear();
    c.peer_discovery = Some(crate::config::PeerDiscovery::Ec2);
    let d = crate::desired::desired_with(&c, &bare(), None).unwrap();
    let mut o = converged(&d);
    o.flood_list = [ip("10.0.1.6")].into();
    o.flood_list_owned = o.flood_list.clone();
    assert!(
        plan_apply(&d, &o).unwrap().is_empty(),
        "an unknown peer set never flushes"
    );
    let found: std::collections::BTreeSet<_> = [ip("10.0.1.7")].into();
    let d2 = crate::desired::desired_with(&c, &bare(), Some(&found)).unwrap();
    assert_eq!(plan_apply(&d2, &o).unwrap().ops.len(), 1);
    // a multicast VTEP is re-created without a group, and the flood list is then filled
    let (_, om) = setup(Role::Host);
    let du = desired(&unicast_host("10.0.1.6"), &bare()).unwrap();
    let p = plan_apply(&du, &om).unwrap();
    assert!(p
        .ops
        .iter()
        .any(|o| matches!(o, Op::DeleteLink { name, .. } if name == "ethvxlan0")));
    assert!(p
        .ops
        .iter()
        .any(|o| matches!(o, Op::SetFloodList { add, .. } if add.len() == 1)));
}

#[test]
fn vtep_tx_checksum_off_is_planned_until_observed_off_and_after_every_re_creation() {
    let c = cfg_with(Role::Host, &[("vtep_tx_checksum", "off")]);
    let d = desired(&c, &bare()).unwrap();
    assert!(d.vtep.as_ref().unwrap().tx_checksum_off);
    let want = Op::SetTxChecksumOff {
        name: "ethvxlan0".into(),
    };
    // a fresh node: created, then switched off
    let p = plan_apply(&d, &bare()).unwrap();
    let at = |op: &Op| p.ops.iter().position(|x| x == op);
    assert!(at(&want).is_some(), "{:?}", p.ops);
    assert!(
        p.ops
            .iter()
            .position(|x| matches!(x, Op::CreateVtep { .. }))
            < at(&want)
    );
    // converged but on (a re-created VTEP, someone's ethtool): switched off; off: nothing
    let mut o = converged(&d);
    o.vtep_tx_checksum = Some(true);
    assert_eq!(plan_apply(&d, &o).unwrap().ops, vec![want.clone()]);
    o.vtep_tx_checksum = Some(false);
    assert!(plan_apply(&d, &o).unwrap().is_empty());
    // keep (the default): never touched
    let d = desired(&role_cfg(Role::Host), &bare()).unwrap();
    let mut o = converged(&d);
    o.vtep_tx_checksum = Some(true);
    assert!(plan_apply(&d, &o).unwrap().is_empty());
}

// --- flood = evpn: the VTEP FRR drives

fn evpn_host() -> Config {
    cfg(&[
        ("role", "host"),
        ("underlay", "eth0"),
        ("address", "10.101.0.10/16"),
        ("gateway", "10.101.0.1"),
        ("flood", "evpn"),
        ("evpn_reflectors", "10.0.1.4,10.0.1.5"),
        ("evpn_frr", "spawn"),
    ])
}

#[test]
fn evpn_host_gets_a_nolearning_vtep_on_its_underlay_address_with_arp_suppressed() {
    let o = bare();
    let d = desired(&evpn_host(), &o).unwrap();
    let v = d.vtep.as_ref().unwrap();
    assert_eq!(v.group, None);
    assert_eq!(v.local, Some(ip("10.0.1.5")), "eth0's address");
    assert!(!v.learning && v.neigh_suppress);
    assert!(d.flood_list.is_none(), "zebra owns the flood list");
    assert!(
        !d.sysctls.iter().any(|s| s.key == igmp_key("eth0")),
        "no IGMP without multicast"
    );
    let e = d.evpn.as_ref().unwrap();
    // this node's own address is no peer of its own
    assert_eq!(e.reflectors, vec![ip("10.0.1.4")]);
    assert_eq!(
        (e.local, e.router_id, e.vni),
        (ip("10.0.1.5"), ip("10.0.1.5"), 100)
    );
    let p = plan_apply(&d, &o).unwrap();
    let at = p
        .ops
        .iter()
        .position(|x| {
            matches!(
                x,
                Op::CreateVtep {
                    group: None,
                    local: Some(_),
                    learning: false,
                    ..
                }
            )
        })
        .unwrap();
    let port = p
        .ops
        .iter()
        .position(|x| {
            matches!(
                x,
                Op::SetBridgePort {
                    neigh_suppress: true,
                    learning: false,
                    ..
                }
            )
        })
        .unwrap();
    assert!(at < port, "the port's flags after it exists");
    assert!(!p.ops.iter().any(|x| matches!(x, Op::SetFloodList { .. })));
    // converged: nothing to do, whatever zebra has put in the FDB
    let mut c = converged(&d);
    c.flood_list = [ip("10.0.1.4"), ip("10.0.1.9")].into();
    assert!(plan_apply(&d, &c).unwrap().ops.is_empty());
}

#[test]
fn evpn_drift_port_flags_are_repaired_and_a_learning_vtep_is_recreated() {
    let d = desired(&evpn_host(), &bare()).unwrap();
    let mut o = converged(&d);
    vtep_mut(&mut o).brport = Some(BrPortInfo {
        learning: Some(true),
        neigh_suppress: Some(false),
    });
    assert_eq!(kinds(&plan_apply(&d, &o).unwrap().ops), vec!["bridge_port"]);
    let mut o = converged(&d);
    vtep_mut(&mut o).vxlan.as_mut().unwrap().learning = Some(true);
    let k = kinds(&plan_apply(&d, &o).unwrap().ops);
    assert!(k.starts_with(&["delete_link", "create_vtep"]), "{k:?}");
    let mut o = converged(&d);
    vtep_mut(&mut o).vxlan.as_mut().unwrap().local = Some(ip("10.0.1.99"));
    let k = kinds(&plan_apply(&d, &o).unwrap().ops);
    assert!(k.contains(&"create_vtep"), "{k:?}");
    // a multicast VTEP keeps learning on and its port alone
    let (dm, om) = setup(Role::Host);
    assert!(dm.vtep.as_ref().unwrap().learning);
    assert!(plan_apply(&dm, &om).unwrap().ops.is_empty());
}
