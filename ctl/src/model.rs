//! Pure domain logic: desired security-group rules, diffs, route decisions, DB settings.
//! No SDK calls here, so everything is unit-tested.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::Flood;

/// Security-group roles, in creation order (groups referenced by others first).
pub const SG_ROLES: [&str; 5] = ["vtep", "router", "mgmt", "efs", "db"];

pub const VXLAN_PORT: i32 = 4789;
/// BGP (iBGP between the nodes' FRR speakers and the route reflectors, flood = evpn).
pub const BGP_PORT: i32 = 179;

/// Source of an ingress rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    Cidr(String),
    Group(String),
}

/// One ingress permission, normalised (protocol as a number string, ports -1 when unused).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Perm {
    pub proto: String,
    pub from: i32,
    pub to: i32,
    pub source: Source,
    pub why: String,
}

impl Perm {
    pub fn new(proto: &str, from: i32, to: i32, source: Source, why: &str) -> Self {
        let proto = norm_proto(proto);
        let (from, to) = if uses_ports(&proto) {
            (from, to)
        } else {
            (-1, -1)
        };
        Perm {
            proto,
            from,
            to,
            source,
            why: why.to_string(),
        }
    }
    /// The identity used to compare rules (without the description).
    pub fn key(&self) -> (String, i32, i32, Source) {
        (self.proto.clone(), self.from, self.to, self.source.clone())
    }
    pub fn describe(&self) -> String {
        let p = match self.proto.as_str() {
            "6" => "tcp",
            "17" => "udp",
            "2" => "igmp",
            "-1" => "all",
            o => o,
        };
        let src = match &self.source {
            Source::Cidr(c) => c.clone(),
            Source::Group(g) => g.clone(),
        };
        if self.from == -1 {
            format!("{p} from {src}")
        } else if self.from == self.to {
            format!("{p}/{} from {src}", self.from)
        } else {
            format!("{p}/{}-{} from {src}", self.from, self.to)
        }
    }
}

pub fn norm_proto(p: &str) -> String {
    match p.to_ascii_lowercase().as_str() {
        "tcp" => "6".into(),
        "udp" => "17".into(),
        "icmp" => "1".into(),
        "igmp" => "2".into(),
        "all" => "-1".into(),
        other => other.into(),
    }
}

fn uses_ports(proto: &str) -> bool {
    matches!(proto, "6" | "17" | "1")
}

/// What the rules of the groups refer to.
#[derive(Debug, Clone)]
pub struct RuleInputs {
    pub subnet_cidr: String,
    pub access_cidr: String,
    pub overlay_cidr: String,
    /// role -> group id, for groups that exist (or will, in apply mode).
    pub group_ids: BTreeMap<String, String>,
    /// Multicast flooding needs the transit gateway's IGMP queries let in; evpn flooding needs
    /// BGP between the nodes.
    pub flood: Flood,
}

/// Desired ingress of a role's group. Group references to groups that do not exist yet are
/// left out (plan mode); they are added once the group exists.
pub fn desired_rules(role: &str, inp: &RuleInputs) -> Vec<Perm> {
    let cidr = |c: &str| Source::Cidr(c.to_string());
    let group = |r: &str| inp.group_ids.get(r).map(|g| Source::Group(g.clone()));
    let mut v = Vec::new();
    match role {
        "vtep" => {
            // The TGW's IGMP queries come from 0.0.0.0; AWS needs this exact rule. Unicast
            // flooding has no transit gateway, so nothing sends them and the rule goes.
            if inp.flood.needs_multicast_domain() {
                v.push(Perm::new(
                    "2",
                    -1,
                    -1,
                    cidr("0.0.0.0/32"),
                    "IGMP queries from the transit gateway",
                ));
            }
            // Multicast VXLAN: AWS ignores SG references for multicast, so the subnet CIDR.
            // Unicast flooding (head-end replication) reaches the same peers in the subnet.
            v.push(Perm::new(
                "udp",
                VXLAN_PORT,
                VXLAN_PORT,
                cidr(&inp.subnet_cidr),
                "VXLAN from overlay nodes",
            ));
            // EVPN: every node's BGP speaker peers with the route reflector(s) on the
            // router(s), all in the vtep group; scoped like VXLAN, from the subnet CIDR.
            if inp.flood.needs_bgp() {
                v.push(Perm::new(
                    "tcp",
                    BGP_PORT,
                    BGP_PORT,
                    cidr(&inp.subnet_cidr),
                    "BGP EVPN between overlay nodes",
                ));
            }
        }
        "router" => {
            for (port, why) in [
                (8080, "CloudStack UI/API"),
                (443, "HTTPS services"),
                (80, "HTTP services"),
            ] {
                v.push(Perm::new("tcp", port, port, cidr(&inp.access_cidr), why));
            }
        }
        "mgmt" => {
            v.push(Perm::new(
                "tcp",
                8080,
                8080,
                cidr(&inp.subnet_cidr),
                "CloudStack API via the router",
            ));
            v.push(Perm::new(
                "tcp",
                8250,
                8250,
                cidr(&inp.subnet_cidr),
                "CloudStack agents",
            ));
            v.push(Perm::new(
                "tcp",
                8250,
                8250,
                cidr(&inp.overlay_cidr),
                "system VM agents",
            ));
        }
        "efs" => {
            for r in ["vtep", "mgmt"] {
                if let Some(g) = group(r) {
                    v.push(Perm::new(
                        "tcp",
                        2049,
                        2049,
                        g,
                        &format!("NFS from {r} nodes"),
                    ));
                }
            }
            v.push(Perm::new(
                "tcp",
                2049,
                2049,
                cidr(&inp.overlay_cidr),
                "NFS from CloudStack public range",
            ));
        }
        "db" => {
            if let Some(g) = group("mgmt") {
                v.push(Perm::new(
                    "tcp",
                    3306,
                    3306,
                    g,
                    "MySQL from management servers",
                ));
            }
        }
        _ => {}
    }
    v
}

/// [`desired_rules`] of a cluster with several overlay subnets (one per AZ): every rule that
/// names the subnet CIDR once per subnet in `subnet_cidrs`, the others once. Empty
/// `subnet_cidrs`: `inp.subnet_cidr` alone.
pub fn desired_rules_for_subnets(
    role: &str,
    inp: &RuleInputs,
    subnet_cidrs: &[String],
) -> Vec<Perm> {
    let cidrs: Vec<String> = if subnet_cidrs.is_empty() {
        vec![inp.subnet_cidr.clone()]
    } else {
        subnet_cidrs.to_vec()
    };
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for c in cidrs {
        let one = RuleInputs {
            subnet_cidr: c,
            ..inp.clone()
        };
        for p in desired_rules(role, &one) {
            if seen.insert(p.key()) {
                out.push(p);
            }
        }
    }
    out
}

/// (missing, extra) rules: what to authorize and what to revoke.
pub fn diff_rules(desired: &[Perm], observed: &[Perm]) -> (Vec<Perm>, Vec<Perm>) {
    let have: BTreeSet<_> = observed.iter().map(Perm::key).collect();
    let want: BTreeSet<_> = desired.iter().map(Perm::key).collect();
    let missing = desired
        .iter()
        .filter(|p| !have.contains(&p.key()))
        .cloned()
        .collect();
    let extra = observed
        .iter()
        .filter(|p| !want.contains(&p.key()))
        .cloned()
        .collect();
    (missing, extra)
}

/// Target of an existing route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTarget {
    pub eni: Option<String>,
    pub other: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteAction {
    /// The route points at the router whose ENI is the n-th of `router_enis`.
    Keep(usize),
    Create,
    /// Replace, saying what the route pointed at before.
    Replace(String),
}

/// What the overlay route of one table needs. `router_enis`: the routers' ENIs, the first
/// being where new and replaced routes point; a route at any of them is kept (with a router
/// pair, the standby moves the route to itself on failover, and a re-run must not undo that).
pub fn route_action(existing: Option<&RouteTarget>, router_enis: &[&str]) -> RouteAction {
    let at = |t: &RouteTarget| {
        t.eni
            .as_deref()
            .and_then(|e| router_enis.iter().position(|r| !r.is_empty() && *r == e))
    };
    match existing {
        None => RouteAction::Create,
        Some(t) if at(t).is_some() => RouteAction::Keep(at(t).unwrap_or(0)),
        Some(t) => RouteAction::Replace(
            t.eni
                .clone()
                .or_else(|| t.other.clone())
                .unwrap_or_else(|| "blackhole".to_string()),
        ),
    }
}

/// A MySQL major version as RDS offers it, and what overlayctl derives from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MysqlMajor {
    /// `EngineVersion` overlayctl sends to `CreateDBInstance`: the major alone, so RDS picks its
    /// current default minor version (a pinned minor is refused once RDS deprecates it).
    pub engine_version: &'static str,
    /// `DBParameterGroupFamily` of the cluster's parameter group.
    pub family: &'static str,
    /// The parameter group is `overlay-<name>-<suffix>` (config.rs `db_parameter_group`).
    pub name_suffix: &'static str,
    /// A full `major.minor` for templates: cfn-lint 1.x (E3691) accepts only full versions for
    /// `AWS::RDS::DBInstance` `EngineVersion` and warns (W3691) on deprecated minors; this one
    /// passes cfn-lint 1.58 without either.
    pub cfn_engine_version: &'static str,
    /// The day RDS standard support ends (or ended): after it, RDS Extended Support bills the
    /// instance per vCPU-hour. None while no end date is near.
    pub standard_support_ends: Option<&'static str>,
}

/// RDS for MySQL 8.0: standard support ended 2026-07-31.
pub const MYSQL_8_0: MysqlMajor = MysqlMajor {
    engine_version: "8.0",
    family: "mysql8.0",
    name_suffix: "mysql80",
    cfn_engine_version: "8.0.46",
    standard_support_ends: Some("2026-07-31"),
};

/// RDS for MySQL 8.4 (LTS).
pub const MYSQL_8_4: MysqlMajor = MysqlMajor {
    engine_version: "8.4",
    family: "mysql8.4",
    name_suffix: "mysql84",
    cfn_engine_version: "8.4.11",
    standard_support_ends: None,
};

/// Every major overlayctl has created instances with, oldest first (teardown removes the
/// parameter group of each; an existing instance keeps its major, see [`db_mysql_for`]).
pub const MYSQL_MAJORS: [MysqlMajor; 2] = [MYSQL_8_0, MYSQL_8_4];

/// The CloudStack release the product targets (the 4.22 LTS line).
pub const CLOUDSTACK_RELEASE: &str = "4.22";

/// The decision: the newest MySQL major the CloudStack release supports. CloudStack 4.22's
/// compatibility matrix lists MySQL 8.4 (4.20's lists 8.0 only); RDS MySQL 8.0 left standard
/// support on 2026-07-31. To go back to 8.0 set this to [`MYSQL_8_0`]: names, family, version and
/// the cost note in plan/bootstrap follow.
pub const DB_MYSQL: MysqlMajor = MYSQL_8_4;

/// `Engine` of the DB instance.
pub const DB_ENGINE: &str = "mysql";
/// `EngineVersion` overlayctl creates the DB instance with (major only).
pub const DB_ENGINE_VERSION: &str = DB_MYSQL.engine_version;
/// A full version of the same major for CloudFormation (see [`MysqlMajor::cfn_engine_version`]).
pub const DB_ENGINE_VERSION_CFN: &str = DB_MYSQL.cfn_engine_version;
/// `DBParameterGroupFamily` of the parameter group.
pub const DB_PARAMETER_GROUP_FAMILY: &str = DB_MYSQL.family;
/// Suffix of the parameter group's name, `overlay-<name>-<suffix>`.
pub const DB_PARAMETER_GROUP_SUFFIX: &str = DB_MYSQL.name_suffix;

/// "8.0.42" -> "8.0"; None for anything that is not `<digits>.<digits>[...]`.
pub fn engine_major(version: &str) -> Option<String> {
    let mut it = version.split('.');
    let (a, b) = (it.next()?, it.next()?);
    let b: String = b.chars().take_while(|c| c.is_ascii_digit()).collect();
    if a.is_empty() || b.is_empty() || !a.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some(format!("{a}.{b}"))
}

/// The major whose parameter group and settings apply to the cluster's DB instance: an existing
/// instance keeps the major it runs (a major version upgrade is a downtime the operator
/// schedules, never a side effect of a re-run); a new one gets [`DB_MYSQL`].
pub fn db_mysql_for(existing_engine_version: Option<&str>) -> MysqlMajor {
    existing_engine_version
        .and_then(engine_major)
        .and_then(|m| MYSQL_MAJORS.into_iter().find(|k| k.engine_version == m))
        .unwrap_or(DB_MYSQL)
}

/// The cost line of plan / status / bootstrap for a DB on `m` (None when it is in RDS standard
/// support): RDS Extended Support bills it per vCPU-hour, and why the product uses it anyway.
pub fn db_cost_note(m: &MysqlMajor) -> Option<String> {
    cost_note(m, &DB_MYSQL)
}

/// [`db_cost_note`] with the decision `decided` as a parameter (so both wordings are tested).
fn cost_note(m: &MysqlMajor, decided: &MysqlMajor) -> Option<String> {
    let ends = m.standard_support_ends?;
    let newer = MYSQL_MAJORS
        .iter()
        .rev()
        .find(|k| k.standard_support_ends.is_none())
        .map(|k| k.engine_version)
        .unwrap_or("a newer major");
    let why = if m == decided {
        format!("CloudStack {CLOUDSTACK_RELEASE} does not list {newer}")
    } else {
        format!(
            "the instance predates the switch; CloudStack {CLOUDSTACK_RELEASE} lists {} \
             (major version upgrade: aws rds modify-db-instance --engine-version {}.<minor> \
             --allow-major-version-upgrade, then bootstrap again)",
            decided.engine_version, decided.engine_version
        )
    };
    Some(format!(
        "RDS MySQL {} is in RDS Extended Support since {ends} (billed per vCPU-hour); {why}",
        m.engine_version
    ))
}

/// Length of the generated DB passwords (both secrets).
pub const PASSWORD_LEN: usize = 32;

/// The characters of the generated DB passwords: ASCII letters and digits, nothing else (RDS
/// refuses `/`, `@`, `"` and space in a master password; letters and digits also survive every
/// shell, URL and properties file unquoted). A CloudFormation `GenerateSecretString` with
/// `ExcludePunctuation: true` and `IncludeSpace: false` draws from the same set.
pub const PASSWORD_ALPHABET: &str =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// CloudStack's MySQL settings for the DB parameter group: (name, value, static?).
pub const DB_PARAMETERS: [(&str, &str, bool); 4] = [
    ("innodb_rollback_on_timeout", "1", true),
    ("innodb_lock_wait_timeout", "600", false),
    ("max_connections", "350", false),
    ("binlog_format", "ROW", false),
];

/// Parameters whose value differs from what CloudStack needs.
pub fn param_changes(
    observed: &BTreeMap<String, String>,
) -> Vec<(&'static str, &'static str, bool)> {
    DB_PARAMETERS
        .iter()
        .filter(|(n, v, _)| observed.get(*n).map(String::as_str) != Some(*v))
        .copied()
        .collect()
}

/// The settings of the DB instance that overlayctl manages.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DbSettings {
    pub class: String,
    pub storage_gib: i32,
    pub max_storage_gib: i32,
    pub parameter_group: String,
    pub security_groups: BTreeSet<String>,
}

/// Human-readable differences (empty when converged). Storage only grows.
pub fn db_changes(want: &DbSettings, have: &DbSettings) -> Vec<String> {
    let mut out = Vec::new();
    if want.class != have.class {
        out.push(format!("class {} -> {}", have.class, want.class));
    }
    if want.storage_gib > have.storage_gib {
        out.push(format!(
            "storage {} -> {} GiB",
            have.storage_gib, want.storage_gib
        ));
    }
    if want.max_storage_gib != have.max_storage_gib {
        out.push(format!(
            "max storage {} -> {} GiB",
            have.max_storage_gib, want.max_storage_gib
        ));
    }
    if want.parameter_group != have.parameter_group {
        out.push(format!(
            "parameter group {} -> {}",
            have.parameter_group, want.parameter_group
        ));
    }
    if want.security_groups != have.security_groups {
        out.push(format!(
            "security groups {:?} -> {:?}",
            have.security_groups, want.security_groups
        ));
    }
    out
}

/// Generates a password of `len` characters of [`PASSWORD_ALPHABET`] from the OS CSPRNG.
pub fn generate_password(len: usize) -> anyhow::Result<String> {
    const ALPHABET: &[u8] = PASSWORD_ALPHABET.as_bytes();
    // Rejection sampling keeps the distribution uniform: bytes below the largest multiple of
    // the alphabet size (248 = 4 * 62) map evenly, the rest are drawn again.
    const LIMIT: usize = 256 - 256 % ALPHABET.len();
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        getrandom::fill(&mut buf).map_err(|e| anyhow::anyhow!("OS random generator: {e}"))?;
        for b in buf {
            if (b as usize) < LIMIT && out.len() < len {
                out.push(ALPHABET[b as usize % ALPHABET.len()] as char);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> RuleInputs {
        RuleInputs {
            subnet_cidr: "10.0.1.0/24".into(),
            access_cidr: "203.0.113.0/24".into(),
            overlay_cidr: "100.64.0.0/16".into(),
            group_ids: BTreeMap::new(),
            flood: Flood::Multicast,
        }
    }

    #[test]
    fn rules_naming_the_subnet_cover_every_subnet() {
        let cidrs = ["10.0.1.0/24".to_string(), "10.0.2.0/24".to_string()];
        let srcs = |role: &str, port: i32| -> Vec<Source> {
            desired_rules_for_subnets(role, &inputs(), &cidrs)
                .into_iter()
                .filter(|p| p.from == port)
                .map(|p| p.source)
                .collect()
        };
        let c = |s: &str| Source::Cidr(s.into());
        assert_eq!(srcs("vtep", 4789), [c("10.0.1.0/24"), c("10.0.2.0/24")]);
        assert_eq!(srcs("mgmt", 8080), [c("10.0.1.0/24"), c("10.0.2.0/24")]);
        assert_eq!(
            srcs("mgmt", 8250),
            [c("10.0.1.0/24"), c("100.64.0.0/16"), c("10.0.2.0/24")]
        );
        // the IGMP rule and those without the subnet come once
        let v = desired_rules_for_subnets("vtep", &inputs(), &cidrs);
        assert_eq!(v.iter().filter(|p| p.proto == "2").count(), 1);
        assert_eq!(
            desired_rules_for_subnets("router", &inputs(), &cidrs),
            desired_rules("router", &inputs())
        );
        // one subnet (or none known): desired_rules
        for one in [&cidrs[..1], &[][..]] {
            assert_eq!(
                desired_rules_for_subnets("mgmt", &inputs(), one),
                desired_rules("mgmt", &inputs())
            );
        }
    }

    #[test]
    fn vtep_rules_use_cidrs_not_groups() {
        let r = desired_rules("vtep", &inputs());
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].proto, "2");
        assert_eq!(r[0].source, Source::Cidr("0.0.0.0/32".into()));
        assert_eq!((r[0].from, r[0].to), (-1, -1));
        assert_eq!(r[1].proto, "17");
        assert_eq!((r[1].from, r[1].to), (4789, 4789));
        assert_eq!(r[1].source, Source::Cidr("10.0.1.0/24".into()));
    }

    #[test]
    fn unicast_flooding_keeps_vxlan_from_the_subnet_and_drops_igmp() {
        use crate::config::PeerDiscovery;
        for peer in [PeerDiscovery::Ec2, PeerDiscovery::Static] {
            let inp = RuleInputs {
                flood: Flood::Unicast(peer),
                ..inputs()
            };
            let r = desired_rules("vtep", &inp);
            assert_eq!(r.len(), 1, "{r:?}");
            assert_eq!(r[0].proto, "17");
            assert_eq!((r[0].from, r[0].to), (4789, 4789));
            assert_eq!(r[0].source, Source::Cidr("10.0.1.0/24".into()));
            // the other groups do not depend on the flood mode
            for role in ["router", "mgmt", "efs", "db"] {
                assert_eq!(desired_rules(role, &inp), desired_rules(role, &inputs()));
            }
        }
    }

    #[test]
    fn evpn_flooding_adds_bgp_from_each_subnet_and_drops_igmp() {
        use crate::config::PeerDiscovery;
        let cidrs = ["10.0.1.0/24".to_string(), "10.0.2.0/24".to_string()];
        for peer in [PeerDiscovery::Ec2, PeerDiscovery::Static] {
            let inp = RuleInputs {
                flood: Flood::Evpn(peer),
                ..inputs()
            };
            let r = desired_rules("vtep", &inp);
            assert_eq!(r.len(), 2, "{r:?}");
            assert!(r.iter().all(|p| p.proto != "2"), "no IGMP: {r:?}");
            assert_eq!(
                r[0],
                desired_rules(
                    "vtep",
                    &RuleInputs {
                        flood: Flood::Unicast(peer),
                        ..inputs()
                    }
                )[0]
            );
            assert_eq!(r[1].proto, "6");
            assert_eq!((r[1].from, r[1].to), (BGP_PORT, BGP_PORT));
            assert_eq!(r[1].source, Source::Cidr("10.0.1.0/24".into()));
            assert_eq!(r[1].why, "BGP EVPN between overlay nodes");
            assert_eq!(r[1].describe(), "tcp/179 from 10.0.1.0/24");
            // multi-AZ: from every subnet, like VXLAN
            let srcs = |port: i32| -> Vec<Source> {
                desired_rules_for_subnets("vtep", &inp, &cidrs)
                    .into_iter()
                    .filter(|p| p.from == port)
                    .map(|p| p.source)
                    .collect()
            };
            assert_eq!(srcs(BGP_PORT), srcs(VXLAN_PORT));
            assert_eq!(srcs(BGP_PORT).len(), 2);
            for role in ["router", "mgmt", "efs", "db"] {
                assert_eq!(desired_rules(role, &inp), desired_rules(role, &inputs()));
            }
        }
        // no BGP rule in the other modes
        for flood in [Flood::Multicast, Flood::Unicast(PeerDiscovery::Ec2)] {
            let inp = RuleInputs { flood, ..inputs() };
            assert!(desired_rules("vtep", &inp)
                .iter()
                .all(|p| p.from != BGP_PORT));
        }
    }

    #[test]
    fn group_references_appear_once_groups_exist() {
        let mut inp = inputs();
        assert_eq!(desired_rules("db", &inp).len(), 0);
        assert_eq!(desired_rules("efs", &inp).len(), 1);
        inp.group_ids.insert("mgmt".into(), "sg-m".into());
        inp.group_ids.insert("vtep".into(), "sg-v".into());
        let db = desired_rules("db", &inp);
        assert_eq!(db[0].source, Source::Group("sg-m".into()));
        assert_eq!((db[0].from, db[0].proto.as_str()), (3306, "6"));
        assert_eq!(desired_rules("efs", &inp).len(), 3);
    }

    #[test]
    fn diff_ignores_descriptions_and_protocol_spelling() {
        let want = vec![Perm::new(
            "tcp",
            1,
            1,
            Source::Cidr("1.0.0.0/8".into()),
            "a",
        )];
        let have = vec![
            Perm::new("6", 1, 1, Source::Cidr("1.0.0.0/8".into()), "b"),
            Perm::new("igmp", 5, 5, Source::Cidr("0.0.0.0/32".into()), ""),
        ];
        let (missing, extra) = diff_rules(&want, &have);
        assert!(missing.is_empty());
        assert_eq!(extra.len(), 1);
        assert_eq!((extra[0].from, extra[0].proto.as_str()), (-1, "2"));
    }

    #[test]
    fn routes() {
        assert_eq!(route_action(None, &["eni-1"]), RouteAction::Create);
        let mine = RouteTarget {
            eni: Some("eni-1".into()),
            other: None,
        };
        assert_eq!(route_action(Some(&mine), &["eni-1"]), RouteAction::Keep(0));
        // a router pair: a route at the second router (after a failover) is kept too
        assert_eq!(
            route_action(Some(&mine), &["eni-0", "eni-1"]),
            RouteAction::Keep(1)
        );
        let igw = RouteTarget {
            eni: None,
            other: Some("igw-9".into()),
        };
        assert_eq!(
            route_action(Some(&igw), &["eni-1"]),
            RouteAction::Replace("igw-9".into())
        );
        let other = RouteTarget {
            eni: Some("eni-2".into()),
            other: Some("i-2".into()),
        };
        assert_eq!(
            route_action(Some(&other), &["eni-1"]),
            RouteAction::Replace("eni-2".into())
        );
    }

    #[test]
    fn params() {
        let mut have = BTreeMap::new();
        assert_eq!(param_changes(&have).len(), 4);
        for (n, v, _) in DB_PARAMETERS {
            have.insert(n.to_string(), v.to_string());
        }
        assert!(param_changes(&have).is_empty());
        have.insert("max_connections".into(), "100".into());
        assert_eq!(
            param_changes(&have),
            vec![("max_connections", "350", false)]
        );
    }

    #[test]
    fn db_diff() {
        let want = DbSettings {
            class: "db.m6g.large".into(),
            storage_gib: 20,
            max_storage_gib: 100,
            parameter_group: "pg".into(),
            security_groups: ["sg-1".to_string()].into(),
        };
        assert!(db_changes(&want, &want).is_empty());
        let mut have = want.clone();
        have.storage_gib = 50; // grown by autoscaling: not a change
        assert!(db_changes(&want, &have).is_empty());
        have.class = "db.t3.micro".into();
        assert_eq!(db_changes(&want, &have).len(), 1);
    }

    #[test]
    fn mysql_decision_is_8_4_for_cloudstack_4_22() {
        assert_eq!(CLOUDSTACK_RELEASE, "4.22");
        assert_eq!(DB_MYSQL, MYSQL_8_4);
        assert_eq!(DB_ENGINE, "mysql");
        assert_eq!(DB_ENGINE_VERSION, "8.4");
        assert_eq!(DB_PARAMETER_GROUP_FAMILY, "mysql8.4");
        assert_eq!(DB_PARAMETER_GROUP_SUFFIX, "mysql84");
        // a full version of the same major for templates (cfn-lint refuses a bare "8.4")
        for m in MYSQL_MAJORS {
            let parts: Vec<&str> = m.cfn_engine_version.split('.').collect();
            assert_eq!(parts.len(), 3, "{}", m.cfn_engine_version);
            assert_eq!(
                engine_major(m.cfn_engine_version).as_deref(),
                Some(m.engine_version)
            );
            assert_eq!(m.family, format!("mysql{}", m.engine_version));
            assert_eq!(m.name_suffix, m.family.replace('.', ""));
        }
        assert!(DB_ENGINE_VERSION_CFN.starts_with("8.4."));
        // 8.4 is in standard support: no cost line
        assert_eq!(db_cost_note(&DB_MYSQL), None);
        assert_eq!(db_cost_note(&MYSQL_8_4), None);
    }

    #[test]
    fn mysql_8_0_states_its_extended_support_cost() {
        // an existing 8.0 instance (kept at its major)
        let n = db_cost_note(&MYSQL_8_0).unwrap();
        assert!(
            n.starts_with(
                "RDS MySQL 8.0 is in RDS Extended Support since 2026-07-31 (billed per vCPU-hour)"
            ),
            "{n}"
        );
        assert!(n.contains("--allow-major-version-upgrade"), "{n}");
        assert!(n.contains("CloudStack 4.22 lists 8.4"), "{n}");
        // had the decision been 8.0 (a release that does not list 8.4)
        assert_eq!(
            cost_note(&MYSQL_8_0, &MYSQL_8_0).unwrap(),
            "RDS MySQL 8.0 is in RDS Extended Support since 2026-07-31 (billed per vCPU-hour); \
             CloudStack 4.22 does not list 8.4"
        );
    }

    #[test]
    fn an_existing_instance_keeps_its_major() {
        assert_eq!(db_mysql_for(None), DB_MYSQL);
        assert_eq!(db_mysql_for(Some("8.0.42")), MYSQL_8_0);
        assert_eq!(db_mysql_for(Some("8.0")), MYSQL_8_0);
        assert_eq!(db_mysql_for(Some("8.4.8")), MYSQL_8_4);
        assert_eq!(db_mysql_for(Some("8.0.46-rds.20260908")), MYSQL_8_0);
        // unknown majors and garbage: what a new instance gets
        for v in ["9.1.0", "", "latest", "8"] {
            assert_eq!(db_mysql_for(Some(v)), DB_MYSQL, "{v}");
        }
        assert_eq!(engine_major("8.4.11").as_deref(), Some("8.4"));
        assert_eq!(engine_major("x.4"), None);
    }

    #[test]
    fn password_alphabet_is_letters_and_digits() {
        assert_eq!(PASSWORD_LEN, 32);
        let set: BTreeSet<char> = PASSWORD_ALPHABET.chars().collect();
        assert_eq!(set.len(), PASSWORD_ALPHABET.len(), "no repeats");
        assert_eq!(set.len(), 62);
        assert!(set.iter().all(|c| c.is_ascii_alphanumeric()));
        // what CloudFormation's ExcludePunctuation removes and RDS refuses is not in it
        for bad in "/@\" '`!#$%^&*()-_=+[]{};:,.<>?|~\\".chars() {
            assert!(!set.contains(&bad), "{bad}");
        }
        let p = generate_password(PASSWORD_LEN).unwrap();
        assert_eq!(p.len(), PASSWORD_LEN);
        assert!(p.chars().all(|c| set.contains(&c)));
    }

    #[test]
    fn passwords_are_random_and_safe() {
        let a = generate_password(32).unwrap();
        let b = generate_password(32).unwrap();
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
