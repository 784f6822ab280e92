use super::checks::*;
use super::*;

fn cfg(pairs: &[(&'static str, &str)]) -> Result<Config, ConfigError> {
    let mut o = Overrides::default();
    for (k, v) in pairs {
        o.set(k, vec![v.to_string()], Source::Flag);
    }
    build(&FileConfig::default(), &o)
}

fn host() -> Vec<(&'static str, &'static str)> {
    vec![
        ("role", "host"),
        ("address", "10.101.0.10/16"),
        ("gateway", "10.101.0.1"),
        ("group", "239.255.0.1"),
        ("underlay", "eth0"),
    ]
}

fn with(
    mut base: Vec<(&'static str, &'static str)>,
    k: &'static str,
    v: &'static str,
) -> Vec<(&'static str, &'static str)> {
    base.retain(|(x, _)| *x != k);
    base.push((k, v));
    base
}

fn bad(pairs: Vec<(&'static str, &'static str)>, key: &str) {
    match cfg(&pairs) {
        Ok(c) => panic!("expected error on {key}, got {c:?}"),
        Err(e) => assert_eq!(e.key, key, "{e}"),
    }
}

#[test]
fn every_key_is_a_flag_an_env_var_and_a_file_key() {
    use clap::Args;
    let cmd = Settings::augment_args(clap::Command::new("t"));
    assert_eq!(keys().len(), 45);
    for k in keys() {
        let a = cmd.get_arguments().find(|a| a.get_id() == *k).unwrap();
        let env = a.get_env().unwrap().to_string_lossy().into_owned();
        assert_eq!(env, format!("OVERLAYD_{}", k.to_uppercase()), "{k}");
        assert!(a.get_long().is_some(), "{k} has no flag");
        // accepted in the file
        let text = format!("{k} = \"x\"\n");
        assert!(parse_file(&text, "/f").is_ok(), "{k} refused in the file");
    }
    let e = parse_file("vni = 1\nfrobnicate = 2\n", "/f").unwrap_err();
    assert_eq!(e.key, "frobnicate");
    assert!(e.reason.contains("unknown key in /f"), "{e}");
    let e = parse_file("vni = { a = 1 }\n", "/f").unwrap_err();
    assert_eq!(e.key, "vni");
    let e = parse_file("vni = \n", "/f").unwrap_err();
    assert_eq!(e.key, "config");
    // TOML types become text; the key's check types them
    let f = parse_file("vni = 7\nnat = true\ndns = [\"10.0.0.2\"]\n", "/f").unwrap();
    let mut o = Overrides::default();
    o.set("role", vec!["router".into()], Source::Flag);
    o.set("address", vec!["10.101.0.1/16".into()], Source::Flag);
    o.set("group", vec!["239.255.0.1".into()], Source::Flag);
    let c = build(&f, &o).unwrap();
    assert_eq!((c.vni, c.nat, c.dns.len()), (7, true, 1));
}

#[test]
fn good_host() {
    let c = cfg(&host()).unwrap();
    assert_eq!(c.role, Role::Host);
    assert_eq!(c.vni, 100);
    assert_eq!(c.port, 4789);
    assert_eq!(c.bridge, "cloudbr0");
    assert_eq!(c.vtep, "ethvxlan0");
    assert_eq!(c.mtu, Mtu::Auto);
    assert!(c.warnings.is_empty());
}

#[test]
fn group_must_be_multicast() {
    bad(with(host(), "group", "10.0.0.1"), "group");
    bad(with(host(), "group", "not-an-ip"), "group");
    bad(with(host(), "group", "224.0.0.5"), "group");
}

#[test]
fn vni_range() {
    bad(with(host(), "vni", "0"), "vni");
    bad(with(host(), "vni", "16777216"), "vni");
    bad(with(host(), "vni", "-1"), "vni");
    assert_eq!(cfg(&with(host(), "vni", "16777215")).unwrap().vni, 16777215);
}

#[test]
fn port_range() {
    bad(with(host(), "port", "0"), "port");
    bad(with(host(), "port", "65536"), "port");
}

#[test]
fn address_checks() {
    bad(with(host(), "address", "10.101.0.10"), "address");
    bad(with(host(), "address", "nonsense"), "address");
    bad(with(host(), "address", "10.101.0.0/16"), "address");
    bad(with(host(), "address", "10.101.255.255/16"), "address");
    bad(with(host(), "address", "10.101.0.1/32"), "address");
}

#[test]
fn gateway_checks() {
    bad(with(host(), "gateway", "10.102.0.1"), "gateway");
    bad(with(host(), "gateway", "10.101.0.10"), "gateway");
    let mut h = host();
    h.retain(|(k, _)| *k != "gateway");
    bad(h.clone(), "gateway");
    bad(with(h.clone(), "role", "management"), "gateway");
    // refused for router / standalone
    bad(with(host(), "role", "router"), "gateway");
    bad(with(host(), "role", "standalone"), "gateway");
    // fine without
    assert!(cfg(&with(h.clone(), "role", "router")).is_ok());
    assert!(cfg(&with(h, "role", "standalone")).is_ok());
}

#[test]
fn unknown_role() {
    bad(with(host(), "role", "kvm"), "role");
}

#[test]
fn interface_names() {
    bad(with(host(), "bridge", "a-very-long-bridge0"), "bridge");
    bad(with(host(), "vtep", "eth/vx"), "vtep");
    bad(with(host(), "underlay", "eth 0"), "underlay");
    bad(with(host(), "underlay", "eth0123456789abcd"), "underlay");
    // CloudStack would not recognise this VTEP name
    bad(with(host(), "vtep", "vxlan100"), "vtep");
    assert!(cfg(&with(host(), "vtep", "ens5vx")).is_ok());
    assert!(cloudstack_recognises("p1p1"));
    assert!(!cloudstack_recognises("pxp1"));
}

#[test]
fn mtu_range() {
    bad(with(host(), "mtu", "67"), "mtu");
    bad(with(host(), "mtu", "8951"), "mtu");
    bad(with(host(), "mtu", "big"), "mtu");
    assert_eq!(
        cfg(&with(host(), "mtu", "1400")).unwrap().mtu,
        Mtu::Fixed(1400)
    );
    let c = cfg(&with(host(), "mtu", "8900")).unwrap();
    assert_eq!(c.warnings.len(), 1);
}

#[test]
fn vtep_tx_checksum_is_keep_or_off() {
    assert!(!cfg(&host()).unwrap().vtep_tx_checksum_off, "default: keep");
    assert!(
        cfg(&with(host(), "vtep_tx_checksum", "off"))
            .unwrap()
            .vtep_tx_checksum_off
    );
    assert!(
        !cfg(&with(host(), "vtep_tx_checksum", "keep"))
            .unwrap()
            .vtep_tx_checksum_off
    );
    bad(with(host(), "vtep_tx_checksum", "on"), "vtep_tx_checksum");
}

#[test]
fn nat_only_on_forwarders() {
    bad(with(host(), "nat", "true"), "nat");
    bad(
        with(host(), "nat_exceptions", "10.0.0.0/8"),
        "nat_exceptions",
    );
    let mut r = host();
    r.retain(|(k, _)| *k != "gateway");
    let r = with(with(r, "role", "router"), "nat", "true");
    let c = cfg(&with(
        r.clone(),
        "nat_exceptions",
        "192.168.0.0/16,10.0.0.5",
    ))
    .unwrap();
    assert!(c.nat);
    assert_eq!(c.nat_exceptions.len(), 2);
    bad(with(r, "nat_exceptions", "300.0.0.0/8"), "nat_exceptions");
}

#[test]
fn group_required_except_standalone() {
    let mut h = host();
    h.retain(|(k, _)| *k != "group");
    bad(h.clone(), "group");
    let mut s = h;
    s.retain(|(k, _)| *k != "gateway");
    assert!(cfg(&with(s, "role", "standalone")).is_ok());
}

#[test]
fn unknown_toml_key() {
    let e = parse_file("role = \"host\"\nbrigde = \"cloudbr0\"\n", "x.toml").unwrap_err();
    assert_eq!(e.key, "brigde");
    assert!(e.reason.contains("unknown key"));
}

#[test]
fn precedence_flag_over_env_over_file() {
    let f = parse_file(
        "role = \"host\"\naddress = \"10.101.0.10/16\"\ngateway = \"10.101.0.1\"\ngroup = \"239.255.0.1\"\nvni = 7\n",
        "x",
    )
    .unwrap();
    let mut o = Overrides::default();
    assert_eq!(build(&f, &o).unwrap().vni, 7);
    o.set("vni", vec!["8".into()], Source::Env);
    assert_eq!(build(&f, &o).unwrap().vni, 8);
    o.set("vni", vec!["9".into()], Source::Flag);
    assert_eq!(build(&f, &o).unwrap().vni, 9);
    o.set("vni", vec!["0".into()], Source::Env);
    let e = build(&f, &o).unwrap_err();
    assert_eq!(e.source, Some(Source::Env));
}

#[test]
fn error_names_key_and_value() {
    let e = cfg(&with(host(), "group", "10.1.2.3")).unwrap_err();
    let s = e.to_string();
    assert!(s.contains("group") && s.contains("10.1.2.3"), "{s}");
}

// --- the instance layers (IMDS facts, tags, auto) and unicast flooding

fn facts(tags: &[(&str, &str)]) -> crate::instance::InstanceFacts {
    crate::instance::InstanceFacts {
        instance_id: "i-0abc".into(),
        region: "eu-west-1".into(),
        availability_zone: "eu-west-1a".into(),
        mac: "02:00:0a:00:01:39".into(),
        local_ipv4: "10.0.1.57".parse().unwrap(),
        subnet: "10.0.1.0/24".parse().unwrap(),
        vpc_id: "vpc-1".into(),
        vpc_cidrs: vec!["10.0.0.0/16".parse().unwrap()],
        tags: tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        tags_from: "IMDS tags/instance".into(),
    }
}

fn with_instance(
    file: &str,
    pairs: &[(&'static str, &str)],
    f: Result<crate::instance::InstanceFacts, String>,
) -> Result<Config, ConfigError> {
    let mut o = Overrides::default();
    for (k, v) in pairs {
        o.set(k, vec![v.to_string()], Source::Flag);
    }
    let file = parse_file(file, "/f").unwrap();
    let asked = std::cell::Cell::new(0);
    let r = build_with(&file, &o, &|| {
        asked.set(asked.get() + 1);
        f.clone()
    });
    assert!(asked.get() <= 1, "IMDS asked {} times", asked.get());
    r
}

#[test]
fn a_node_configured_only_by_tags_converges_on_auto_values() {
    let tags = [
        ("overlay:cluster", "prod"),
        ("overlay:role", "host"),
        ("overlay:address", "auto"),
        ("overlay:gateway", "auto"),
        ("overlay:flood", "unicast"),
    ];
    let c = with_instance("", &[("underlay", "eth0")], Ok(facts(&tags))).unwrap();
    assert_eq!(c.role, Role::Host);
    assert_eq!(c.address.to_string(), "10.101.0.57/16");
    assert_eq!(c.gateway.unwrap().to_string(), "10.101.0.1");
    assert_eq!(c.flood, Flood::Unicast);
    assert_eq!(c.group, None);
    assert_eq!(c.peer_discovery, Some(PeerDiscovery::Ec2));
    assert_eq!(c.cluster.as_deref(), Some("prod"));
    assert_eq!(c.instance.as_ref().unwrap().vpc_id, "vpc-1");
    let x = explain(&c);
    assert!(
        x.contains("instance tag: overlay:role via IMDS tags/instance"),
        "{x}"
    );
    assert!(
        x.contains("instance metadata: auto from instance tag: 10.0.1.57 in subnet 10.0.1.0/24"),
        "{x}"
    );
    assert!(
        x.contains("underlay") && x.contains("(command line)"),
        "{x}"
    );
    assert!(x.contains("vni") && x.contains("(default)"), "{x}");
}

#[test]
fn a_complete_configuration_never_asks_the_instance() {
    let file = "role = \"host\"\naddress = \"10.101.0.10/16\"\ngateway = \"auto\"\ngroup = \"239.255.0.1\"\n";
    let c = with_instance(file, &[], Err("must not be asked".into())).unwrap();
    assert_eq!(c.gateway.unwrap().to_string(), "10.101.0.1");
    assert!(c.instance.is_none());
    // the router's address = auto needs nothing from the instance either
    let c = with_instance(
        "role = \"router\"\naddress = \"auto\"\ngroup = \"239.255.0.1\"\n",
        &[],
        Err("must not be asked".into()),
    )
    .unwrap();
    assert_eq!(c.address.to_string(), "10.101.0.1/16");
}

#[test]
fn imds_unreachable_names_what_is_missing() {
    let down = Err("IMDS at 169.254.169.254:80 unreachable: no answer within 1 s".to_string());
    let e = with_instance("role = \"host\"\naddress = \"auto\"\n", &[], down.clone()).unwrap_err();
    assert_eq!((e.key.as_str(), e.value.as_str()), ("address", "auto"));
    assert!(e.reason.contains("unreachable"), "{e}");
    let e = with_instance("", &[], down.clone()).unwrap_err();
    assert_eq!(e.key, "role");
    assert!(e.reason.contains("could not be asked: IMDS"), "{e}");
    let e = with_instance("role = \"auto\"\n", &[], Ok(facts(&[]))).unwrap_err();
    assert_eq!(e.key, "role");
    assert!(e.reason.contains("overlay:role tag"), "{e}");
}

#[test]
fn a_host_without_any_gateway_stays_bad_input() {
    let tags = [("overlay:role", "host"), ("overlay:address", "auto")];
    let e = with_instance("group = \"239.255.0.1\"\n", &[], Ok(facts(&tags))).unwrap_err();
    assert_eq!(e.key, "gateway");
}

#[test]
fn the_file_beats_tags_and_flags_beat_the_file() {
    // underlay = auto makes the instance be asked, so the tags are a layer here
    let tags = [
        ("overlay:role", "host"),
        ("overlay:group", "239.255.0.9"),
        ("overlay:cluster", "prod"),
    ];
    let c = with_instance(
        "role = \"router\"\naddress = \"auto\"\nunderlay = \"auto\"\n",
        &[("group", "239.255.0.1")],
        Ok(facts(&tags)),
    )
    .unwrap();
    assert!(c.instance.is_some(), "the instance was asked");
    assert_eq!(c.role, Role::Router);
    assert_eq!(c.group.unwrap().to_string(), "239.255.0.1");
    assert_eq!(c.origins["role"], "config file");
    assert_eq!(c.origins["group"], "command line");
    // a tag fills what nothing else sets
    assert_eq!(c.cluster.as_deref(), Some("prod"));
    assert!(c.origins["cluster"].starts_with("instance tag"));
    assert_eq!(c.underlay, None);
    assert_eq!(c.underlay_mac.as_deref(), Some("02:00:0a:00:01:39"));
}

#[test]
fn unicast_flooding_keys() {
    let base = || {
        let mut h = host();
        h.retain(|(k, _)| *k != "group");
        h
    };
    let c = cfg(&[
        base(),
        vec![("flood", "unicast"), ("peers", "10.0.0.11,10.0.0.12")],
    ]
    .concat())
    .unwrap();
    assert_eq!(c.peer_discovery, Some(PeerDiscovery::Static));
    assert_eq!(c.peers.len(), 2);
    bad(
        [
            base(),
            vec![
                ("flood", "unicast"),
                ("group", "239.255.0.1"),
                ("peers", "10.0.0.11"),
            ],
        ]
        .concat(),
        "group",
    );
    bad([base(), vec![("flood", "broadcast")]].concat(), "flood");
    bad([host(), vec![("peers", "10.0.0.11")]].concat(), "peers");
    bad(
        [base(), vec![("flood", "unicast"), ("peers", "239.1.1.1")]].concat(),
        "peers",
    );
    bad(
        [
            base(),
            vec![("flood", "unicast"), ("peer_discovery", "ec2")],
        ]
        .concat(),
        "cluster",
    );
    bad(
        [
            base(),
            vec![("flood", "unicast"), ("peer_discovery", "static")],
        ]
        .concat(),
        "peers",
    );
    bad(
        [
            base(),
            vec![
                ("flood", "unicast"),
                ("peers", "10.0.0.11"),
                ("peer_interval", "0"),
            ],
        ]
        .concat(),
        "peer_interval",
    );
    bad(
        [
            base(),
            vec![("overlay_cidr", "10.101.0.1/16"), ("gateway", "auto")],
        ]
        .concat(),
        "overlay_cidr",
    );
}

#[test]
fn router_ha_needs_a_peer_and_three_distinct_overlay_addresses() {
    let router = || {
        vec![
            ("role", "router"),
            ("address", "10.101.0.3/16"),
            ("group", "239.255.0.1"),
            ("underlay", "eth0"),
        ]
    };
    assert_eq!(cfg(&router()).unwrap().ha, None, "no ha_peer: no HA");
    let c = cfg(&with(router(), "ha_peer", "10.101.0.4")).unwrap();
    let ha = c.ha.unwrap();
    assert_eq!(
        ha.vip.to_string(),
        "10.101.0.1",
        "default VIP: overlay_cidr's .1"
    );
    assert_eq!((ha.priority, ha.advert_ms, ha.preempt), (100, 200, false));
    // wrong role, settings without a peer, bad addresses and values: each names its key
    bad(with(host(), "ha_peer", "10.101.0.4"), "ha_peer");
    bad(with(router(), "ha_priority", "150"), "ha_priority");
    let r = with(router(), "ha_peer", "10.101.0.4");
    bad(with(r.clone(), "ha_peer", "10.102.0.4"), "ha_peer");
    bad(with(r.clone(), "ha_peer", "10.101.0.3"), "ha_peer");
    bad(with(r.clone(), "ha_vip", "10.101.0.4"), "ha_vip");
    bad(with(r.clone(), "ha_vip", "10.101.0.3"), "ha_vip");
    bad(with(r.clone(), "ha_priority", "255"), "ha_priority");
    bad(
        with(r.clone(), "ha_advert_interval_ms", "205"),
        "ha_advert_interval_ms",
    );
    bad(
        with(r.clone(), "ha_advert_interval_ms", "0"),
        "ha_advert_interval_ms",
    );
    bad(with(r.clone(), "ha_preempt", "maybe"), "ha_preempt");
    // the router on the default VIP's address cannot also hold it
    bad(
        with(with(r, "address", "10.101.0.1/16"), "ha_peer", "10.101.0.4"),
        "ha_vip",
    );
}

#[test]
fn evpn_keys() {
    let base = || {
        let mut h = host();
        h.retain(|(k, _)| *k != "group");
        h
    };
    let c = cfg(&[
        base(),
        vec![
            ("flood", "evpn"),
            ("evpn_reflectors", "10.0.0.4,10.0.4.4,10.0.0.4"),
        ],
    ]
    .concat())
    .unwrap();
    let e = c.evpn.as_ref().unwrap();
    assert_eq!(e.asn, 65000);
    assert!(!e.reflector, "a host is a client by default");
    assert_eq!(e.reflectors.len(), 2, "duplicates dropped");
    assert_eq!(e.hold_secs, 9);
    assert_eq!(e.frr, FrrMode::Systemd);
    assert_eq!(e.frr_dir, PathBuf::from("/etc/frr"));
    // the router is a reflector by default and needs no list
    let r = vec![
        ("role", "router"),
        ("address", "10.101.0.1/16"),
        ("underlay", "eth0"),
    ];
    let c = cfg(&[
        r.clone(),
        vec![("flood", "evpn"), ("evpn_listen", "10.0.0.0/16")],
    ]
    .concat())
    .unwrap();
    let e = c.evpn.unwrap();
    assert!(e.reflector);
    assert_eq!(e.listen, vec!["10.0.0.0/16".parse::<Ipv4Net>().unwrap()]);
    let ok = cfg(&[
        base(),
        vec![
            ("flood", "evpn"),
            ("evpn_reflectors", "10.0.0.4"),
            ("evpn_asn", "4200000001"),
            ("evpn_frr", "spawn"),
            ("evpn_hold_time", "30"),
        ],
    ]
    .concat())
    .unwrap();
    let e = ok.evpn.unwrap();
    assert_eq!(
        (e.asn, e.frr, e.hold_secs),
        (4_200_000_001, FrrMode::Spawn, 30)
    );
    assert_eq!(e.frr_dir, PathBuf::from("/run/overlayd/frr"));

    let ev = |extra: Vec<(&'static str, &'static str)>| {
        [base(), vec![("flood", "evpn")], extra].concat()
    };
    // the reflectors found by their tags: the default with a cluster and no list
    let d = cfg(&ev(vec![("cluster", "prod")])).unwrap();
    assert_eq!(d.peer_discovery, Some(PeerDiscovery::Ec2));
    assert!(d.evpn.unwrap().reflectors.is_empty());
    let d = cfg(&ev(vec![("cluster", "prod"), ("peer_interval", "5")])).unwrap();
    assert_eq!(d.peer_interval_secs, 5);
    let d = cfg(&ev(vec![
        ("cluster", "prod"),
        ("evpn_reflectors", "10.0.0.4"),
    ]))
    .unwrap();
    assert_eq!(d.peer_discovery, None, "listed: nothing to discover");
    bad(
        ev(vec![
            ("cluster", "prod"),
            ("peer_discovery", "ec2"),
            ("evpn_reflectors", "10.0.0.4"),
        ]),
        "evpn_reflectors",
    );
    bad(ev(vec![("peer_discovery", "ec2")]), "cluster");
    bad(
        ev(vec![("cluster", "prod"), ("peer_discovery", "dns")]),
        "peer_discovery",
    );
    bad(
        ev(vec![
            ("evpn_reflectors", "10.0.0.4"),
            ("peer_interval", "5"),
        ]),
        "peer_interval",
    );
    bad(
        ev(vec![
            ("evpn_reflectors", "10.0.0.4"),
            ("peers", "10.0.0.11"),
        ]),
        "peers",
    );
    bad(ev(vec![]), "evpn_reflectors");
    bad(ev(vec![("evpn_reflectors", "nope")]), "evpn_reflectors");
    bad(
        ev(vec![("evpn_reflectors", "224.0.0.5")]),
        "evpn_reflectors",
    );
    bad(
        ev(vec![
            ("evpn_reflectors", "10.0.0.4"),
            ("evpn_asn", "65001000"),
        ]),
        "evpn_asn",
    );
    bad(
        ev(vec![("evpn_reflectors", "10.0.0.4"), ("evpn_asn", "3356")]),
        "evpn_asn",
    );
    bad(
        ev(vec![
            ("evpn_reflectors", "10.0.0.4"),
            ("evpn_hold_time", "2"),
        ]),
        "evpn_hold_time",
    );
    bad(
        ev(vec![
            ("evpn_reflectors", "10.0.0.4"),
            ("evpn_frr", "docker"),
        ]),
        "evpn_frr",
    );
    bad(
        ev(vec![
            ("evpn_reflectors", "10.0.0.4"),
            ("evpn_listen", "10.0.0.0/16"),
        ]),
        "evpn_listen",
    );
    bad(
        ev(vec![
            ("evpn_reflectors", "10.0.0.4"),
            ("evpn_frr_dir", "frr"),
        ]),
        "evpn_frr_dir",
    );
    bad(
        ev(vec![
            ("group", "239.255.0.1"),
            ("evpn_reflectors", "10.0.0.4"),
        ]),
        "group",
    );
    bad(
        ev(vec![
            ("peers", "10.0.0.11"),
            ("evpn_reflectors", "10.0.0.4"),
        ]),
        "peers",
    );
    // evpn keys without flood = evpn: a half-switched configuration
    bad(
        [host(), vec![("evpn_reflectors", "10.0.0.4")]].concat(),
        "evpn_reflectors",
    );
    bad([host(), vec![("evpn_asn", "65000")]].concat(), "evpn_asn");
}
