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
    assert_eq!(keys().len(), 26);
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
