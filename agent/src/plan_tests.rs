//! Unit tests of desired-state and plan for every role and every drift, without root.

use crate::config::{self, Config, FileConfig, Overrides, Role, Source};
use crate::desired::{desired, disable_ipv6_key, igmp_key, IP_FORWARD};
use crate::files;
use crate::model::*;
use crate::plan::{plan_apply, plan_down, DownInput, Op};
use crate::state::State;
use overlay_router::nat::NatObserved;

fn cfg(pairs: &[(&'static str, &str)]) -> Config {
    let mut o = Overrides::default();
    for (k, v) in pairs {
        o.set(k, vec![v.to_string()], Source::Flag);
    }
    config::build(&FileConfig::default(), &o).unwrap()
}

fn role_cfg(role: Role) -> Config {
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
fn bare() -> Observed {
    Observed {
        links: vec![
            Link {
                group: 0,
                index: 1,
                name: "lo".into(),
                kind: None,
                up: true,
                mtu: 65536,
                master: None,
                mac: vec![0; 6],
                alias: None,
                vxlan: None,
                stp: None,
                link: None,
            },
            Link {
                group: 0,
                index: 2,
                name: "eth0".into(),
                kind: None,
                up: true,
                mtu: 9001,
                master: None,
                mac: vec![2, 0, 0, 0, 0, 5],
                alias: None,
                vxlan: None,
                stp: None,
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
        }],
        sysctls: Default::default(),
        hosts: Some("127.0.0.1 localhost\n".into()),
        resolv: Some("nameserver 10.0.0.2\n".into()),
        nat: Some(NatObserved::Absent),
    }
}

/// The observed state a correct apply leaves behind.
fn converged(d: &Desired) -> Observed {
    let mut o = bare();
    for s in &d.sysctls {
        o.sysctls.insert(s.key.clone(), Some(s.value.clone()));
    }
    o.links.push(Link {
        group: 0,
        index: 10,
        name: d.bridge.name.clone(),
        kind: Some("bridge".into()),
        up: true,
        mtu: d.bridge.mtu,
        master: None,
        mac: d.bridge.mac.to_vec(),
        alias: Some(OWNER_ALIAS.into()),
        vxlan: None,
        stp: Some(0),
        link: None,
    });
    o.addrs.push(Addr {
        index: 10,
        addr: d.bridge.address,
    });
    if let Some(v) = &d.vtep {
        o.links.push(Link {
            group: 0,
            index: 11,
            name: v.name.clone(),
            kind: Some("vxlan".into()),
            up: true,
            mtu: v.mtu,
            master: Some(10),
            mac: vec![2, 1, 1, 1, 1, 1],
            alias: Some(OWNER_ALIAS.into()),
            vxlan: Some(VxlanInfo {
                vni: Some(v.vni),
                port: Some(v.port),
                group: Some(v.group),
                dev: Some(2),
                learning: Some(true),
            }),
            stp: None,
            link: None,
        });
    }
    if let Some(dm) = &d.dummy {
        o.links.push(Link {
            group: 0,
            index: 12,
            name: dm.name.clone(),
            kind: Some("veth".into()),
            up: true,
            mtu: dm.mtu,
            master: Some(10),
            mac: vec![2, 2, 2, 2, 2, 2],
            alias: Some(OWNER_ALIAS.into()),
            vxlan: None,
            stp: None,
            link: Some(13),
        });
        o.links.push(Link {
            group: 0,
            index: 13,
            name: dm.veth_peer.clone(),
            kind: Some("veth".into()),
            up: true,
            mtu: dm.mtu,
            master: None,
            mac: vec![2, 2, 2, 2, 2, 3],
            alias: Some(OWNER_ALIAS.into()),
            vxlan: None,
            stp: None,
            link: Some(12),
        });
    }
    if let Some(r) = &d.default_route {
        o.routes.push(Route {
            dst: "0.0.0.0/0".parse().unwrap(),
            gateway: Some(r.gateway),
            oif: Some(10),
            metric: r.metric,
            protocol: RTPROT_OVERLAYD,
            table: 254,
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
    assert_eq!(
        h.default_route.as_ref().unwrap().gateway.to_string(),
        "10.101.0.1"
    );
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
    assert!(r.default_route.is_none());
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
            "sysctl",
            "create_bridge",
            "sysctl",
            "address",
            "create_vtep",
            "sysctl",
            "route"
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
            k.contains(&"route"),
            matches!(r, Role::Host | Role::Management),
            "{r}"
        );
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
            addr: "10.101.0.10/16".into()
        }]
    );
    let ops = drift(Role::Host, |o| {
        o.routes.retain(|r| r.protocol != RTPROT_OVERLAYD)
    });
    assert_eq!(kinds(&ops), vec!["route"]);
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
        vec!["create_bridge", "sysctl", "address", "master", "route"]
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
            mtu: 8450,
            master: Some(10),
            mac: vec![0xfe, 0, 0, 0, 0, 1],
            alias: None,
            vxlan: None,
            stp: None,
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
        });
    });
    assert!(ops.is_empty(), "{ops:?}");
}

#[test]
fn foreign_link_with_our_name_is_refused() {
    let (d, mut o) = setup(Role::Host);
    let b = bridge_mut(&mut o);
    b.kind = Some("veth".into());
    b.alias = None;
    let e = plan_apply(&d, &o).unwrap_err();
    assert_eq!(e.key, "bridge");
}

#[test]
fn unowned_but_compatible_is_adopted_and_marked() {
    let ops = drift(Role::Host, |o| bridge_mut(o).alias = None);
    assert_eq!(
        ops,
        vec![Op::SetOwner {
            name: "cloudbr0".into()
        }]
    );
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
        mtu: 1500,
        master: None,
        mac: vec![2; 6],
        alias: None,
        vxlan: None,
        stp: None,
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
    assert_eq!(
        k,
        vec!["delete_link", "delete_link", "sysctl", "hosts", "resolv"]
    );
    assert!(matches!(&p.ops[0], Op::DeleteLink { name, .. } if name == "ethvxlan0"));
    assert!(matches!(&p.ops[2], Op::SetSysctl { value, .. } if value == "0"));
    let _ = d;
    // A link with our name that we never marked is left alone.
    bridge_mut(&mut o).alias = None;
    let p = plan_down(&i, &o, &st);
    assert_eq!(
        p.ops.iter().filter(|x| x.kind() == "delete_link").count(),
        1
    );
    assert_eq!(p.warnings.len(), 1);
}
