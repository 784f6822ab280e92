//! The CloudFormation templates (cfn/*.yaml) against overlayctl's model: one source of truth
//! for the two ways of provisioning. Parses the templates (no AWS, no root) and fails on any
//! difference in security-group rules, names, tags, the database's engine and parameter group,
//! the secrets and their password alphabet, EFS, the multicast domain, the instance roles'
//! policies (`overlayctl iam-policy`), the overlay routes; checks every parameter, the
//! instance types' architecture, the user-data's shape (the same script for every role, shellcheck
//! clean once rendered), the Flood=evpn variant (no transit gateway chain, BGP rules, the route
//! reflectors in every node's overlayd.toml), and runs cfn-lint on every template.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use common::cfn::{self, eval, eval_str, scalar, Stack, Template};
use overlay_ctl::config::{self, Flood, CLUSTER_TAG, ROLE_TAG};
use overlay_ctl::iam::PolicyRole;
use overlay_ctl::model::{self, Perm, RuleInputs, Source};
use serde_yaml::Value;

const CLUSTER: &str = "parity";
const REGION: &str = "eu-west-1";
const ROUTE_TABLES: [&str; 2] = ["rtb-0123abcd", "rtb-0123456789abcdef0"];
/// RouterHa's second overlay subnet (another zone) and its CIDR.
const SUBNET2: &str = "subnet-89abcdef";
const SUBNET2_CIDR: &str = "10.0.2.0/24";

/// overlayctl's view of the same cluster (its defaults: EFS throughput, DB class and storage).
fn ctl_cluster() -> config::Cluster {
    config::parse(&format!(
        r#"
name = "{CLUSTER}"
region = "{REGION}"
vpc_id = "vpc-0123abcd"
subnet_id = "subnet-0123abcd"
second_subnet_id = "subnet-4567abcd"
overlay_cidr = "10.101.0.0/16"
multicast_group = "239.255.0.1"
router_instance_id = "i-0123abcd"
access_cidr = "203.0.113.0/24"
"#
    ))
    .expect("a valid cluster file")
}

/// The values of a stack made from template `t`: every parameter's default, the site-specific
/// ones given, pseudo parameters, and `Ref`/`GetAtt` of every resource as placeholders.
fn stack(t: &Template) -> Stack {
    stack_with(t, &[])
}

/// cluster.yaml with RouterHa: two routers, the second overlay subnet.
fn ha_stack(t: &Template) -> Stack {
    stack_with(
        t,
        &[
            ("RouterHa", "true"),
            ("SecondOverlaySubnetId", SUBNET2),
            ("SecondOverlaySubnetCidr", SUBNET2_CIDR),
        ],
    )
}

/// cluster.yaml with Flood=evpn, in one zone or (`ha`) with RouterHa.
fn evpn_stack(t: &Template, ha: bool) -> Stack {
    let mut extra = vec![("Flood", "evpn")];
    if ha {
        extra.extend([
            ("RouterHa", "true"),
            ("SecondOverlaySubnetId", SUBNET2),
            ("SecondOverlaySubnetCidr", SUBNET2_CIDR),
        ]);
    }
    stack_with(t, &extra)
}

/// Every variant of every template the checks below render: (template, RouterHa, Flood=evpn).
/// cluster.yaml four times (one zone / RouterHa, multicast / evpn), standalone.yaml once.
fn variants() -> Vec<(Template, bool, bool)> {
    let mut v = Vec::new();
    for t in both() {
        if t.name == "cluster.yaml" {
            for (ha, evpn) in [(false, false), (true, false), (false, true), (true, true)] {
                v.push((cfn::load(&t.name), ha, evpn));
            }
        } else {
            v.push((t, false, false));
        }
    }
    v
}

fn variant_stack(t: &Template, ha: bool, evpn: bool) -> Stack {
    match (ha, evpn) {
        (_, true) => evpn_stack(t, ha),
        (true, false) => ha_stack(t),
        (false, false) => stack(t),
    }
}

/// The flood mode of a cluster.yaml variant as overlayctl spells it (evpn: peer discovery ec2,
/// overlayctl's and overlayd's default; the template sets none).
fn variant_flood(evpn: bool) -> Flood {
    if evpn {
        Flood::Evpn(config::PeerDiscovery::Ec2)
    } else {
        Flood::Multicast
    }
}

fn stack_with(t: &Template, extra: &[(&str, &str)]) -> Stack {
    let sha = "ab".repeat(32);
    let mut s = Stack::of(
        t,
        "parity-stack",
        REGION,
        &[
            ("ClusterName", CLUSTER),
            ("VpcId", "vpc-0123abcd"),
            ("SubnetId", "subnet-0123abcd"),
            ("SecondSubnetId", "subnet-4567abcd"),
            ("AccessCidr", "203.0.113.0/24"),
            (
                "PackageUrl",
                "https://example.com/overlayd_0.1.0-1_amd64.deb",
            ),
            ("PackageSha256", &sha),
            ("ImageId", "ami-0123456789abcdef0"),
        ],
    );
    s.set_list("RouteTableIds", &ROUTE_TABLES);
    for (k, v) in extra {
        s.set(k, v);
    }
    s.finish(t)
}

fn props(t: &Template, id: &str, s: &Stack) -> Value {
    eval(&t.resource(id)["Properties"], s)
}

fn tags_of(v: &Value) -> BTreeMap<String, String> {
    let list = v
        .get("Tags")
        .or_else(|| v.get("FileSystemTags"))
        .and_then(Value::as_sequence)
        .cloned()
        .unwrap_or_default();
    list.iter()
        .map(|t| (scalar(&t["Key"]), scalar(&t["Value"])))
        .collect()
}

fn role_of(v: &Value) -> String {
    tags_of(v)
        .get(ROLE_TAG)
        .cloned()
        .unwrap_or_else(|| panic!("no {ROLE_TAG} tag in {v:?}"))
}

fn both() -> Vec<Template> {
    cfn::templates().iter().map(|n| cfn::load(n)).collect()
}

#[test]
fn every_template_is_cfn_lint_clean() {
    let names: Vec<String> = cfn::templates();
    assert!(
        names.contains(&"cluster.yaml".to_string()) && names.contains(&"standalone.yaml".into()),
        "{names:?}"
    );
    let o = match Command::new("cfn-lint")
        .args(names.iter().map(|n| format!("cfn/{n}")))
        .current_dir(common::repo_root())
        .output()
    {
        Ok(o) => o,
        Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!(
                "SKIP: cfn-lint not installed ({e}): pip install -r scripts/requirements-ci.txt"
            );
            return;
        }
        Err(e) => panic!("cfn-lint: {e} (scripts/install-deps installs it)"),
    };
    assert!(
        o.status.success(),
        "cfn-lint:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Ingress of a template's security group as overlayctl's model spells it.
fn perms(sg: &Value) -> Vec<Perm> {
    let mut v: Vec<Perm> = sg["SecurityGroupIngress"]
        .as_sequence()
        .expect("inline ingress")
        .iter()
        .map(|r| {
            let port = |k: &str| r.get(k).map(|p| scalar(p).parse().unwrap()).unwrap_or(-1);
            let source = match (r.get("CidrIp"), r.get("SourceSecurityGroupId")) {
                (Some(c), None) => Source::Cidr(scalar(c)),
                (None, Some(g)) => Source::Group(scalar(g)),
                other => panic!("one source per rule: {other:?}"),
            };
            Perm::new(
                &scalar(&r["IpProtocol"]),
                port("FromPort"),
                port("ToPort"),
                source,
                &scalar(&r["Description"]),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn security_groups_are_overlayctls() {
    let cluster = ctl_cluster();
    let mut compared = 0;
    for (t, ha, evpn) in variants() {
        let s = variant_stack(&t, ha, evpn);
        let groups = t.resources_of_type("AWS::EC2::SecurityGroup");
        let by_role: BTreeMap<String, String> = groups
            .iter()
            .map(|(id, _)| (role_of(&props(&t, id, &s)), format!("ref:{id}")))
            .collect();
        let inputs = RuleInputs {
            subnet_cidr: s.values.get("SubnetCidr").map(scalar).unwrap_or_default(),
            access_cidr: "203.0.113.0/24".into(),
            overlay_cidr: s.values.get("OverlayCidr").map(scalar).unwrap_or_default(),
            group_ids: by_role.clone(),
            flood: variant_flood(evpn),
        };
        if t.name == "cluster.yaml" {
            let roles: BTreeSet<&str> = by_role.keys().map(String::as_str).collect();
            assert_eq!(roles, model::SG_ROLES.into_iter().collect(), "{}", t.name);
        }
        for (id, _) in &groups {
            let p = props(&t, id, &s);
            let role = role_of(&p);
            assert_eq!(scalar(&p["GroupName"]), cluster.res_name(&role), "{id}");
            assert_eq!(
                scalar(&p["GroupDescription"]),
                format!("overlay {CLUSTER} {role}"),
                "{id}"
            );
            // the standalone node is its cloud's entry point, like the cluster's router
            let model_role = if role == "standalone" {
                "router"
            } else {
                &role
            };
            let mut want = model::desired_rules(model_role, &inputs);
            if ha {
                // RouterHa: each rule from the nodes' subnet also from the second one
                let second = RuleInputs {
                    subnet_cidr: SUBNET2_CIDR.into(),
                    access_cidr: inputs.access_cidr.clone(),
                    overlay_cidr: inputs.overlay_cidr.clone(),
                    group_ids: inputs.group_ids.clone(),
                    flood: inputs.flood,
                };
                let from_second = Source::Cidr(SUBNET2_CIDR.into());
                want.extend(
                    model::desired_rules(model_role, &second)
                        .into_iter()
                        .filter(|r| r.source == from_second),
                );
            }
            want.sort();
            want.dedup();
            assert_eq!(
                perms(&p),
                want,
                "{}: {id} ({role}, ha {ha}, evpn {evpn})",
                t.name
            );
            compared += 1;
        }
    }
    assert_eq!(
        compared, 21,
        "five cluster groups (one AZ, RouterHa; multicast, evpn) and the standalone one"
    );
}

#[test]
fn tags_and_names_are_overlayctls() {
    let cluster = ctl_cluster();
    // overlayctl's overlay:role of what both provision (ctl/src: ec2/tgw.rs, efs.rs, rds.rs)
    let ctl_roles: BTreeMap<&str, &str> = [
        ("AWS::EC2::TransitGateway", "tgw"),
        ("AWS::EC2::TransitGatewayVpcAttachment", "tgw-attachment"),
        (
            "AWS::EC2::TransitGatewayMulticastDomain",
            "multicast-domain",
        ),
        ("AWS::EFS::FileSystem", "efs"),
        ("AWS::RDS::DBSubnetGroup", "db-subnet-group"),
        ("AWS::RDS::DBParameterGroup", "db-parameter-group"),
        ("AWS::RDS::DBInstance", "db"),
    ]
    .into();
    // overlayd reads its role from overlay:role (role = "auto"): the instances' tags are roles
    let node_roles = ["router", "management", "host", "standalone"];
    for t in both() {
        let s = stack(&t);
        for (id, r) in t.resources() {
            if id.starts_with("Fn::ForEach") {
                continue;
            }
            let ty = scalar(&r["Type"]);
            // RouterHa's resources are tagged as their single-AZ twins (checked here too)
            let p = props(&t, &id, &s);
            let tags = tags_of(&p);
            let untagged = [
                "AWS::EFS::MountTarget",
                "AWS::EC2::TransitGatewayMulticastDomainAssociation",
                "AWS::IAM::InstanceProfile",
                "AWS::EC2::LaunchTemplate",
            ];
            if untagged.contains(&ty.as_str()) {
                assert!(tags.is_empty(), "{id}");
                continue;
            }
            let role = tags
                .get(ROLE_TAG)
                .unwrap_or_else(|| panic!("{}: {id} has no {ROLE_TAG} tag", t.name));
            assert_eq!(
                tags.get(CLUSTER_TAG).map(String::as_str),
                Some(CLUSTER),
                "{id}"
            );
            assert_eq!(tags.get("Name"), Some(&cluster.res_name(role)), "{id}");
            assert_eq!(tags.len(), 3, "{id}: {tags:?}");
            if let Some(want) = ctl_roles.get(ty.as_str()) {
                assert_eq!(role, want, "{id}");
            }
            if ty == "AWS::EC2::Instance" || ty == "AWS::AutoScaling::AutoScalingGroup" {
                assert!(node_roles.contains(&role.as_str()), "{id}: {role}");
            }
            if ty == "AWS::AutoScaling::AutoScalingGroup" {
                for tag in p["Tags"].as_sequence().unwrap() {
                    assert_eq!(tag["PropagateAtLaunch"], Value::Bool(true), "{id}");
                }
            }
        }
    }
}

#[test]
fn database_and_secrets_are_overlayctls() {
    let cluster = ctl_cluster();
    let t = cfn::load("cluster.yaml");
    let s = stack(&t);
    let pg = props(&t, "DatabaseParameterGroup", &s);
    assert_eq!(scalar(&pg["Family"]), model::DB_PARAMETER_GROUP_FAMILY);
    assert_eq!(
        scalar(&pg["DBParameterGroupName"]),
        cluster.db_parameter_group()
    );
    let params: BTreeMap<String, String> = pg["Parameters"]
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(k, v)| (scalar(k), scalar(v)))
        .collect();
    let want: BTreeMap<String, String> = model::DB_PARAMETERS
        .iter()
        .map(|(k, v, _)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(params, want);

    let db = props(&t, "Database", &s);
    assert_eq!(scalar(&db["Engine"]), model::DB_ENGINE);
    assert_eq!(scalar(&db["EngineVersion"]), model::DB_ENGINE_VERSION_CFN);
    assert_eq!(
        scalar(&db["DBInstanceIdentifier"]),
        cluster.db_instance_id()
    );
    assert_eq!(
        t.default("DbInstanceClass"),
        cluster.cfg.db_instance_class,
        "default class"
    );
    assert_eq!(
        t.default("DbAllocatedStorageGib"),
        cluster.cfg.db_allocated_storage_gib.to_string()
    );
    assert_eq!(
        t.default("DbMaxStorageGib"),
        cluster.cfg.db_max_storage_gib.to_string()
    );
    let sng = props(&t, "DatabaseSubnetGroup", &s);
    assert_eq!(scalar(&sng["DBSubnetGroupName"]), cluster.db_subnet_group());
    for (k, v) in [
        ("StorageType", "gp3"),
        ("StorageEncrypted", "true"),
        ("MultiAZ", "false"),
        ("PubliclyAccessible", "false"),
        ("BackupRetentionPeriod", "7"),
        ("CopyTagsToSnapshot", "true"),
        ("AvailabilityZone", "AvailabilityZone:Router"),
    ] {
        assert_eq!(scalar(&db[k]), v, "Database.{k}");
    }
    assert_eq!(
        scalar(&db["MasterUsername"]),
        "{{resolve:secretsmanager:ref:AdminSecret:SecretString:username}}"
    );

    // the secrets: names, JSON, and a generated password of overlayctl's alphabet and length
    for (id, which, user) in [
        ("AdminSecret", "admin", overlay_ctl::rds::ADMIN_USER),
        ("ServiceSecret", "service", overlay_ctl::rds::SERVICE_USER),
    ] {
        let p = props(&t, id, &s);
        assert_eq!(scalar(&p["Name"]), cluster.secret_name(which), "{id}");
        let g = &p["GenerateSecretString"];
        let json: serde_json::Value =
            serde_json::from_str(&scalar(&g["SecretStringTemplate"])).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"engine": "mysql", "port": 3306, "username": user,
                "dbInstanceIdentifier": cluster.db_instance_id()}),
            "{id}: the keys overlayctl writes besides the password"
        );
        assert_eq!(scalar(&g["GenerateStringKey"]), "password");
        assert_eq!(
            scalar(&g["PasswordLength"]),
            model::PASSWORD_LEN.to_string()
        );
        assert_eq!(
            generated_alphabet(g),
            model::PASSWORD_ALPHABET.chars().collect::<BTreeSet<_>>(),
            "{id}: the characters Secrets Manager may generate"
        );
        for bad in ['/', '@', '"', ':', ' '] {
            assert!(!model::PASSWORD_ALPHABET.contains(bad));
        }
    }
}

/// The characters GenerateSecretString draws from (Secrets Manager's GetRandomPassword rules).
fn generated_alphabet(g: &Value) -> BTreeSet<char> {
    let on = |k: &str| g.get(k).map(scalar).as_deref() == Some("true");
    let mut set: BTreeSet<char> = (33u8..=126).map(char::from).collect();
    if on("IncludeSpace") {
        set.insert(' ');
    }
    let drop = |set: &mut BTreeSet<char>, f: fn(&char) -> bool| set.retain(|c| !f(c));
    if on("ExcludePunctuation") {
        drop(&mut set, char::is_ascii_punctuation);
    }
    if on("ExcludeUppercase") {
        drop(&mut set, char::is_ascii_uppercase);
    }
    if on("ExcludeLowercase") {
        drop(&mut set, char::is_ascii_lowercase);
    }
    if on("ExcludeNumbers") {
        drop(&mut set, char::is_ascii_digit);
    }
    if let Some(x) = g.get("ExcludeCharacters") {
        let x = scalar(x);
        set.retain(|c| !x.contains(*c));
    }
    set
}

#[test]
fn efs_and_the_multicast_domain_are_overlayctls() {
    let cluster = ctl_cluster();
    let t = cfn::load("cluster.yaml");
    let s = stack(&t);
    let fs = props(&t, "FileSystem", &s);
    for (k, v) in [
        ("Encrypted", "true"),
        ("ThroughputMode", "provisioned"),
        ("PerformanceMode", "generalPurpose"),
    ] {
        assert_eq!(scalar(&fs[k]), v, "FileSystem.{k}");
    }
    assert_eq!(
        t.default("EfsThroughputMibps").parse::<f64>().unwrap(),
        cluster.cfg.efs_throughput_mibps
    );
    let outputs = t.section("Outputs");
    assert_eq!(
        eval_str(&outputs["EfsMountOptions"]["Value"], &s),
        overlay_ctl::efs::MOUNT_OPTIONS
    );
    assert_eq!(
        eval_str(&outputs["EfsDnsName"]["Value"], &s),
        overlay_ctl::efs::dns_name("ref:FileSystem", REGION)
    );
    let mt = props(&t, "MountTarget", &s);
    assert_eq!(scalar(&mt["SubnetId"]), "subnet-0123abcd");

    let tgw = props(&t, "TransitGateway", &s);
    assert_eq!(scalar(&tgw["MulticastSupport"]), "enable");
    let d = props(&t, "MulticastDomain", &s);
    let want = overlay_ctl::ec2::tgw::wanted_options();
    assert_eq!(scalar(&d["Options"]["Igmpv2Support"]), want.igmpv2);
    assert_eq!(
        scalar(&d["Options"]["StaticSourcesSupport"]),
        want.static_sources
    );
    assert_eq!(
        scalar(&d["Options"]["AutoAcceptSharedAssociations"]),
        want.auto_accept
    );
    let a = props(&t, "TransitGatewayAttachment", &s);
    assert_eq!(
        a["SubnetIds"],
        Value::Sequence(vec!["subnet-0123abcd".into()])
    );
    let assoc = props(&t, "MulticastAssociation", &s);
    assert_eq!(scalar(&assoc["SubnetId"]), "subnet-0123abcd");
}

#[test]
fn overlay_routes_point_at_the_routers_interface_in_every_given_table() {
    let t = cfn::load("cluster.yaml");
    let s = stack(&t);
    let routes = cfn::expand_foreach(&t, &s);
    let tables: BTreeSet<String> = routes
        .values()
        .map(|r| {
            assert_eq!(scalar(&r["Type"]), "AWS::EC2::Route");
            let p = &r["Properties"];
            assert_eq!(scalar(&p["DestinationCidrBlock"]), t.default("OverlayCidr"));
            assert_eq!(scalar(&p["NetworkInterfaceId"]), "ref:RouterInterface");
            scalar(&p["RouteTableId"])
        })
        .collect();
    assert_eq!(tables, ROUTE_TABLES.iter().map(|x| x.to_string()).collect());
    let eni = props(&t, "RouterInterface", &s);
    assert_eq!(eni["SourceDestCheck"], Value::Bool(false));
    let router = props(&t, "Router", &s);
    assert_eq!(
        scalar(&router["NetworkInterfaces"][0]["NetworkInterfaceId"]),
        "ref:RouterInterface"
    );
}

/// The policy documents of the template's instance roles, without the stack-signal statement
/// (CloudFormation's alone), against `overlayctl iam-policy --for ROLE` for the cluster.
#[test]
fn instance_roles_are_overlayctl_iam_policy() {
    for (t, ha, evpn) in variants() {
        let s = variant_stack(&t, ha, evpn);
        let roles = t.resources_of_type("AWS::IAM::Role");
        assert!(!roles.is_empty(), "{}", t.name);
        for (id, _) in roles {
            let p = props(&t, &id, &s);
            let role = role_of(&p);
            let policies = p["Policies"].as_sequence().unwrap();
            assert_eq!(policies.len(), 1, "{id}");
            let doc: serde_json::Value =
                serde_json::to_value(&policies[0]["PolicyDocument"]).unwrap();
            let mut statements = doc["Statement"].as_array().unwrap().clone();
            let signal = statements
                .iter()
                .position(|st| st["Sid"] == "OverlayStackSignal")
                .unwrap_or_else(|| panic!("{id}: no OverlayStackSignal statement"));
            let sig = statements.remove(signal);
            assert_eq!(sig["Action"], "cloudformation:SignalResource", "{id}");
            assert_eq!(sig["Resource"], s.values["AWS::StackId"].as_str().unwrap());
            // the standalone node calls what a host calls with nothing to discover or watch
            let (which, flood) = match role.as_str() {
                "standalone" => (
                    "host",
                    Flood::Unicast(overlay_ctl::config::PeerDiscovery::Static),
                ),
                r => (r, variant_flood(evpn)),
            };
            let which = PolicyRole::parse(which)
                .unwrap_or_else(|| panic!("iam-policy has no role {which}"));
            let want = overlay_ctl::iam::role_policy(which, Some(REGION), flood, Some(CLUSTER));
            let mut want_statements = want["Statement"].as_array().unwrap().clone();
            if role == "router" {
                let take = |v: &mut Vec<serde_json::Value>| {
                    let i = v
                        .iter()
                        .position(|st| st["Sid"] == overlay_ctl::iam::SID_ROUTE_TAKEOVER)
                        .unwrap_or_else(|| panic!("{id}: no route takeover statement"));
                    v.remove(i)
                };
                route_takeover_is_role_policys_scoped_to_the_tables(
                    &take(&mut statements),
                    &take(&mut want_statements),
                );
            }
            assert_eq!(
                statements, want_statements,
                "{}: {id} ({role}, evpn {evpn})",
                t.name
            );
            assert_eq!(doc["Version"], want["Version"]);
            let trust = serde_json::to_value(&p["AssumeRolePolicyDocument"]).unwrap();
            assert_eq!(
                trust["Statement"][0]["Principal"]["Service"],
                "ec2.amazonaws.com"
            );
        }
    }
}

/// The one documented difference from `iam::role_policy`: the router's takeover names exactly
/// the tables of RouteTableIds (region: the RequestedRegion condition) instead of every table
/// tagged with the cluster (CloudFormation cannot tag existing tables). Same Sid, effect and
/// actions; the same condition but the tag.
fn route_takeover_is_role_policys_scoped_to_the_tables(
    got: &serde_json::Value,
    want: &serde_json::Value,
) {
    for k in ["Sid", "Effect", "Action"] {
        assert_eq!(got[k], want[k], "OverlayRouteTakeover.{k}");
    }
    let mut keys: Vec<&String> = got.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["Action", "Condition", "Effect", "Resource", "Sid"]);
    // role_policy's pattern arn:aws:ec2:REGION:*:route-table/* with each table for the last *
    let pattern = want["Resource"].as_str().unwrap();
    let prefix = pattern
        .strip_suffix('*')
        .unwrap()
        .replace(&format!(":{REGION}:"), ":*:");
    let tables: Vec<serde_json::Value> = ROUTE_TABLES
        .iter()
        .map(|t| format!("{prefix}{t}").into())
        .collect();
    assert_eq!(got["Resource"], serde_json::Value::Array(tables));
    let mut cond = want["Condition"].clone();
    let tag = format!("aws:ResourceTag/{CLUSTER_TAG}");
    let removed = cond["StringEquals"].as_object_mut().unwrap().remove(&tag);
    assert_eq!(removed, Some(CLUSTER.into()), "role_policy scopes by tag");
    assert_eq!(got["Condition"], cond, "the region condition, not the tag");
    assert_eq!(
        got["Condition"]["StringEquals"]["aws:RequestedRegion"],
        REGION
    );
}

#[test]
fn every_parameter_is_described_constrained_and_defaulted() {
    // site-specific values without a sane default: the operator's network, access and package
    let no_default = [
        "VpcId",
        "SubnetId",
        "SecondSubnetId",
        "RouteTableIds",
        "AccessCidr",
        "PackageUrl",
        "PackageSha256",
    ];
    for t in both() {
        for (k, p) in t.section("Parameters") {
            let k = scalar(k);
            let ty = scalar(&p["Type"]);
            assert!(
                p.get("Description").map(scalar).unwrap_or_default().len() > 20,
                "{}: {k} needs a description",
                t.name
            );
            let constrained = p.get("AllowedPattern").is_some()
                || p.get("AllowedValues").is_some()
                || (ty == "Number" && p.get("MinValue").is_some() && p.get("MaxValue").is_some())
                || ty.starts_with("AWS::");
            assert!(
                constrained,
                "{}: {k} needs a pattern, values or range",
                t.name
            );
            assert_eq!(
                p.get("Default").is_none(),
                no_default.contains(&k.as_str()),
                "{}: {k}'s default",
                t.name
            );
            if let (Some(d), Some(pat)) = (p.get("Default"), p.get("AllowedPattern")) {
                let d = scalar(d);
                assert!(
                    d.is_empty() || pattern_accepts(&scalar(pat), &d),
                    "{}: {k}'s default {d:?} against its own pattern",
                    t.name
                );
            }
        }
    }
}

/// Whether `pat` accepts `s` — python's re (cfn-lint's), since the patterns use look-ahead.
fn pattern_accepts(pat: &str, s: &str) -> bool {
    let o = Command::new("python3")
        .args([
            "-c",
            "import re,sys; sys.exit(0 if re.fullmatch(sys.argv[1], sys.argv[2]) else 1)",
            pat,
            s,
        ])
        .output()
        .expect("python3");
    o.status.success()
}

#[test]
fn instance_types_are_x86_64_only_and_well_formed() {
    let arm = |family: &str| {
        // Graviton families carry a g after the generation digit: t4g, c6gn, m7g, r8g ...
        let rest = family.trim_start_matches(|c: char| c.is_ascii_lowercase());
        let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
        rest.starts_with('g')
    };
    let mut seen = 0;
    for t in both() {
        for (k, p) in t.section("Parameters") {
            let k = scalar(k);
            if !k.ends_with("InstanceType") {
                continue;
            }
            for v in p["AllowedValues"].as_sequence().unwrap() {
                let v = scalar(v);
                let (family, size) = v.split_once('.').unwrap_or_else(|| panic!("{k}: {v}"));
                let ok_family = family.len() >= 2
                    && family.starts_with(|c: char| c.is_ascii_lowercase())
                    && family.chars().any(|c| c.is_ascii_digit())
                    && family.chars().all(|c| c.is_ascii_alphanumeric());
                let sizes = ["nano", "micro", "small", "medium", "large", "metal"];
                let ok_size = sizes.contains(&size)
                    || size
                        .strip_suffix("xlarge")
                        .is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()));
                assert!(
                    ok_family && ok_size,
                    "{}: {k}: {v} is not an instance type",
                    t.name
                );
                assert!(!arm(family), "{}: {k}: {v} is arm64 (no package)", t.name);
                if k != "RouterInstanceType" && k != "ManagementInstanceType" {
                    assert_eq!(size, "metal", "{k}: {v}: KVM needs bare metal");
                }
                seen += 1;
            }
        }
    }
    assert!(seen > 20);
    assert!(arm("t4g") && arm("c6gn") && !arm("c6i") && !arm("m5zn") && !arm("z1d"));
}

/// (template, launch template id, the instance or group that uses it, its overlay:role).
fn user_data_users(t: &Template, s: &Stack) -> Vec<(String, String, String)> {
    let mut v = Vec::new();
    for (id, r) in t.resources() {
        let ty = r.get("Type").map(scalar).unwrap_or_default();
        if ty != "AWS::EC2::Instance" && ty != "AWS::AutoScaling::AutoScalingGroup" {
            continue;
        }
        if id.starts_with("Fn::ForEach") || !t.exists(&id, s) {
            continue;
        }
        let p = props(t, &id, s);
        let lt = scalar(&p["LaunchTemplate"]["LaunchTemplateId"]);
        v.push((lt.trim_start_matches("ref:").to_string(), id, role_of(&p)));
    }
    v
}

const COMMON: &str = "# --- common part";

#[test]
fn user_data_is_one_script_for_every_role_and_shellcheck_clean() {
    let mut commons = BTreeMap::new();
    for (t, ha, evpn) in variants() {
        let s = variant_stack(&t, ha, evpn);
        for (lt, user, role) in user_data_users(&t, &s) {
            let p = props(&t, &lt, &s);
            let ud = scalar(&p["LaunchTemplateData"]["UserData"]);
            assert!(ud.starts_with("#!/bin/bash\n"), "{lt}");
            let (head, common) = ud
                .split_once(COMMON)
                .unwrap_or_else(|| panic!("{lt}: no {COMMON:?} line"));
            commons.insert(
                format!("{}:{lt}:ha={ha}:evpn={evpn}", t.name),
                common.to_string(),
            );
            // the role's lines: who it is, which resource it signals, overlayd's configuration
            let var = |name: &str| {
                head.lines()
                    .find_map(|l| l.strip_prefix(&format!("{name}=")))
                    .unwrap_or_else(|| panic!("{lt}: no {name}="))
                    .trim_matches('\'')
                    .to_string()
            };
            assert_eq!(var("role"), role, "{lt}");
            assert_eq!(var("resource"), user, "{lt}");
            assert_eq!(var("stack"), "parity-stack");
            assert_eq!(var("install_cloudstack"), t.default("InstallCloudStack"));
            let toml_text = head
                .split_once("overlayd_toml='")
                .and_then(|(_, r)| r.split_once("'\n"))
                .map(|(x, _)| x)
                .unwrap_or_else(|| panic!("{lt}: no overlayd_toml"));
            let conf: toml::Value = toml::from_str(toml_text)
                .unwrap_or_else(|e| panic!("{lt}: overlayd.toml: {e}\n{toml_text}"));
            assert_eq!(conf["role"].as_str(), Some(role.as_str()), "{lt}");
            if role != "standalone" {
                assert_eq!(conf["cluster"].as_str(), Some(CLUSTER), "{lt}");
                if evpn {
                    assert_eq!(conf["flood"].as_str(), Some("evpn"), "{lt}");
                    assert!(conf.get("group").is_none(), "{lt}: {conf}");
                } else {
                    assert_eq!(conf["group"].as_str(), Some("239.255.0.1"), "{lt}");
                    assert!(conf.get("flood").is_none(), "{lt}: {conf}");
                }
            }
            if role == "host" {
                assert_eq!(
                    conf["address"].as_str(),
                    Some("auto"),
                    "{lt}: one user-data for all"
                );
            }
            if let Some(report) = cfn::shellcheck(&format!("{lt}.sh"), &ud) {
                panic!("{}: {lt}'s rendered user-data:\n{report}", t.name);
            }
        }
    }
    assert_eq!(
        commons.len(),
        4 + 4 + 3 + 4,
        "router, management, hosts, standalone; RouterHa: both routers, management, hosts; \
         the same with Flood=evpn: {:?}",
        commons.keys()
    );
    let first = commons.values().next().unwrap().clone();
    for (k, c) in &commons {
        assert_eq!(c, &first, "{k}: the common part differs");
    }
}

/// overlayd.toml of a launch template's rendered user-data (the head's `overlayd_toml='...'`).
fn rendered_toml(t: &Template, s: &Stack, lt: &str) -> (String, toml::Value) {
    let p = props(t, lt, s);
    let ud = scalar(&p["LaunchTemplateData"]["UserData"]);
    let text = ud
        .split_once("overlayd_toml='")
        .and_then(|(_, r)| r.split_once("'\n"))
        .map(|(x, _)| x.to_string())
        .unwrap_or_else(|| panic!("{lt}: no overlayd_toml"));
    let conf = toml::from_str(&text).unwrap_or_else(|e| panic!("{lt}: {e}\n{text}"));
    (ud, conf)
}

/// RouterHa's resources: the second router and everything of the second subnet.
const HA_ONLY: [&str; 5] = [
    "MulticastAssociation2",
    "MountTarget2",
    "RouterInterface2",
    "Router2LaunchTemplate",
    "Router2",
];

#[test]
fn router_ha_renders_two_routers_naming_each_other_across_two_subnets() {
    let t = cfn::load("cluster.yaml");
    let s = ha_stack(&t);
    for id in HA_ONLY {
        assert!(t.exists(id, &s), "{id}");
    }
    let vip = t.default("RouterOverlayIp");
    let (r1, r2) = (t.default("Router1OverlayIp"), t.default("Router2OverlayIp"));
    let prefix = t
        .default("OverlayCidr")
        .split_once('/')
        .unwrap()
        .1
        .to_string();
    // each router: its own address, the other as ha_peer, the VIP; router 1 wins the first election
    for (lt, me, peer, priority) in [
        ("RouterLaunchTemplate", &r1, &r2, Some(110)),
        ("Router2LaunchTemplate", &r2, &r1, None),
    ] {
        let (_, c) = rendered_toml(&t, &s, lt);
        assert_eq!(c["role"].as_str(), Some("router"), "{lt}");
        assert_eq!(
            c["address"].as_str(),
            Some(format!("{me}/{prefix}").as_str()),
            "{lt}"
        );
        assert_eq!(c["ha_peer"].as_str(), Some(peer.as_str()), "{lt}");
        assert_eq!(c["ha_vip"].as_str(), Some(vip.as_str()), "{lt}");
        assert_eq!(
            c.get("ha_priority").and_then(|p| p.as_integer()),
            priority,
            "{lt}"
        );
        assert_eq!(c["nat"].as_bool(), Some(true), "{lt}");
    }
    assert!(r1 != r2 && r1 != vip && r2 != vip);
    // the hosts and the management server route through the VIP
    for lt in ["HostLaunchTemplate", "ManagementLaunchTemplate"] {
        let (_, c) = rendered_toml(&t, &s, lt);
        assert_eq!(c["gateway"].as_str(), Some(vip.as_str()), "{lt}");
    }
    // the second router: own ENI in the second subnet, source/dest check off, router 2's template
    let eni = props(&t, "RouterInterface2", &s);
    assert_eq!(eni["SourceDestCheck"], Value::Bool(false));
    assert_eq!(scalar(&eni["SubnetId"]), SUBNET2);
    assert_eq!(
        eni["GroupSet"],
        props(&t, "RouterInterface", &s)["GroupSet"]
    );
    let r = props(&t, "Router2", &s);
    assert_eq!(
        scalar(&r["NetworkInterfaces"][0]["NetworkInterfaceId"]),
        "ref:RouterInterface2"
    );
    assert_eq!(
        scalar(&r["LaunchTemplate"]["LaunchTemplateId"]),
        "ref:Router2LaunchTemplate"
    );
    let lt2 = props(&t, "Router2LaunchTemplate", &s);
    assert_eq!(
        lt2["LaunchTemplateData"]["IamInstanceProfile"],
        props(&t, "RouterLaunchTemplate", &s)["LaunchTemplateData"]["IamInstanceProfile"],
        "one router role for both"
    );
    // both subnets: TGW attachment and multicast association, EFS mount targets, the hosts
    let both_subnets = Value::Sequence(vec!["subnet-0123abcd".into(), SUBNET2.into()]);
    assert_eq!(
        props(&t, "TransitGatewayAttachment", &s)["SubnetIds"],
        both_subnets
    );
    for (id, subnet) in [
        ("MulticastAssociation", "subnet-0123abcd"),
        ("MulticastAssociation2", SUBNET2),
        ("MountTarget", "subnet-0123abcd"),
        ("MountTarget2", SUBNET2),
    ] {
        assert_eq!(scalar(&props(&t, id, &s)["SubnetId"]), subnet, "{id}");
    }
    let assoc = props(&t, "MulticastAssociation2", &s);
    assert_eq!(
        scalar(&assoc["TransitGatewayAttachmentId"]),
        "ref:TransitGatewayAttachment"
    );
    assert_eq!(
        props(&t, "MountTarget2", &s)["SecurityGroups"],
        props(&t, "MountTarget", &s)["SecurityGroups"]
    );
    assert_eq!(props(&t, "Hosts", &s)["VPCZoneIdentifier"], both_subnets);
    // the routes still start at router 1 (the active router moves them)
    for r in cfn::expand_foreach(&t, &s).values() {
        assert_eq!(
            scalar(&r["Properties"]["NetworkInterfaceId"]),
            "ref:RouterInterface"
        );
    }
    let outputs = t.section("Outputs");
    for (k, want) in [
        ("Router2InstanceId", "ref:Router2"),
        ("RouterVip", vip.as_str()),
    ] {
        assert_eq!(scalar(&outputs[k]["Condition"]), "HasRouterHa", "{k}");
        assert_eq!(eval_str(&outputs[k]["Value"], &s), want, "{k}");
    }
}

/// RouterHa's hosts (two subnets): overlay network + the offset in the VPC, computed by the
/// host head before overlayd.toml is written (IMDS stubbed), so equal offsets in the two
/// subnets never collide; and without RouterHa the head is the single-AZ one (address auto).
#[test]
fn router_ha_hosts_take_their_vpc_offset_and_never_collide() {
    let t = cfn::load("cluster.yaml");
    let s = ha_stack(&t);
    let (ud, _) = rendered_toml(&t, &s, "HostLaunchTemplate");
    let head = ud.split_once(COMMON).unwrap().0;
    let run = |ip: &str| -> String {
        let script = format!(
            "curl() {{ case \"$*\" in *api/token*) echo token ;; *local-ipv4*) echo {ip} ;; *) return 22 ;; esac; }}\n{head}\nprintf '%s' \"$overlayd_toml\"\n"
        );
        let o = Command::new("bash")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let conf: toml::Value = toml::from_str(&String::from_utf8_lossy(&o.stdout)).unwrap();
        conf["address"].as_str().unwrap().to_string()
    };
    // VpcCidr 10.0.0.0/16, OverlayCidr 10.101.0.0/16 (the defaults)
    assert_eq!(run("10.0.1.57"), "10.101.1.57/16");
    assert_eq!(run("10.0.2.57"), "10.101.2.57/16");
    assert_eq!(run("10.0.2.4"), "10.101.2.4/16");
    let fixed = [
        t.default("RouterOverlayIp"),
        t.default("Router1OverlayIp"),
        t.default("Router2OverlayIp"),
        t.default("ManagementOverlayIp"),
    ];
    for ip in ["10.0.1.4", "10.0.1.254", "10.0.2.4", "10.0.2.254"] {
        let a = run(ip);
        assert!(
            !fixed.iter().any(|f| a.starts_with(&format!("{f}/"))),
            "{ip} -> {a}"
        );
    }
    // without IMDS the address is invalid, so that `overlayd validate` fails (no silent auto)
    let o = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "curl() {{ return 7; }}\n{head}\nprintf '%s' \"$overlayd_toml\"\n"
        ))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("address = \"no-local-ipv4-from-imds\""));

    let single = stack(&t);
    let (ud, c) = rendered_toml(&t, &single, "HostLaunchTemplate");
    assert_eq!(c["address"].as_str(), Some("auto"));
    assert!(
        !ud.contains("ipnum"),
        "single-AZ hosts: no VPC offset block"
    );
    assert!(ud.contains(&format!("cluster = \"{CLUSTER}\"'\n{COMMON}")));
}

#[test]
fn single_az_default_has_no_second_router_and_renders_as_before() {
    let t = cfn::load("cluster.yaml");
    assert_eq!(t.default("RouterHa"), "false");
    assert_eq!(t.default("SecondOverlaySubnetId"), "");
    let s = stack(&t);
    for id in HA_ONLY {
        assert!(!t.exists(id, &s), "{id} exists without RouterHa");
    }
    let (ud, c) = rendered_toml(&t, &s, "RouterLaunchTemplate");
    let router_ip = t.default("RouterOverlayIp");
    assert_eq!(
        c["address"].as_str(),
        Some(format!("{router_ip}/16").as_str())
    );
    assert!(
        c.as_table().unwrap().keys().all(|k| !k.starts_with("ha_")),
        "no ha_* keys: {c}"
    );
    assert!(ud.contains("nat_exceptions = [\"10.0.0.0/16\"]'\n"));
    for lt in ["HostLaunchTemplate", "ManagementLaunchTemplate"] {
        let (_, c) = rendered_toml(&t, &s, lt);
        assert_eq!(c["gateway"].as_str(), Some(router_ip.as_str()), "{lt}");
    }
    let one = Value::Sequence(vec!["subnet-0123abcd".into()]);
    assert_eq!(props(&t, "TransitGatewayAttachment", &s)["SubnetIds"], one);
    assert_eq!(props(&t, "Hosts", &s)["VPCZoneIdentifier"], one);
    let vtep = props(&t, "VtepSecurityGroup", &s);
    assert_eq!(vtep["SecurityGroupIngress"].as_sequence().unwrap().len(), 2);
}

/// The transit gateway chain (multicast only).
const MULTICAST_ONLY: [&str; 5] = [
    "TransitGateway",
    "TransitGatewayAttachment",
    "MulticastDomain",
    "MulticastAssociation",
    "MulticastAssociation2",
];

/// Flood=evpn: no transit gateway chain (nor its outputs), no IGMP rule, TCP 179 from each
/// overlay subnet; every node's overlayd.toml has flood = "evpn", the route reflectors (the
/// routers' ENI addresses) and evpn_asn instead of the group, the routers also evpn_listen; the
/// instances still start from router 1's ENI and both subnets. The default stays multicast.
#[test]
fn evpn_renders_reflectors_instead_of_the_multicast_chain() {
    let t = cfn::load("cluster.yaml");
    assert_eq!(t.default("Flood"), "multicast");
    let allowed: Vec<String> = t.parameter("Flood")["AllowedValues"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(scalar)
        .collect();
    assert_eq!(allowed, ["multicast", "evpn"]);
    let asn = t.parameter("EvpnAsn");
    assert_eq!(
        (scalar(&asn["Type"]), t.default("EvpnAsn")),
        ("Number".into(), "65000".into())
    );
    assert_eq!(
        (scalar(&asn["MinValue"]), scalar(&asn["MaxValue"])),
        ("64512".into(), "65534".into()),
        "private 16-bit ASNs"
    );
    let r1 = "PrimaryPrivateIpAddress:RouterInterface";
    let r2 = "PrimaryPrivateIpAddress:RouterInterface2";
    for ha in [false, true] {
        let s = evpn_stack(&t, ha);
        for id in MULTICAST_ONLY {
            assert!(!t.exists(id, &s), "{id} with Flood=evpn (ha {ha})");
        }
        for id in [
            "RouterInterface2",
            "Router2LaunchTemplate",
            "Router2",
            "MountTarget2",
        ] {
            assert_eq!(t.exists(id, &s), ha, "{id} (ha {ha})");
        }
        let outputs = t.section("Outputs");
        for k in ["TransitGatewayId", "MulticastDomainId"] {
            let c = scalar(&outputs[k]["Condition"]);
            assert!(!s.conditions[&c], "{k} with Flood=evpn");
        }
        // the vtep group: VXLAN and BGP from each subnet, no IGMP
        let subnets: Vec<&str> = if ha {
            vec!["10.0.1.0/24", SUBNET2_CIDR]
        } else {
            vec!["10.0.1.0/24"]
        };
        let vtep = perms(&props(&t, "VtepSecurityGroup", &s));
        let mut want: Vec<Perm> = subnets
            .iter()
            .flat_map(|c| {
                [
                    Perm::new(
                        "udp",
                        4789,
                        4789,
                        Source::Cidr(c.to_string()),
                        "VXLAN from overlay nodes",
                    ),
                    Perm::new(
                        "tcp",
                        179,
                        179,
                        Source::Cidr(c.to_string()),
                        "BGP EVPN between overlay nodes",
                    ),
                ]
            })
            .collect();
        want.sort();
        assert_eq!(vtep, want, "ha {ha}");
        assert!(vtep
            .iter()
            .all(|p| p.why == "VXLAN from overlay nodes"
                || p.why == "BGP EVPN between overlay nodes"));
        // overlayd.toml of every node
        let reflectors: Vec<&str> = if ha { vec![r1, r2] } else { vec![r1] };
        let mut lts = vec![
            "RouterLaunchTemplate",
            "ManagementLaunchTemplate",
            "HostLaunchTemplate",
        ];
        if ha {
            lts.push("Router2LaunchTemplate");
        }
        for lt in lts {
            let (ud, c) = rendered_toml(&t, &s, lt);
            let strs = |k: &str| -> Option<Vec<String>> {
                c.get(k).map(|v| {
                    v.as_array()
                        .unwrap_or_else(|| panic!("{lt}: {k} is not a list"))
                        .iter()
                        .map(|x| x.as_str().unwrap().to_string())
                        .collect()
                })
            };
            assert_eq!(c["flood"].as_str(), Some("evpn"), "{lt}");
            assert!(c.get("group").is_none() && !ud.contains("239.255."), "{lt}");
            assert_eq!(strs("evpn_reflectors").unwrap(), reflectors, "{lt}");
            assert_eq!(c["evpn_asn"].as_integer(), Some(65000), "{lt}");
            let router = lt.starts_with("Router");
            assert_eq!(
                strs("evpn_listen"),
                router.then(|| subnets.iter().map(|x| x.to_string()).collect()),
                "{lt}"
            );
            assert_eq!(c["cluster"].as_str(), Some(CLUSTER), "{lt}");
        }
        // the instances: router 1's ENI, hosts in both subnets, nothing waiting for a domain
        assert_eq!(
            scalar(&props(&t, "Router", &s)["NetworkInterfaces"][0]["NetworkInterfaceId"]),
            "ref:RouterInterface"
        );
        let zones: Vec<String> = props(&t, "Hosts", &s)["VPCZoneIdentifier"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(scalar)
            .collect();
        assert_eq!(zones.len(), if ha { 2 } else { 1 });
        for id in ["Router", "Router2", "Management", "Hosts"] {
            let deps = t.resource(id).get("DependsOn").cloned();
            let named: Vec<String> = match deps {
                None => vec![],
                Some(Value::String(d)) => vec![d],
                Some(Value::Sequence(v)) => v.iter().map(scalar).collect(),
                Some(other) => panic!("{id}: DependsOn {other:?}"),
            };
            for d in named {
                assert!(
                    t.resource(&d).get("Condition").is_none(),
                    "{id} DependsOn the conditional {d}: CloudFormation refuses it"
                );
            }
        }
    }
    // another private ASN is rendered as given
    let mut s = evpn_stack(&t, false);
    s.set("EvpnAsn", "64600");
    let (_, c) = rendered_toml(&t, &s, "HostLaunchTemplate");
    assert_eq!(c["evpn_asn"].as_integer(), Some(64600));
    // multicast (the default) keeps the chain and renders the group, no evpn key
    for s in [stack(&t), ha_stack(&t)] {
        for id in MULTICAST_ONLY {
            let ha = s.values["RouterHa"].as_str() == Some("true");
            assert_eq!(
                t.exists(id, &s),
                ha || id != "MulticastAssociation2",
                "{id}"
            );
        }
        for lt in [
            "RouterLaunchTemplate",
            "ManagementLaunchTemplate",
            "HostLaunchTemplate",
        ] {
            let (_, c) = rendered_toml(&t, &s, lt);
            assert_eq!(c["group"].as_str(), Some("239.255.0.1"), "{lt}");
            assert!(
                c.as_table()
                    .unwrap()
                    .keys()
                    .all(|k| !k.starts_with("evpn_") && k != "flood"),
                "{lt}: {c}"
            );
        }
        let vtep = perms(&props(&t, "VtepSecurityGroup", &s));
        assert!(vtep.iter().any(|p| p.proto == "2"));
        assert!(vtep.iter().all(|p| p.from != 179));
    }
}
