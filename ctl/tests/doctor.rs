//! `overlayctl doctor` against the emulator (moto + our shim): one cluster is bootstrapped once
//! for the whole file, plus a tagged host; the router and the host are members of the group the
//! way nodes become members, by IGMPv2 reports (the shim's `/_shim/igmp`). Every check is ok on
//! it. Each other test induces one fault with the test's own credentials, runs doctor, puts the
//! cluster back, then asserts that doctor named the fault by its id (and, where the fault
//! touches one check only, that every other check stayed ok). Every doctor run is counted at
//! the shim: it makes no mutating call, and each call it makes is in
//! `iam-policy --for bootstrap`.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ec2::types::{
    AttributeBooleanValue, Filter, InstanceType, IpPermission, IpRange, PortRange, RuleAction, Tag,
    UserIdGroupPair,
};
use common::*;
use serde_json::Value;
use tokio::sync::{Mutex, MutexGuard};

const GROUP: &str = "239.1.1.1";

struct Fixture {
    emu: Emulator,
    seed: Seed,
    cfg: String,
    /// A KVM host of the cluster (tagged overlay:cluster=lab1, a group member).
    host: String,
    domain: String,
    attachment: String,
    vtep_sg: String,
    efs_sg: String,
    fs: String,
    subnet_cidr: String,
}

static FIXTURE: Mutex<Option<Fixture>> = Mutex::const_new(None);

fn f(v: &str, values: &[&str]) -> Filter {
    Filter::builder()
        .name(v)
        .set_values(Some(values.iter().map(|s| s.to_string()).collect()))
        .build()
}

async fn eni_of(sdk: &Sdk, instance: &str) -> String {
    let out = sdk
        .ec2
        .describe_instances()
        .instance_ids(instance)
        .send()
        .await
        .unwrap();
    out.reservations()[0].instances()[0].network_interfaces()[0]
        .network_interface_id()
        .unwrap()
        .to_string()
}

async fn tag(sdk: &Sdk, id: &str, tags: &[(&str, &str)]) {
    sdk.ec2
        .create_tags()
        .resources(id)
        .set_tags(Some(
            tags.iter()
                .map(|(k, v)| Tag::builder().key(*k).value(*v).build())
                .collect(),
        ))
        .send()
        .await
        .unwrap();
}

/// A node's IGMPv2 report reaching the transit gateway: its interface becomes a member.
async fn join(emu: &Emulator, sdk: &Sdk, domain: &str, instance: &str) {
    let eni = eni_of(sdk, instance).await;
    let (status, body) = emu.igmp(domain, GROUP, &eni, false);
    assert_eq!(status, 200, "{body}");
}

/// A node's IGMPv2 leave.
async fn leave(emu: &Emulator, sdk: &Sdk, domain: &str, instance: &str) {
    let eni = eni_of(sdk, instance).await;
    let (status, body) = emu.igmp(domain, GROUP, &eni, true);
    assert_eq!(status, 200, "{body}");
}

async fn run_typed(sdk: &Sdk, subnet: &str, t: InstanceType) -> String {
    sdk.ec2
        .run_instances()
        .image_id("ami-12c6146b")
        .instance_type(t)
        .min_count(1)
        .max_count(1)
        .subnet_id(subnet)
        .send()
        .await
        .unwrap()
        .instances()[0]
        .instance_id()
        .unwrap()
        .to_string()
}

async fn terminate(sdk: &Sdk, id: &str) {
    sdk.ec2
        .terminate_instances()
        .instance_ids(id)
        .send()
        .await
        .unwrap();
}

async fn setup(emu: Emulator) -> Fixture {
    let sdk = sdk(&emu).await;
    let seed = seed(&sdk).await;
    let cfg = write_config(&emu, "cluster.toml", &config_text(&seed));
    let r = overlayctl(&emu, &["bootstrap", "--config", &cfg, "-q"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let host = run_instance(&sdk, &seed.subnet).await;
    tag(&sdk, &host, &[(TAG, "lab1"), ("Name", "host1")]).await;
    let domain = tagged_domain(&sdk).await;
    let assoc = sdk
        .ec2
        .get_transit_gateway_multicast_domain_associations()
        .transit_gateway_multicast_domain_id(&domain)
        .send()
        .await
        .unwrap();
    let attachment = assoc.multicast_domain_associations()[0]
        .transit_gateway_attachment_id()
        .unwrap()
        .to_string();
    join(&emu, &sdk, &domain, &seed.router).await;
    join(&emu, &sdk, &domain, &host).await;
    let groups = sdk
        .ec2
        .describe_security_groups()
        .filters(tag_filter())
        .send()
        .await
        .unwrap();
    let sg = |role: &str| {
        groups
            .security_groups()
            .iter()
            .find(|g| g.group_name() == Some(format!("overlay-lab1-{role}").as_str()))
            .unwrap()
            .group_id()
            .unwrap()
            .to_string()
    };
    let fss = sdk.efs.describe_file_systems().send().await.unwrap();
    let fs = fss.file_systems()[0].file_system_id().to_string();
    Fixture {
        vtep_sg: sg("vtep"),
        efs_sg: sg("efs"),
        emu,
        seed,
        cfg,
        host,
        domain,
        attachment,
        fs,
        subnet_cidr: "10.0.1.0/24".into(),
    }
}

/// The bootstrapped cluster, for this test alone (None: emulator dependencies missing outside
/// CI; under CI=true `Emulator::start` fails the test instead).
async fn fixture() -> Option<MutexGuard<'static, Option<Fixture>>> {
    let mut g = FIXTURE.lock().await;
    if g.is_none() {
        let emu = Emulator::start()?;
        *g = Some(setup(emu).await);
    }
    Some(g)
}

struct Doctor {
    code: i32,
    json: Value,
    /// id -> (verdict, summary, evidence joined)
    checks: BTreeMap<String, (String, String, String)>,
    /// Every call doctor made (service, action).
    calls: Vec<(String, String, bool)>,
}

impl Doctor {
    fn verdict(&self, id: &str) -> &str {
        &self
            .checks
            .get(id)
            .unwrap_or_else(|| panic!("no check {id}: {}", self.json))
            .0
    }
    fn summary(&self, id: &str) -> &str {
        &self.checks[id].1
    }
    fn evidence(&self, id: &str) -> &str {
        &self.checks[id].2
    }
    /// `id` has `verdict`; every other check is ok.
    fn only(&self, id: &str, verdict: &str) {
        assert_eq!(self.verdict(id), verdict, "{id}: {}", self.json);
        for (other, (v, s, _)) in &self.checks {
            if other != id {
                assert_eq!(v, "ok", "{other} ({s}) while inducing {id}: {}", self.json);
            }
        }
    }
}

/// `doctor --config CFG -o json`, asserting it made no mutating call.
fn doctor(emu: &Emulator, cfg: &str) -> Doctor {
    emu.reset_calls();
    let r = overlayctl(emu, &["doctor", "--config", cfg, "-o", "json"]);
    let json: Value = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("doctor output is not JSON ({e}): {}", r.all()));
    assert_eq!(json["exit"], r.code, "{}", r.all());
    let calls = emu.calls(true);
    assert!(!calls.is_empty());
    assert_eq!(
        emu.mutating_calls(),
        vec![],
        "doctor made mutating calls: {}",
        r.all()
    );
    let checks = json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let ev: Vec<&str> = c["evidence"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e.as_str().unwrap())
                .collect();
            (
                c["id"].as_str().unwrap().to_string(),
                (
                    c["verdict"].as_str().unwrap().to_string(),
                    c["summary"].as_str().unwrap().to_string(),
                    ev.join("\n"),
                ),
            )
        })
        .collect();
    Doctor {
        code: r.code,
        json,
        checks,
        calls,
    }
}

fn allowed_for_bootstrap(emu: &Emulator) -> BTreeSet<String> {
    let pol = overlayctl(emu, &["iam-policy", "--for", "bootstrap"]);
    assert_eq!(pol.code, 0);
    let v: Value = serde_json::from_str(&pol.stdout).unwrap();
    v["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| {
            s["Action"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_string())
        })
        .collect()
}

#[tokio::test]
async fn clean_cluster_every_check_is_ok_and_doctor_only_reads() {
    let Some(g) = fixture().await else { return };
    let fx = g.as_ref().unwrap();
    let d = doctor(&fx.emu, &fx.cfg);
    assert_eq!(d.code, 0, "{}", d.json);
    let ids: Vec<&str> = d.json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, overlay_ctl::doctor::CHECK_IDS, "every id, in order");
    for c in d.json["checks"].as_array().unwrap() {
        assert_eq!(c["verdict"], "ok", "{c}");
        assert!(c["fix"].is_null(), "{c}");
        assert!(!c["summary"].as_str().unwrap().is_empty());
        assert!(c["evidence"].is_array());
    }
    assert_eq!(d.json["exit"], 0);
    // the evidence shows the values as read
    assert!(d.evidence(TGW_MEMBERS).contains(&fx.host), "{}", d.json);
    assert!(d.evidence(TGW_MEMBERS).contains(&fx.seed.router));
    assert!(
        d.evidence(TGW_MEMBERS).contains(" igmp in "),
        "learned by IGMP: {}",
        d.json
    );
    assert!(d.evidence(TGW_DOMAIN).contains(&fx.domain));
    assert!(d.evidence(TGW_DOMAIN).contains(&fx.attachment));
    assert!(d.evidence(SG_VXLAN).contains(&fx.vtep_sg));
    assert!(
        d.summary(SG_BGP)
            .starts_with("not used (flood = multicast)"),
        "{}",
        d.json
    );
    assert!(d.evidence(EFS_MOUNT).contains(&fx.fs));
    assert!(d.evidence(RDS_PARAMS).contains("max_connections = 350"));
    // every call doctor makes is a read allowed by the bootstrap policy
    let allowed = allowed_for_bootstrap(&fx.emu);
    let mut actions = BTreeSet::new();
    for (service, action, failed) in &d.calls {
        assert!(!failed, "{service}:{action} failed");
        let a = format!("{service}:{action}");
        assert!(allowed.contains(&a), "IAM policy lacks {a}");
        actions.insert(a);
    }
    for a in [
        "ec2:DescribeNetworkAcls",
        "ec2:DescribeInstanceTypes",
        "ec2:SearchTransitGatewayMulticastGroups",
        "rds:DescribeDBParameters",
        "elasticfilesystem:DescribeMountTargets",
    ] {
        assert!(actions.contains(a), "doctor did not call {a}: {actions:?}");
    }
    // the text report
    fx.emu.reset_calls();
    let r = overlayctl(&fx.emu, &["doctor", "--config", &fx.cfg]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout
            .contains("13 checks: 13 ok, 0 warn, 0 fail, 0 unknown"),
        "{}",
        r.stdout
    );
    assert!(r
        .stdout
        .lines()
        .any(|l| l.starts_with("ok      router.source-dest-check")));
    assert!(r.stdout.contains("evidence: "));
    assert_eq!(fx.emu.mutating_calls(), vec![]);
}

const ROUTER_SDC: &str = "router.source-dest-check";
const ROUTES: &str = "routes.overlay";
const SG_IGMP: &str = "sg.vtep.igmp";
const SG_VXLAN: &str = "sg.vtep.vxlan";
const SG_BGP: &str = "sg.vtep.bgp";
const NACL: &str = "nacl";
const TGW_DOMAIN: &str = "tgw.domain";
const TGW_MEMBERS: &str = "tgw.members";
const STRANGERS: &str = "subnet.strangers";
const NITRO: &str = "instances.nitro";
const RDS_PARAMS: &str = "rds.parameters";
const EFS_MOUNT: &str = "efs.mount-target";

#[tokio::test]
async fn router_with_source_dest_check_on_fails() {
    let Some(g) = fixture().await else { return };
    let fx = g.as_ref().unwrap();
    let sdk = sdk(&fx.emu).await;
    let set = |on: bool| {
        sdk.ec2
            .modify_instance_attribute()
            .instance_id(&fx.seed.router)
            .source_dest_check(AttributeBooleanValue::builder().value(on).build())
            .send()
    };
    set(true).await.unwrap();
    let d = doctor(&fx.emu, &fx.cfg);
    set(false).await.unwrap();
    assert_eq!(d.code, 1, "{}", d.json);
    d.only(ROUTER_SDC, "fail");
    assert!(d.summary(ROUTER_SDC).contains(&fx.seed.router));
    assert!(d.json.to_string().contains("--no-source-dest-check"));
}

#[tokio::test]
async fn route_table_without_the_overlay_route_is_named_with_its_subnet() {
    let Some(g) = fixture().await else { return };
    let fx = g.as_ref().unwrap();
    let sdk = sdk(&fx.emu).await;
    // the second subnet gets a table of its own, without the overlay route
    let rt = sdk
        .ec2
        .create_route_table()
        .vpc_id(&fx.seed.vpc)
        .send()
        .await
        .unwrap();
    let rt = rt
        .route_table()
        .unwrap()
        .route_table_id()
        .unwrap()
        .to_string();
    let assoc = sdk
        .ec2
        .associate_route_table()
        .route_table_id(&rt)
        .subnet_id(&fx.seed.subnet2)
        .send()
        .await
        .unwrap();
    let d = doctor(&fx.emu, &fx.cfg);
    sdk.ec2
        .disassociate_route_table()
        .association_id(assoc.association_id().unwrap())
        .send()
        .await
        .unwrap();
    sdk.ec2
        .delete_route_table()
        .route_table_id(&rt)
        .send()
        .await
        .unwrap();
    assert_eq!(d.code, 1, "{}", d.json);
    d.only(ROUTES, "fail");
    let s = d.summary(ROUTES);
    assert!(s.contains(&rt) && s.contains("no route"), "{s}");
    assert!(s.contains(&fx.seed.subnet2), "names the subnet: {s}");
    assert!(
        !s.contains(&fx.seed.subnet),
        "the overlay subnet's table is fine: {s}"
    );
}

async fn vtep_rule(sdk: &Sdk, sg: &str, p: IpPermission, add: bool) {
    if add {
        sdk.ec2
            .authorize_security_group_ingress()
            .group_id(sg)
            .ip_permissions(p)
            .send()
            .await
            .unwrap();
    } else {
        sdk.ec2
            .revoke_security_group_ingress()
            .group_id(sg)
            .ip_permissions(p)
            .send()
            .await
            .unwrap();
    }
}

fn udp_from_cidr(cidr: &str) -> IpPermission {
    IpPermission::builder()
        .ip_protocol("udp")
        .from_port(4789)
        .to_port(4789)
        .ip_ranges(IpRange::builder().cidr_ip(cidr).build())
        .build()
}

fn from_group(proto: &str, port: i32, sg: &str) -> IpPermission {
    IpPermission::builder()
        .ip_protocol(proto)
        .from_port(port)
        .to_port(port)
        .user_id_group_pairs(UserIdGroupPair::builder().group_id(sg).build())
        .build()
}

fn igmp_from(cidr: &str) -> IpPermission {
    // moto needs ports on protocol 2 (see security_group.rs)
    IpPermission::builder()
        .ip_protocol("2")
        .from_port(-1)
        .to_port(-1)
        .ip_ranges(IpRange::builder().cidr_ip(cidr).build())
        .build()
}

#[tokio::test]
async fn vxlan_from_a_security_group_reference_fails() {
    let Some(g) = fixture().await else { return };
    let fx = g.as_ref().unwrap();
    let sdk = sdk(&fx.emu).await;
    vtep_rule(&sdk, &fx.vtep_sg, udp_from_cidr(&fx.subnet_cidr), false).await;
    vtep_rule(
        &sdk,
        &fx.vtep_sg,
        from_group("udp", 4789, &fx.vtep_sg),
        true,
    )
    .await;
    let d = doctor(&fx.emu, &fx.cfg);
    vtep_rule(
        &sdk,
        &fx.vtep_sg,
        from_group("udp", 4789, &fx.vtep_sg),
        false,
    )
    .await;
    vtep_rule(&sdk, &fx.vtep_sg, udp_from_cidr(&fx.subnet_cidr), true).await;
    assert_eq!(d.code, 1, "{}", d.json);
    d.only(SG_VXLAN, "fail");
    let s = d.summary(SG_VXLAN);
    assert!(
        s.contains("security group") && s.contains("does not honour") && s.contains(&fx.vtep_sg),
        "{s}"
    );
}

#[tokio::test]
async fn vxlan_from_anywhere_warns_too_wide() {
    let Some(g) = fixture().await else { return };
    let fx = g.as_ref().unwrap();
    let sdk = sdk(&fx.emu).await;
    vtep_rule(&sdk, &fx.vtep_sg, udp_from_cidr(&fx.subnet_cidr), false).await;
    vtep_rule(&sdk, &fx.vtep_sg, udp_from_cidr("0.0.0.0/0"), true).await;
    let d = doctor(&fx.emu, &fx.cfg);
    vtep_rule(&sdk, &fx.vtep_sg, udp_from_cidr("0.0.0.0/0"), false).await;
    vtep_rule(&sdk, &fx.vtep_sg, udp_from_cidr(&fx.subnet_cidr), true).await;
    assert_eq!(d.code, 0, "a warning alone exits 0: {}", d.json);
    d.only(SG_VXLAN, "warn");
    assert!(d.summary(SG_VXLAN).contains("0.0.0.0/0"), "{}", d.json);
    assert!(d.summary(SG_VXLAN).contains("too wide"), "{}", d.json);
}

#[tokio::test]
async fn igmp_only_from_a_security_group_fails_and_from_anywhere_warns() {
    let Some(g) = fixture().await else { return };
    let fx = g.as_ref().unwrap();
    let sdk = sdk(&fx.emu).await;
    vtep_rule(&sdk, &fx.vtep_sg, igmp_from("0.0.0.0/32"), false).await;
    vtep_rule(&sdk, &fx.vtep_sg, from_group("2", -1, &fx.vtep_sg), true).await;
    let by_ref = doctor(&fx.emu, &fx.cfg);
    vtep_rule(&sdk, &fx.vtep_sg, from_group("2", -1, &fx.vtep_sg), false).await;
    vtep_rule(&sdk, &fx.vtep_sg, igmp_from("0.0.0.0/0"), true).await;
    let wide = doctor(&fx.emu, &fx.cfg);
    vtep_rule(&sdk, &fx.vtep_sg, igmp_from("0.0.0.0/0"), false).await;
    let none = doctor(&fx.emu, &fx.cfg);
    vtep_rule(&sdk, &fx.vtep_sg, igmp_from("0.0.0.0/32"), true).await;

    assert_eq!(by_ref.code, 1, "{}", by_ref.json);
    by_ref.only(SG_IGMP, "fail");
    let s = by_ref.summary(SG_IGMP);
    assert!(
        s.contains("does not honour") && s.contains(&fx.vtep_sg),
        "{s}"
    );
    assert_eq!(wide.code, 0, "{}", wide.json);
    wide.only(SG_IGMP, "warn");
    assert!(wide.summary(SG_IGMP).contains("0.0.0.0/0"), "{}", wide.json);
    assert_eq!(none.code, 1);
    none.only(SG_IGMP, "fail");
    assert!(
        none.summary(SG_IGMP).contains("0.0.0.0/32"),
        "{}",
        none.json
    );
}

#[tokio::test]
async fn network_acl_denying_vxlan_fails() {
    let Some(g) = fixture().await else { return };
    let fx = g.as_ref().unwrap();
    let sdk = sdk(&fx.emu).await;
    let acls = sdk
        .ec2
        .describe_network_acls()
        .filters(f("association.subnet-id", &[&fx.seed.subnet]))
        .send()
        .await
        .unwrap();
    let acl = acls.network_acls()[0].network_acl_id().unwrap().to_string();
    sdk.ec2
        .create_network_acl_entry()
        .network_acl_id(&acl)
        .rule_number(50)
        .protocol("17")
        .rule_action(RuleAction::Deny)
        .egress(false)
        .cidr_block("0.0.0.0/0")
        .port_range(PortRange::builder().from(4789).to(4789).build())
        .send()
        .await
        .unwrap();
    let d = doctor(&fx.emu, &fx.cfg);
    sdk.ec2
        .delete_network_acl_entry()
        .network_acl_id(&acl)
        .rule_number(50)
        .egress(false)
        .send()
        .await
        .unwrap();
    assert_eq!(d.code, 1, "{}", d.json);
    d.only(NACL, "fail");
    let s = d.summary(NACL);
    assert!(s.contains(&acl) && s.contains("inbound UDP 4789"), "{s}");
    assert!(d.evidence(NACL).contains("denied by rule 50"), "{}", d.json);
}

#[tokio::test]
async fn subnet_not_associated_with_the_multicast_domain_fails() {
    let Some(g) = fixture().await else { return };
    let fx = g.as_ref().unwrap();
    let sdk = sdk(&fx.emu).await;
    sdk.ec2
        .disassociate_transit_gateway_multicast_domain()
        .transit_gateway_multicast_domain_id(&fx.domain)
        .transit_gateway_attachment_id(&fx.attachment)
        .subnet_ids(&fx.seed.subnet)
        .send()
        .await
        .unwrap();
    let d = doctor(&fx.emu, &fx.cfg);
    // a report from a subnet the domain does not have is ignored
    let eni = eni_of(&sdk, &fx.host).await;
    let (refused, _) = fx.emu.igmp(&fx.domain, GROUP, &eni, false);
    // put it back: associate, let it settle (states advance on reads), the nodes join again
    sdk.ec2
        .associate_transit_gateway_multicast_domain()
        .transit_gateway_multicast_domain_id(&fx.domain)
        .transit_gateway_attachment_id(&fx.attachment)
        .subnet_ids(&fx.seed.subnet)
        .send()
        .await
        .unwrap();
    sdk.ec2
        .get_transit_gateway_multicast_domain_associations()
        .transit_gateway_multicast_domain_id(&fx.domain)
        .send()
        .await
        .unwrap();
    join(&fx.emu, &sdk, &fx.domain, &fx.seed.router).await;
    join(&fx.emu, &sdk, &fx.domain, &fx.host).await;
    assert_eq!(
        refused, 409,
        "IGMP report from a subnet that is not associated"
    );
    assert_eq!(d.code, 1, "{}", d.json);
    assert_eq!(d.verdict(TGW_DOMAIN), "fail", "{}", d.json);
    let s = d.summary(TGW_DOMAIN);
    assert!(
        s.contains(&fx.seed.subnet) && s.contains("not associated"),
        "{s}"
    );
    // the members went with the association
    assert_eq!(d.verdict(TGW_MEMBERS), "fail", "{}", d.json);
    let again = doctor(&fx.emu, &fx.cfg);
    assert_eq!(again.code, 0, "restored: {}", again.json);
}

#[tokio::test]
async fn cluster_instance_that_is_no_group_member_is_named() {
    let Some(g) = fixture().await else { return };
    let fx = g.as_ref().unwrap();
    let sdk = sdk(&fx.emu).await;
    let host2 = run_instance(&sdk, &fx.seed.subnet).await;
    tag(&sdk, &host2, &[(TAG, "lab1"), ("Name", "host2")]).await;
    let d = doctor(&fx.emu, &fx.cfg);
    terminate(&sdk, &host2).await;
    assert_eq!(d.code, 1, "{}", d.json);
    d.only(TGW_MEMBERS, "fail");
    let s = d.summary(TGW_MEMBERS);
    assert!(s.contains(&format!("{host2} (host2)")), "{s}");
    assert!(!s.contains(&fx.host), "host1 is a member: {s}");
}

#[tokio::test]
async fn instance_outside_the_cluster_in_the_overlay_subnet_fails() {
    let Some(g) = fixture().await else { return };
    let fx = g.as_ref().unwrap();
    let sdk = sdk(&fx.emu).await;
    let stranger = run_instance(&sdk, &fx.seed.subnet).await;
    tag(&sdk, &stranger, &[("Name", "build-box")]).await;
    let d = doctor(&fx.emu, &fx.cfg);
    terminate(&sdk, &stranger).await;
    assert_eq!(d.code, 1, "{}", d.json);
    d.only(STRANGERS, "fail");
    let s = d.summary(STRANGERS);
    assert!(s.contains(&format!("{stranger} (build-box)")), "{s}");
    assert!(s.contains("asymmetric"), "{s}");
}

#[tokio::test]
async fn non_nitro_cluster_instance_fails() {
    let Some(g) = fixture().await else { return };
    let fx = g.as_ref().unwrap();
    let sdk = sdk(&fx.emu).await;
    let old = run_typed(&sdk, &fx.seed.subnet, InstanceType::M4Large).await;
    tag(&sdk, &old, &[(TAG, "lab1"), ("Name", "old-host")]).await;
    join(&fx.emu, &sdk, &fx.domain, &old).await;
    let d = doctor(&fx.emu, &fx.cfg);
    leave(&fx.emu, &sdk, &fx.domain, &old).await;
    terminate(&sdk, &old).await;
    assert_eq!(d.code, 1, "{}", d.json);
    d.only(NITRO, "fail");
    let s = d.summary(NITRO);
    assert!(s.contains(&old) && s.contains("m4.large"), "{s}");
    assert!(d.evidence(NITRO).contains("xen"), "{}", d.json);
}

async fn set_max_connections(sdk: &Sdk, v: &str) {
    sdk.rds
        .modify_db_parameter_group()
        .db_parameter_group_name(db_parameter_group())
        .parameters(
            aws_sdk_rds::types::Parameter::builder()
                .parameter_name("max_connections")
                .parameter_value(v)
                .apply_method(aws_sdk_rds::types::ApplyMethod::Immediate)
                .build(),
        )
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn rds_parameter_drift_fails_with_the_value_read() {
    let Some(g) = fixture().await else { return };
    let fx = g.as_ref().unwrap();
    let sdk = sdk(&fx.emu).await;
    set_max_connections(&sdk, "100").await;
    let d = doctor(&fx.emu, &fx.cfg);
    set_max_connections(&sdk, "350").await;
    assert_eq!(d.code, 1, "{}", d.json);
    d.only(RDS_PARAMS, "fail");
    let s = d.summary(RDS_PARAMS);
    assert!(s.contains("max_connections = 100 (want 350)"), "{s}");
}

#[tokio::test]
async fn missing_efs_mount_target_fails() {
    let Some(g) = fixture().await else { return };
    let fx = g.as_ref().unwrap();
    let sdk = sdk(&fx.emu).await;
    let mts = sdk
        .efs
        .describe_mount_targets()
        .file_system_id(&fx.fs)
        .send()
        .await
        .unwrap();
    let mt = mts.mount_targets()[0].mount_target_id().to_string();
    sdk.efs
        .delete_mount_target()
        .mount_target_id(&mt)
        .send()
        .await
        .unwrap();
    let d = doctor(&fx.emu, &fx.cfg);
    sdk.efs
        .create_mount_target()
        .file_system_id(&fx.fs)
        .subnet_id(&fx.seed.subnet)
        .security_groups(&fx.efs_sg)
        .send()
        .await
        .unwrap();
    assert_eq!(d.code, 1, "{}", d.json);
    d.only(EFS_MOUNT, "fail");
    let s = d.summary(EFS_MOUNT);
    assert!(s.contains(&fx.fs) && s.contains(&fx.seed.subnet), "{s}");
}

#[tokio::test]
async fn a_call_that_fails_makes_its_check_unknown_and_the_rest_decide() {
    let Some(g) = fixture().await else { return };
    let fx = g.as_ref().unwrap();
    fx.emu.reset_calls();
    fx.emu.fail_next("DescribeNetworkAcls", "before");
    // (doctor() resets the call log, which also drops pending faults: run it by hand)
    let r = overlayctl(&fx.emu, &["doctor", "--config", &fx.cfg, "-o", "json"]);
    assert_eq!(r.code, 0, "unknown alone exits 0: {}", r.all());
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    let checks = v["checks"].as_array().unwrap();
    for c in checks {
        if c["id"] == NACL {
            assert_eq!(c["verdict"], "unknown", "{c}");
            assert!(
                c["summary"]
                    .as_str()
                    .unwrap()
                    .contains("DescribeNetworkAcls"),
                "{c}"
            );
            assert!(c["fix"].is_string(), "{c}");
        } else {
            assert_eq!(c["verdict"], "ok", "{c}");
        }
    }
    assert_eq!(fx.emu.mutating_calls(), vec![]);
}

#[tokio::test]
async fn unicast_flooding_reports_the_multicast_checks_as_not_used() {
    let Some(g) = fixture().await else { return };
    let fx = g.as_ref().unwrap();
    let text = format!("{}flood = \"unicast\"\n", config_text(&fx.seed));
    let cfg = write_config(&fx.emu, "unicast.toml", &text);
    let d = doctor(&fx.emu, &cfg);
    assert_eq!(d.code, 0, "{}", d.json);
    for id in [SG_IGMP, TGW_DOMAIN, TGW_MEMBERS, NITRO] {
        assert_eq!(d.verdict(id), "ok", "{id}: {}", d.json);
        assert!(
            d.summary(id).starts_with("not used (flood = unicast)"),
            "{id}: {}",
            d.summary(id)
        );
    }
    // the chain left from multicast flooding is named
    assert!(
        d.evidence(TGW_DOMAIN).contains("teardown deletes it"),
        "{}",
        d.json
    );
    // the VXLAN rule is still judged (and a group reference only warns with unicast)
    assert!(d.summary(SG_VXLAN).contains("10.0.1.0/24"), "{}", d.json);
    assert!(!d
        .calls
        .iter()
        .any(|c| c.1 == "SearchTransitGatewayMulticastGroups"));
    let sdk = sdk(&fx.emu).await;
    vtep_rule(&sdk, &fx.vtep_sg, udp_from_cidr(&fx.subnet_cidr), false).await;
    vtep_rule(
        &sdk,
        &fx.vtep_sg,
        from_group("udp", 4789, &fx.vtep_sg),
        true,
    )
    .await;
    let by_ref = doctor(&fx.emu, &cfg);
    vtep_rule(
        &sdk,
        &fx.vtep_sg,
        from_group("udp", 4789, &fx.vtep_sg),
        false,
    )
    .await;
    vtep_rule(&sdk, &fx.vtep_sg, udp_from_cidr(&fx.subnet_cidr), true).await;
    by_ref.only(SG_VXLAN, "warn");
    assert_eq!(by_ref.code, 0);
}

fn tcp_from_cidr(port: i32, cidr: &str) -> IpPermission {
    IpPermission::builder()
        .ip_protocol("tcp")
        .from_port(port)
        .to_port(port)
        .ip_ranges(IpRange::builder().cidr_ip(cidr).build())
        .build()
}

/// flood = "evpn" on the fixture's cluster (its vtep group as a multicast bootstrap left it,
/// plus the BGP rule an evpn bootstrap adds): every check ok, the multicast ones not used;
/// then the BGP rule missing → `sg.vtep.bgp` fails (and only it); only from the vtep group
/// itself → it warns (BGP is unicast TCP); from 0.0.0.0/0 → too wide.
#[tokio::test]
async fn evpn_without_the_bgp_rule_fails_sg_vtep_bgp_and_a_reference_warns() {
    let Some(g) = fixture().await else { return };
    let fx = g.as_ref().unwrap();
    let text = format!("{}flood = \"evpn\"\n", config_text(&fx.seed));
    let cfg = write_config(&fx.emu, "evpn.toml", &text);
    let sdk = sdk(&fx.emu).await;
    let bgp = || tcp_from_cidr(179, &fx.subnet_cidr);
    vtep_rule(&sdk, &fx.vtep_sg, bgp(), true).await;
    let healthy = doctor(&fx.emu, &cfg);
    vtep_rule(&sdk, &fx.vtep_sg, bgp(), false).await;
    let missing = doctor(&fx.emu, &cfg);
    vtep_rule(&sdk, &fx.vtep_sg, from_group("tcp", 179, &fx.vtep_sg), true).await;
    let by_ref = doctor(&fx.emu, &cfg);
    vtep_rule(
        &sdk,
        &fx.vtep_sg,
        from_group("tcp", 179, &fx.vtep_sg),
        false,
    )
    .await;
    vtep_rule(&sdk, &fx.vtep_sg, tcp_from_cidr(179, "0.0.0.0/0"), true).await;
    let wide = doctor(&fx.emu, &cfg);
    vtep_rule(&sdk, &fx.vtep_sg, tcp_from_cidr(179, "0.0.0.0/0"), false).await;

    assert_eq!(healthy.code, 0, "{}", healthy.json);
    for id in overlay_ctl::doctor::CHECK_IDS {
        assert_eq!(healthy.verdict(id), "ok", "{id}: {}", healthy.json);
    }
    for id in [SG_IGMP, TGW_DOMAIN, TGW_MEMBERS, NITRO] {
        assert!(
            healthy.summary(id).starts_with("not used (flood = evpn)"),
            "{id}: {}",
            healthy.summary(id)
        );
    }
    let s = healthy.summary(SG_BGP);
    assert!(
        s.contains(&fx.vtep_sg) && s.contains("TCP 179") && s.contains(&fx.subnet_cidr),
        "{s}"
    );
    assert!(!healthy
        .calls
        .iter()
        .any(|c| c.1 == "SearchTransitGatewayMulticastGroups"));

    assert_eq!(missing.code, 1, "{}", missing.json);
    missing.only(SG_BGP, "fail");
    let s = missing.summary(SG_BGP);
    assert!(
        s.contains("does not let TCP 179 in from the overlay subnet 10.0.1.0/24"),
        "{s}"
    );
    assert!(
        missing.json.to_string().contains(&format!(
            "--group-id {} --protocol tcp --port 179 --cidr 10.0.1.0/24",
            fx.vtep_sg
        )),
        "{}",
        missing.json
    );

    assert_eq!(by_ref.code, 0, "a warning alone exits 0: {}", by_ref.json);
    by_ref.only(SG_BGP, "warn");
    assert!(
        by_ref.summary(SG_BGP).contains("from a security group"),
        "{}",
        by_ref.json
    );
    wide.only(SG_BGP, "warn");
    assert!(wide.summary(SG_BGP).contains("too wide"), "{}", wide.json);
}

#[tokio::test]
async fn bad_input_exits_2_naming_the_field_and_calls_nothing_that_mutates() {
    let Some(g) = fixture().await else { return };
    let fx = g.as_ref().unwrap();
    let good = config_text(&fx.seed);
    let cases = [
        (
            good.replace("100.64.0.0/16", "100.64.0.1/16"),
            "overlay_cidr",
        ),
        (format!("{good}flood = \"anycast\"\n"), "flood"),
        (
            good.replace(&fx.seed.router, "i-0123456789abcdef0"),
            "router_instance_id",
        ),
        (
            good.replace(&fx.seed.subnet2, &fx.seed.subnet),
            "second_subnet_id",
        ),
    ];
    for (text, field) in cases {
        let cfg = write_config(&fx.emu, "bad.toml", &text);
        fx.emu.reset_calls();
        let r = overlayctl(&fx.emu, &["doctor", "--config", &cfg, "-o", "json"]);
        assert_eq!(r.code, 2, "{field}: {}", r.all());
        assert!(
            r.stderr.contains("bad input") && r.stderr.contains(field),
            "{field}: {}",
            r.stderr
        );
        assert!(r.stdout.is_empty(), "{field}: {}", r.stdout);
        assert_eq!(fx.emu.mutating_calls(), vec![], "{field}");
    }
    let r = overlayctl(&fx.emu, &["doctor", "--config", "/nonexistent.toml"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("--config"), "{}", r.stderr);
}

const ROUTER_PAIR: &str = "router.pair";

async fn stop(sdk: &Sdk, id: &str) {
    sdk.ec2
        .stop_instances()
        .instance_ids(id)
        .send()
        .await
        .unwrap();
}

async fn start(sdk: &Sdk, id: &str) {
    sdk.ec2
        .start_instances()
        .instance_ids(id)
        .send()
        .await
        .unwrap();
}

/// A multi-AZ cluster with a router pair (its own emulator: the shared fixture has one router):
/// healthy → every check ok; the standby stopped → `router.pair` warns "no standby" (and only
/// it); both stopped → it fails "double failure"; a failover to b is healthy; every per-subnet
/// check names the second subnet's fault.
#[tokio::test]
async fn router_pair_standby_down_warns_both_down_fails() {
    let Some(emu) = Emulator::start() else { return };
    let sdk = sdk(&emu).await;
    let s = seed_pair(&sdk).await;
    let cfg = write_config(&emu, "pair.toml", &config_text_pair(&s));
    let r = overlayctl(&emu, &["bootstrap", "--config", &cfg, "-q"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let domain = tagged_domain(&sdk).await;
    for r in &s.routers {
        join(&emu, &sdk, &domain, r).await;
    }
    let [a, b] = &s.routers;

    let healthy = doctor(&emu, &cfg);
    assert_eq!(healthy.code, 0, "{}", healthy.json);
    for id in overlay_ctl::doctor::CHECK_IDS {
        assert_eq!(healthy.verdict(id), "ok", "{id}: {}", healthy.json);
    }
    assert!(healthy.summary(ROUTER_PAIR).contains(a) && healthy.summary(ROUTER_PAIR).contains(b));
    assert!(
        healthy.evidence(TGW_DOMAIN).contains(&s.subnets[1]),
        "{}",
        healthy.json
    );
    assert!(
        healthy.evidence(EFS_MOUNT).contains(&s.subnets[1]),
        "{}",
        healthy.json
    );

    // the standby down: a warning, nothing fails (the overlay still flows through a)
    stop(&sdk, b).await;
    let one = doctor(&emu, &cfg);
    start(&sdk, b).await;
    assert_eq!(one.code, 0, "a warning alone exits 0: {}", one.json);
    // b is no group member while it is stopped: tgw.members does not count stopped instances
    one.only(ROUTER_PAIR, "warn");
    let sum = one.summary(ROUTER_PAIR);
    assert!(
        sum.contains("no standby") && sum.contains(b.as_str()),
        "{sum}"
    );
    assert!(
        one.json
            .to_string()
            .contains("start-instances --instance-ids"),
        "{}",
        one.json
    );

    // both down: the double failure fails
    stop(&sdk, a).await;
    stop(&sdk, b).await;
    let both = doctor(&emu, &cfg);
    start(&sdk, a).await;
    start(&sdk, b).await;
    assert_eq!(both.code, 1, "{}", both.json);
    assert_eq!(both.verdict(ROUTER_PAIR), "fail", "{}", both.json);
    let sum = both.summary(ROUTER_PAIR);
    assert!(
        sum.contains("double failure")
            && sum.contains("nothing carries traffic between the overlay and the VPC"),
        "{sum}"
    );

    // after a failover to b (its ReplaceRoute), everything is ok again
    let eni_b = primary_eni(&sdk, b).await;
    let rts = sdk
        .ec2
        .describe_route_tables()
        .filters(f("vpc-id", &[&s.vpc]))
        .send()
        .await
        .unwrap();
    for rt in rts.route_tables() {
        sdk.ec2
            .replace_route()
            .route_table_id(rt.route_table_id().unwrap())
            .destination_cidr_block("100.64.0.0/16")
            .network_interface_id(&eni_b)
            .send()
            .await
            .unwrap();
    }
    let after = doctor(&emu, &cfg);
    assert_eq!(after.code, 0, "{}", after.json);
    for id in overlay_ctl::doctor::CHECK_IDS {
        assert_eq!(after.verdict(id), "ok", "{id}: {}", after.json);
    }
    assert!(
        after.evidence(ROUTER_PAIR).contains(&eni_b),
        "{}",
        after.json
    );

    // the second subnet's mount target gone: named
    let fss = sdk.efs.describe_file_systems().send().await.unwrap();
    let fs = fss.file_systems()[0].file_system_id().to_string();
    let mts = sdk
        .efs
        .describe_mount_targets()
        .file_system_id(&fs)
        .send()
        .await
        .unwrap();
    let mt = mts
        .mount_targets()
        .iter()
        .find(|m| m.subnet_id() == s.subnets[1])
        .unwrap()
        .mount_target_id()
        .to_string();
    sdk.efs
        .delete_mount_target()
        .mount_target_id(&mt)
        .send()
        .await
        .unwrap();
    let d = doctor(&emu, &cfg);
    assert_eq!(d.code, 1, "{}", d.json);
    d.only(EFS_MOUNT, "fail");
    assert!(d.summary(EFS_MOUNT).contains(&s.subnets[1]), "{}", d.json);
}

#[test]
fn help_teaches_the_checks_exit_codes_and_an_example() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_overlayctl"))
        .args(["doctor", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for id in overlay_ctl::doctor::CHECK_IDS {
        assert!(help.contains(id), "--help lacks {id}:\n{help}");
    }
    for want in [
        "Exit status",
        "0 when no check fails",
        "1 when one does",
        "2 bad input",
        "overlayctl doctor --config cluster.toml",
        "-o json",
        "Read-only",
        "unicast",
        "evpn",
    ] {
        assert!(help.contains(want), "--help lacks {want:?}:\n{help}");
    }
    let top = std::process::Command::new(env!("CARGO_BIN_EXE_overlayctl"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&top.stdout).contains("doctor"));
}
