//! `overlayctl doctor`: name the AWS-side fault of a cluster before the operator reaches for
//! tcpdump. The node-side twin is `overlayd doctor` (agent/src/doctor.rs); both print the same
//! shape (`{"checks": [...], "exit": N}`, each check `{id, verdict, summary, evidence, fix}`).
//!
//! Two halves, kept apart:
//!
//! * [`read`]: the facts ([`AwsFacts`]) from AWS, with Describe / Get / Search calls only (never
//!   a change). Each part is a [`Read`]: a call that fails (access denied, throttled, an
//!   injected fault) leaves that part `Err(reason)` and the checks that need it say `unknown`;
//!   the other checks still decide.
//! * [`diagnose`]: pure judgement of the cluster file against the facts, one [`Check`] per
//!   stable id ([`CHECK_IDS`]), unit-tested with hand-built facts.
//!
//! Every id is always reported, in the same order. With flood = "unicast" or "evpn" the checks
//! that only concern multicast flooding (`sg.vtep.igmp`, `tgw.domain`, `tgw.members`,
//! `instances.nitro`) are `ok` with a summary starting "not used (flood = unicast)" (or evpn);
//! `sg.vtep.bgp` only concerns evpn and is `ok`, "not used (flood = multicast)" (or unicast), in
//! the other modes; with one router `router.pair` is `ok` with a summary starting "not used (one
//! router)".
//!
//! A multi-AZ cluster (`subnet_ids`) is judged subnet by subnet: every per-subnet check (route
//! tables, NACLs, strangers, the attachment and multicast associations, EFS mount targets)
//! covers each overlay subnet.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use anyhow::Result;
use ipnet::Ipv4Net;
use serde::Serialize;

use crate::config::{Cluster, CLUSTER_TAG, ROLE_TAG};
use crate::ctx::Ctx;
use crate::ec2::{
    self, filter, Association, Env, FoundAttachment, FoundDomain, FoundGroup, FoundTgw,
};
use crate::efs::{self, Fs, ObservedMountTarget};
use crate::model::{self, RouteTarget, Source, BGP_PORT, VXLAN_PORT};
use crate::rds::{self, Db};

/// The verdict of one check (ordered by severity).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ok,
    Unknown,
    Warn,
    Fail,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Unknown => "unknown",
            Verdict::Warn => "warn",
            Verdict::Fail => "fail",
        }
    }
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable id (documented in docs/overlayctl.md; scripts match on it).
    pub id: &'static str,
    pub verdict: Verdict,
    /// One line: what was found.
    pub summary: String,
    /// What it was decided from (values as read).
    pub evidence: Vec<String>,
    /// What to do about it (None when ok).
    pub fix: Option<String>,
}

pub const ROUTER_SDC: &str = "router.source-dest-check";
pub const ROUTES: &str = "routes.overlay";
pub const ROUTER_PAIR: &str = "router.pair";
pub const SG_IGMP: &str = "sg.vtep.igmp";
pub const SG_VXLAN: &str = "sg.vtep.vxlan";
pub const SG_BGP: &str = "sg.vtep.bgp";
pub const NACL: &str = "nacl";
pub const TGW_DOMAIN: &str = "tgw.domain";
pub const TGW_MEMBERS: &str = "tgw.members";
pub const STRANGERS: &str = "subnet.strangers";
pub const NITRO: &str = "instances.nitro";
pub const RDS_PARAMS: &str = "rds.parameters";
pub const EFS_MOUNT: &str = "efs.mount-target";

/// Every check id, in the order they are reported.
pub const CHECK_IDS: [&str; 13] = [
    ROUTER_SDC,
    ROUTES,
    ROUTER_PAIR,
    SG_IGMP,
    SG_VXLAN,
    SG_BGP,
    NACL,
    TGW_DOMAIN,
    TGW_MEMBERS,
    STRANGERS,
    NITRO,
    RDS_PARAMS,
    EFS_MOUNT,
];

/// Members per multicast group a transit gateway allows (not adjustable).
pub const GROUP_MEMBER_CAP: usize = 100;
/// From this many members (or cluster instances) on, `tgw.members` warns.
pub const GROUP_MEMBER_WARN: usize = 80;

/// A part of the facts, or why it could not be read (the call and AWS's error).
pub type Read<T> = std::result::Result<T, String>;

/// An EC2 instance of the VPC (not terminated).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Instance {
    pub id: String,
    /// pending, running, stopping, stopped, shutting-down.
    pub state: String,
    pub instance_type: String,
    /// Its `Name` tag.
    pub name: Option<String>,
    /// Its `overlay:cluster` tag.
    pub cluster_tag: Option<String>,
    /// (interface id, subnet id) of each of its network interfaces.
    pub enis: Vec<(String, String)>,
}

impl Instance {
    fn label(&self) -> String {
        match &self.name {
            Some(n) => format!("{} ({n})", self.id),
            None => self.id.clone(),
        }
    }
    fn in_subnet(&self, subnet: &str) -> bool {
        self.enis.iter().any(|(_, s)| s == subnet)
    }
    fn live(&self) -> bool {
        matches!(self.state.as_str(), "pending" | "running")
    }
}

/// A route table of the VPC, its subnets and the overlay CIDR's route in it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RouteTable {
    pub id: String,
    /// The VPC's main table (subnets without an explicit association use it).
    pub main: bool,
    /// Subnets explicitly associated with it.
    pub subnets: Vec<String>,
    /// The route for `overlay_cidr` (None: no such route).
    pub overlay_route: Option<RouteTarget>,
}

/// One entry of a network ACL (IPv4 only; IPv6 entries are not read).
#[derive(Debug, Clone, PartialEq)]
pub struct NaclEntry {
    pub rule: i32,
    pub egress: bool,
    /// Protocol number as a string, "-1" for all.
    pub proto: String,
    /// Port range (None: every port).
    pub ports: Option<(i32, i32)>,
    pub cidr: Ipv4Net,
    pub allow: bool,
}

/// The network ACL of the overlay subnet.
#[derive(Debug, Clone, PartialEq)]
pub struct Nacl {
    pub id: String,
    pub entries: Vec<NaclEntry>,
}

/// One member of the multicast group, as `SearchTransitGatewayMulticastGroups` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub eni: String,
    pub subnet: String,
    /// igmp or static.
    pub member_type: String,
}

/// The transit gateway chain as found by its tags (each link None when absent).
#[derive(Debug, Clone, Default)]
pub struct TgwFacts {
    pub tgw: Option<FoundTgw>,
    pub attachment: Option<FoundAttachment>,
    pub domain: Option<FoundDomain>,
    pub associations: Vec<Association>,
    /// Members of the cluster's group (None: no domain to search).
    pub members: Option<Read<Vec<Member>>>,
}

/// An instance type's hypervisor as `DescribeInstanceTypes` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeInfo {
    /// nitro, xen, or empty (bare metal).
    pub hypervisor: String,
    pub bare_metal: bool,
}

/// The file system and the overlay subnets' mount targets.
#[derive(Debug, Clone, Default)]
pub struct EfsFacts {
    pub fs: Option<Fs>,
    /// The mount target of each overlay subnet that has one, by subnet.
    pub mount_targets: BTreeMap<String, ObservedMountTarget>,
    /// Subnets of its other mount targets.
    pub other_subnets: Vec<String>,
}

/// One router as EC2 has it (its running state is in [`AwsFacts::instances`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RouterFacts {
    pub id: String,
    /// Its primary interface.
    pub eni: String,
    /// Source/destination check on.
    pub sdc: bool,
}

/// The database, its parameter group and the group's user parameters.
#[derive(Debug, Clone, Default)]
pub struct RdsFacts {
    pub db: Option<Db>,
    /// The group the instance should use (from its MySQL major).
    pub want_group: String,
    pub group_exists: bool,
    pub params: BTreeMap<String, String>,
}

/// Everything doctor decides from, read by [`read`].
#[derive(Debug, Clone)]
pub struct AwsFacts {
    /// (subnet id, CIDR) of each overlay subnet, in the cluster file's order.
    pub subnets: Vec<(String, String)>,
    /// The routers (one, or an HA pair), in the cluster file's order.
    pub routers: Vec<RouterFacts>,
    /// Route tables doctor judges: `route_table_ids`, else every table of the VPC.
    pub selected_tables: Vec<String>,
    pub route_tables: Read<Vec<RouteTable>>,
    /// Every subnet of the VPC (the main table's implicit members are those not listed in a
    /// table's associations).
    pub vpc_subnets: Read<Vec<String>>,
    /// The cluster's security groups by role.
    pub groups: Read<BTreeMap<String, FoundGroup>>,
    /// The network ACL of each overlay subnet, by subnet (a subnet missing: none associated).
    pub nacls: Read<BTreeMap<String, Nacl>>,
    /// Instances of the VPC that are not terminated.
    pub instances: Read<Vec<Instance>>,
    /// Instance type -> its hypervisor (the cluster instances' types).
    pub types: Read<BTreeMap<String, TypeInfo>>,
    pub tgw: Read<TgwFacts>,
    pub efs: Read<EfsFacts>,
    pub rds: Read<RdsFacts>,
}

// ------------------------------------------------------------------------------------------------
// judgement

fn check(
    id: &'static str,
    verdict: Verdict,
    summary: impl Into<String>,
    evidence: Vec<String>,
    fix: Option<String>,
) -> Check {
    Check {
        id,
        verdict,
        summary: summary.into(),
        evidence,
        fix: if verdict == Verdict::Ok { None } else { fix },
    }
}

fn ok(id: &'static str, summary: impl Into<String>, evidence: Vec<String>) -> Check {
    check(id, Verdict::Ok, summary, evidence, None)
}

/// The check that could not read what it decides from.
fn unreadable(id: &'static str, why: &str) -> Check {
    let denied = ["UnauthorizedOperation", "AccessDenied", "not authorized"]
        .iter()
        .any(|s| why.contains(s));
    let fix = if denied {
        "give overlayctl's role the call (overlayctl iam-policy --for bootstrap covers every call \
         of doctor), then run doctor again"
    } else {
        "run doctor again; if the call keeps failing, check the endpoint, region and credentials"
    };
    check(
        id,
        Verdict::Unknown,
        format!("cannot decide: {}", first_line(why)),
        vec![why.to_string()],
        Some(fix.to_string()),
    )
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

/// The check of a flood mode the cluster does not use: ok, "not used (flood = <mode>): why".
fn not_used(c: &Cluster, id: &'static str, why: &str, evidence: Vec<String>) -> Check {
    ok(
        id,
        format!("not used (flood = {}): {why}", c.flood.as_str()),
        evidence,
    )
}

/// Every check, in [`CHECK_IDS`] order.
pub fn diagnose(c: &Cluster, f: &AwsFacts) -> Vec<Check> {
    vec![
        router_sdc(c, f),
        routes(c, f),
        router_pair(c, f),
        sg_igmp(c, f),
        sg_vxlan(c, f),
        sg_bgp(c, f),
        nacl(c, f),
        tgw_domain(c, f),
        tgw_members(c, f),
        strangers(c, f),
        nitro(c, f),
        rds_parameters(c, f),
        efs_mount_target(c, f),
    ]
}

/// The cluster's instances: tagged `overlay:cluster=<name>`, and the routers.
fn is_member(c: &Cluster, i: &Instance) -> bool {
    i.cluster_tag.as_deref() == Some(c.name()) || c.routers.contains(&i.id)
}

/// The state of instance `id` as read ("not found", "not read" when unreadable).
fn state_of(f: &AwsFacts, id: &str) -> String {
    match &f.instances {
        Ok(v) => v
            .iter()
            .find(|i| i.id == id)
            .map(|i| i.state.clone())
            .unwrap_or_else(|| "not found".into()),
        Err(_) => "not read".into(),
    }
}

fn router_sdc(_c: &Cluster, f: &AwsFacts) -> Check {
    let pair = f.routers.len() > 1;
    let evidence: Vec<String> = f
        .routers
        .iter()
        .map(|r| {
            format!(
                "{}: state {}, source/dest check {}, primary interface {}",
                r.id,
                state_of(f, &r.id),
                if r.sdc { "on" } else { "off" },
                r.eni
            )
        })
        .collect();
    let on: Vec<&str> = f
        .routers
        .iter()
        .filter(|r| r.sdc)
        .map(|r| r.id.as_str())
        .collect();
    if !on.is_empty() {
        let cli: Vec<String> = on
            .iter()
            .map(|id| {
                format!(
                    "aws ec2 modify-instance-attribute --instance-id {id} --no-source-dest-check"
                )
            })
            .collect();
        return check(
            ROUTER_SDC,
            Verdict::Fail,
            format!(
                "source/destination check is on for router {}: it drops the overlay traffic it forwards",
                on.join(", ")
            ),
            evidence,
            Some(format!(
                "overlayctl bootstrap (turns it off), or {}",
                cli.join("; ")
            )),
        );
    }
    let ids: Vec<&str> = f.routers.iter().map(|r| r.id.as_str()).collect();
    if !pair {
        if let Some(id) = ids.first() {
            let state = state_of(f, id);
            if state != "running" && state != "not read" {
                return check(
                    ROUTER_SDC,
                    Verdict::Fail,
                    format!("router {id} is {state}: nothing forwards the overlay"),
                    evidence,
                    Some(format!(
                        "start the router: aws ec2 start-instances --instance-ids {id}"
                    )),
                );
            }
        }
        return ok(
            ROUTER_SDC,
            format!("source/destination check off on router {}", ids.join(", ")),
            evidence,
        );
    }
    ok(
        ROUTER_SDC,
        format!(
            "source/destination check off on routers {} (whether they run: router.pair)",
            ids.join(", ")
        ),
        evidence,
    )
}

fn describe_target(t: &Option<RouteTarget>) -> String {
    match t {
        None => "no route".into(),
        Some(t) => {
            let to = t
                .eni
                .clone()
                .or(t.other.clone())
                .unwrap_or_else(|| "blackhole".into());
            format!("-> {to}")
        }
    }
}

/// The router whose primary interface `t` names (None: no route, or another target).
fn router_of<'a>(f: &'a AwsFacts, t: &Option<RouteTarget>) -> Option<&'a RouterFacts> {
    let eni = t.as_ref()?.eni.as_deref()?;
    f.routers.iter().find(|r| !r.eni.is_empty() && r.eni == eni)
}

/// "the router's interface eni-r" / "a router's interface (eni-a or eni-b)".
fn router_interfaces(f: &AwsFacts) -> String {
    let enis: Vec<&str> = f.routers.iter().map(|r| r.eni.as_str()).collect();
    if enis.len() > 1 {
        format!("a router's interface ({})", enis.join(" or "))
    } else {
        format!("the router's interface {}", enis.join(""))
    }
}

fn routes(c: &Cluster, f: &AwsFacts) -> Check {
    let tables = match &f.route_tables {
        Ok(t) => t,
        Err(e) => return unreadable(ROUTES, e),
    };
    let cidr = &c.cfg.overlay_cidr;
    let to = router_interfaces(f);
    // subnets of each table: explicit associations; the main table also has the VPC's
    // subnets that no table names
    let explicit: BTreeSet<&String> = tables.iter().flat_map(|t| &t.subnets).collect();
    let implicit: Vec<String> = match &f.vpc_subnets {
        Ok(s) => s
            .iter()
            .filter(|s| !explicit.contains(s))
            .cloned()
            .collect(),
        Err(_) => Vec::new(),
    };
    let subnets_of = |t: &RouteTable| -> Vec<String> {
        let mut v = t.subnets.clone();
        if t.main {
            v.extend(implicit.iter().cloned());
        }
        v
    };
    // the table each overlay subnet uses: its own, else the main one
    let overlay_tables: BTreeSet<&str> = c
        .subnets
        .iter()
        .filter_map(|s| {
            tables
                .iter()
                .find(|t| t.subnets.contains(s))
                .or_else(|| tables.iter().find(|t| t.main))
                .map(|t| t.id.as_str())
        })
        .collect();
    let mut evidence = Vec::new();
    let mut bad = Vec::new();
    let mut bad_subnets = Vec::new();
    let mut unselected_overlay_tables = Vec::new();
    for t in tables {
        let selected = f.selected_tables.contains(&t.id);
        let is_overlay = overlay_tables.contains(t.id.as_str());
        if !selected && !is_overlay {
            continue;
        }
        let subnets = subnets_of(t);
        let good = router_of(f, &t.overlay_route).is_some();
        evidence.push(format!(
            "{}{}{}: subnets [{}]: {cidr} {}",
            t.id,
            if t.main { " (main)" } else { "" },
            if selected {
                ""
            } else {
                " (not in route_table_ids)"
            },
            subnets.join(", "),
            describe_target(&t.overlay_route)
        ));
        if !good {
            bad.push(format!("{} ({})", t.id, describe_target(&t.overlay_route)));
            bad_subnets.extend(subnets);
            if !selected {
                unselected_overlay_tables.push(t.id.clone());
            }
        }
    }
    for s in &f.selected_tables {
        if !tables.iter().any(|t| &t.id == s) {
            evidence.push(format!("{s}: not a route table of the VPC (any more)"));
            bad.push(format!("{s} (gone)"));
        }
    }
    if bad.is_empty() {
        return ok(
            ROUTES,
            format!("{} route table(s) route {cidr} to {to}", evidence.len()),
            evidence,
        );
    }
    let mut fix =
        "overlayctl bootstrap (creates or replaces the route in every selected route table)"
            .to_string();
    if !unselected_overlay_tables.is_empty() {
        fix = format!(
            "add {} (the overlay subnet's route table) to route_table_ids, then {fix}",
            unselected_overlay_tables.join(", ")
        );
    }
    let subnets = if bad_subnets.is_empty() {
        String::new()
    } else {
        format!("; subnets without the route: {}", bad_subnets.join(", "))
    };
    check(
        ROUTES,
        Verdict::Fail,
        format!("{cidr} does not go to {to} in {}{subnets}", bad.join(", ")),
        evidence,
        Some(fix),
    )
}

fn router_pair(c: &Cluster, f: &AwsFacts) -> Check {
    if f.routers.len() < 2 {
        return ok(
            ROUTER_PAIR,
            "not used (one router): give router_instance_ids = [a, b] for a standby",
            vec![],
        );
    }
    if let Err(e) = &f.instances {
        return unreadable(ROUTER_PAIR, e);
    }
    let mut ev: Vec<String> = f
        .routers
        .iter()
        .map(|r| {
            format!(
                "{}: {}, primary interface {}",
                r.id,
                state_of(f, &r.id),
                r.eni
            )
        })
        .collect();
    let down: Vec<(&RouterFacts, String)> = f
        .routers
        .iter()
        .map(|r| (r, state_of(f, &r.id)))
        .filter(|(_, s)| s != "running")
        .collect();
    // which router each selected table routes the overlay to
    let cidr = &c.cfg.overlay_cidr;
    let mut elsewhere = Vec::new();
    let mut on_down = Vec::new();
    if let Ok(tables) = &f.route_tables {
        for t in tables.iter().filter(|t| f.selected_tables.contains(&t.id)) {
            match router_of(f, &t.overlay_route) {
                Some(r) => {
                    ev.push(format!("{}: {cidr} -> {} ({})", t.id, r.eni, r.id));
                    if down.iter().any(|(d, _)| d.id == r.id) {
                        on_down.push(format!("{} (-> {})", t.id, r.id));
                    }
                }
                None => {
                    ev.push(format!(
                        "{}: {cidr} {}",
                        t.id,
                        describe_target(&t.overlay_route)
                    ));
                    elsewhere.push(t.id.clone());
                }
            }
        }
    }
    let ids: Vec<&str> = f.routers.iter().map(|r| r.id.as_str()).collect();
    if down.len() == f.routers.len() {
        let states: Vec<String> = down.iter().map(|(r, s)| format!("{} {s}", r.id)).collect();
        return check(
            ROUTER_PAIR,
            Verdict::Fail,
            format!(
                "double failure: both routers down ({}) — nothing carries traffic between the overlay and the VPC",
                states.join(", ")
            ),
            ev,
            Some(format!(
                "start both: aws ec2 start-instances --instance-ids {}; the first one up takes the \
                 overlay routes over (or overlayctl bootstrap points missing ones at {}); then find \
                 out why both went (same cause? one AZ each?)",
                ids.join(" "),
                ids[0]
            )),
        );
    }
    if let Some((r, state)) = down.first() {
        let up = f
            .routers
            .iter()
            .find(|x| x.id != r.id)
            .map(|x| x.id.as_str())
            .unwrap_or("");
        let routes = if on_down.is_empty() {
            String::new()
        } else {
            format!(
                "; still routed to it: {} (the standby has not taken them over)",
                on_down.join(", ")
            )
        };
        return check(
            ROUTER_PAIR,
            Verdict::Warn,
            format!(
                "router {} is {state}, {up} carries the overlay alone: no standby: the next failure cuts the overlay off{routes}",
                r.id
            ),
            ev,
            Some(format!(
                "start it: aws ec2 start-instances --instance-ids {}{}",
                r.id,
                if on_down.is_empty() {
                    String::new()
                } else {
                    format!("; check overlayd and keepalived on {up} (it should have moved the routes)")
                }
            )),
        );
    }
    if let Err(e) = &f.route_tables {
        return unreadable(ROUTER_PAIR, e);
    }
    if !elsewhere.is_empty() {
        return check(
            ROUTER_PAIR,
            Verdict::Warn,
            format!(
                "both routers run, but {} route{} {cidr} to neither (see routes.overlay)",
                elsewhere.join(", "),
                if elsewhere.len() == 1 { "s" } else { "" }
            ),
            ev,
            Some("overlayctl bootstrap (points them at the first router)".into()),
        );
    }
    ok(
        ROUTER_PAIR,
        format!(
            "routers {} both running; every selected route table routes {cidr} to one of them",
            ids.join(" and ")
        ),
        ev,
    )
}

/// The rules of the vtep group that let protocol `proto` (and `port`) in, as "source" lines.
fn rules_for<'a>(g: &'a FoundGroup, proto: &str, port: Option<i32>) -> Vec<&'a model::Perm> {
    g.ingress
        .iter()
        .filter(|p| {
            (p.proto == proto || p.proto == "-1")
                && match port {
                    Some(port) if p.proto != "-1" => p.from <= port && port <= p.to,
                    _ => true,
                }
        })
        .collect()
}

fn net(s: &str) -> Option<Ipv4Net> {
    s.parse().ok()
}

/// The vtep group, or the check saying why there is none to judge.
fn group_check<'a>(
    id: &'static str,
    f: &'a AwsFacts,
) -> std::result::Result<&'a FoundGroup, Check> {
    match &f.groups {
        Err(e) => Err(unreadable(id, e)),
        Ok(g) => g.get("vtep").ok_or_else(|| {
            check(
                id,
                Verdict::Fail,
                format!("no security group tagged {ROLE_TAG}=vtep in the VPC"),
                vec![],
                Some("overlayctl bootstrap (creates it), then give it to every node".to_string()),
            )
        }),
    }
}

fn sg_igmp(c: &Cluster, f: &AwsFacts) -> Check {
    if !c.flood.needs_multicast_domain() {
        return not_used(c, SG_IGMP, "no transit gateway sends IGMP queries", vec![]);
    }
    let g = match group_check(SG_IGMP, f) {
        Ok(g) => g,
        Err(c) => return c,
    };
    let rules = rules_for(g, "2", None);
    let evidence: Vec<String> = std::iter::once(format!("security group {} (vtep)", g.id))
        .chain(rules.iter().map(|p| format!("rule: {}", p.describe())))
        .collect();
    let zero = Ipv4Addr::UNSPECIFIED;
    let exact = rules
        .iter()
        .any(|p| matches!(&p.source, Source::Cidr(s) if s == "0.0.0.0/32"));
    let wide: Vec<&&model::Perm> = rules
        .iter()
        .filter(|p| matches!(&p.source, Source::Cidr(s) if s != "0.0.0.0/32" && net(s).is_some_and(|n| n.contains(&zero))))
        .collect();
    let refs: Vec<&&model::Perm> = rules
        .iter()
        .filter(|p| matches!(p.source, Source::Group(_)))
        .collect();
    let fix_rule = format!(
        "overlayctl bootstrap (converges the vtep group), or aws ec2 authorize-security-group-ingress \
         --group-id {} --ip-permissions IpProtocol=2,IpRanges=[{{CidrIp=0.0.0.0/32}}]",
        g.id
    );
    if exact {
        return ok(
            SG_IGMP,
            format!(
                "{} lets IGMP in from 0.0.0.0/32 (the transit gateway's queries)",
                g.id
            ),
            evidence,
        );
    }
    if let Some(w) = wide.first() {
        return check(
            SG_IGMP,
            Verdict::Warn,
            format!(
                "{} lets IGMP in from {}: it works, but is wider than the transit gateway's 0.0.0.0/32",
                g.id,
                w.describe()
            ),
            evidence,
            Some(format!("allow IGMP from 0.0.0.0/32 only: {fix_rule}")),
        );
    }
    let summary = if refs.is_empty() {
        format!(
            "{} does not let IGMP in from 0.0.0.0/32: the transit gateway's queries are dropped and the nodes fall out of the group",
            g.id
        )
    } else {
        format!(
            "{} lets IGMP in only from a security group ({}): AWS does not honour security group references for multicast; the queries come from 0.0.0.0",
            g.id,
            refs.iter().map(|p| p.describe()).collect::<Vec<_>>().join(", ")
        )
    };
    check(SG_IGMP, Verdict::Fail, summary, evidence, Some(fix_rule))
}

/// The overlay subnets' CIDRs, or the check saying which one is not readable.
fn subnet_nets(id: &'static str, f: &AwsFacts) -> std::result::Result<Vec<Ipv4Net>, Check> {
    let mut v = Vec::new();
    for (subnet, cidr) in &f.subnets {
        match net(cidr) {
            Some(n) => v.push(n),
            None => {
                return Err(check(
                    id,
                    Verdict::Unknown,
                    format!("cannot decide: the CIDR {cidr:?} of the overlay subnet {subnet} is not readable"),
                    vec![],
                    None,
                ))
            }
        }
    }
    if v.is_empty() {
        return Err(check(
            id,
            Verdict::Unknown,
            "cannot decide: no overlay subnet CIDR was read",
            vec![],
            None,
        ));
    }
    Ok(v)
}

/// A rule of the vtep group that must let one protocol and port in from every overlay subnet
/// CIDR: what [`subnet_rule`] judges for `sg.vtep.vxlan` and `sg.vtep.bgp`.
struct SubnetRule {
    id: &'static str,
    /// Protocol number ("17", "6") and its name for the CLI fix (udp, tcp).
    proto: &'static str,
    cli_proto: &'static str,
    port: i32,
    /// What is lost when a subnet is not covered ("VXLAN between the nodes is dropped").
    lost: &'static str,
    /// Why 0.0.0.0/0 is too wide.
    too_wide: &'static str,
    /// Only a security group as source: Some(summary tail) warns with it, None fails (AWS does
    /// not honour security group references for multicast traffic).
    refs_warn: Option<&'static str>,
}

fn sg_vxlan(c: &Cluster, f: &AwsFacts) -> Check {
    subnet_rule(
        f,
        &SubnetRule {
            id: SG_VXLAN,
            proto: "17",
            cli_proto: "udp",
            port: VXLAN_PORT,
            lost: "VXLAN between the nodes is dropped",
            too_wide: "anyone who reaches the nodes can inject frames into the overlay",
            refs_warn: (!c.flood.needs_multicast_domain())
                .then_some("unicast flooding works, multicast flooding would not"),
        },
    )
}

fn sg_bgp(c: &Cluster, f: &AwsFacts) -> Check {
    if !c.flood.needs_bgp() {
        return not_used(
            c,
            SG_BGP,
            "no BGP speaker on the nodes (flood = \"evpn\" only)",
            vec![],
        );
    }
    subnet_rule(
        f,
        &SubnetRule {
            id: SG_BGP,
            proto: "6",
            cli_proto: "tcp",
            port: BGP_PORT,
            lost: "the nodes' BGP sessions to the route reflector(s) on the router(s) cannot be established, so no EVPN route reaches them",
            too_wide: "anyone who reaches the nodes can open BGP sessions to them",
            refs_warn: Some(
                "BGP works only between instances in that group (bootstrap allows the subnet CIDR, as for VXLAN)",
            ),
        },
    )
}

fn subnet_rule(f: &AwsFacts, r: &SubnetRule) -> Check {
    let id = r.id;
    // "UDP 4789", "TCP 179"
    let label = format!("{} {}", r.cli_proto.to_ascii_uppercase(), r.port);
    let g = match group_check(id, f) {
        Ok(g) => g,
        Err(c) => return c,
    };
    let nets = match subnet_nets(id, f) {
        Ok(n) => n,
        Err(c) => return c,
    };
    let shown = nets
        .iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let rules = rules_for(g, r.proto, Some(r.port));
    let evidence: Vec<String> = std::iter::once(format!(
        "security group {} (vtep); overlay subnet{} {shown}",
        g.id,
        if nets.len() > 1 { "s" } else { "" }
    ))
    .chain(rules.iter().map(|p| format!("rule: {}", p.describe())))
    .collect();
    let cidrs: Vec<(Ipv4Net, &model::Perm)> = rules
        .iter()
        .filter_map(|p| match &p.source {
            Source::Cidr(s) => net(s).map(|n| (n, *p)),
            Source::Group(_) => None,
        })
        .collect();
    let refs: Vec<&&model::Perm> = rules
        .iter()
        .filter(|p| matches!(p.source, Source::Group(_)))
        .collect();
    // the subnets no rule with a real prefix covers
    let uncovered: Vec<Ipv4Net> = nets
        .iter()
        .filter(|s| {
            !cidrs
                .iter()
                .any(|(n, _)| n.prefix_len() > 0 && n.contains(*s))
        })
        .copied()
        .collect();
    let fix_rule = format!(
        "overlayctl bootstrap (converges the vtep group), or {}",
        (if uncovered.is_empty() { &nets } else { &uncovered })
            .iter()
            .map(|n| format!(
                "aws ec2 authorize-security-group-ingress --group-id {} --protocol {} --port {} --cidr {n}",
                g.id, r.cli_proto, r.port
            ))
            .collect::<Vec<_>>()
            .join("; ")
    );
    if uncovered.is_empty() {
        let summary = match nets.as_slice() {
            [subnet] => {
                let n = cidrs
                    .iter()
                    .find(|(n, _)| n.prefix_len() > 0 && n.contains(subnet))
                    .map(|(n, _)| n.to_string())
                    .unwrap_or_default();
                format!(
                    "{} lets {label} in from {n} (covers the overlay subnet {subnet})",
                    g.id
                )
            }
            _ => format!(
                "{} lets {label} in from every overlay subnet ({shown})",
                g.id
            ),
        };
        return ok(id, summary, evidence);
    }
    let anywhere = cidrs.iter().any(|(n, _)| n.prefix_len() == 0);
    if anywhere {
        return check(
            id,
            Verdict::Warn,
            format!(
                "{} lets {label} in from 0.0.0.0/0: too wide, {}",
                g.id, r.too_wide
            ),
            evidence,
            Some(format!("allow it from the subnet CIDR{} {shown} only: {fix_rule}; then revoke the 0.0.0.0/0 rule", if nets.len() > 1 { "s" } else { "" })),
        );
    }
    if !refs.is_empty() {
        let names = refs
            .iter()
            .map(|p| p.describe())
            .collect::<Vec<_>>()
            .join(", ");
        let Some(warn) = r.refs_warn else {
            return check(
                id,
                Verdict::Fail,
                format!(
                    "{} lets {label} in only from a security group ({names}): AWS does not honour security group references for multicast traffic, so flooded frames are dropped",
                    g.id
                ),
                evidence,
                Some(fix_rule),
            );
        };
        return check(
            id,
            Verdict::Warn,
            format!(
                "{} lets {label} in from a security group ({names}), not from the subnet CIDR: {warn}",
                g.id
            ),
            evidence,
            Some(fix_rule),
        );
    }
    let subnet = uncovered[0];
    let others = if uncovered.len() > 1 {
        format!(
            " (nor from {})",
            uncovered[1..]
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else {
        String::new()
    };
    let partial: Vec<String> = cidrs
        .iter()
        .filter(|(n, _)| subnet.contains(n) || n.contains(&subnet.network()))
        .map(|(n, _)| n.to_string())
        .collect();
    let summary = if partial.is_empty() {
        format!(
            "{} does not let {label} in from the overlay subnet {subnet}{others}: {}",
            g.id, r.lost
        )
    } else {
        format!(
            "{} lets {label} in from {} only: part of the overlay subnet {subnet}{others}",
            g.id,
            partial.join(", ")
        )
    };
    check(id, Verdict::Fail, summary, evidence, Some(fix_rule))
}

/// The first entry of `entries` (one direction) that matches a packet: (allowed, rule number;
/// None: no entry matches, denied by the implicit final rule).
pub fn nacl_decides(
    entries: &[NaclEntry],
    egress: bool,
    proto: &str,
    port: Option<i32>,
    addr: Ipv4Addr,
) -> (bool, Option<i32>) {
    let mut v: Vec<&NaclEntry> = entries.iter().filter(|e| e.egress == egress).collect();
    v.sort_by_key(|e| e.rule);
    for e in v {
        let proto_ok = e.proto == "-1" || e.proto == proto;
        let port_ok = match (port, e.ports) {
            (Some(p), Some((a, b))) if e.proto != "-1" => a <= p && p <= b,
            _ => true,
        };
        if proto_ok && port_ok && e.cidr.contains(&addr) {
            return (e.allow, Some(e.rule));
        }
    }
    (false, None)
}

/// Traffic the overlay needs through the network ACL: one direction, one protocol (and port),
/// to or from `addrs`.
struct Flow {
    egress: bool,
    what: String,
    proto: &'static str,
    port: Option<i32>,
    addrs: Vec<Ipv4Addr>,
}

/// Addresses standing for a range: its first, middle and last.
fn samples(n: &Ipv4Net) -> Vec<Ipv4Addr> {
    let a = u32::from(n.network());
    let b = u32::from(n.broadcast());
    let mut v = vec![
        Ipv4Addr::from(a),
        Ipv4Addr::from(a + (b - a) / 2),
        Ipv4Addr::from(b),
    ];
    v.dedup();
    v
}

fn nacl(c: &Cluster, f: &AwsFacts) -> Check {
    let acls = match &f.nacls {
        Err(e) => return unreadable(NACL, e),
        Ok(a) => a,
    };
    let nets = match subnet_nets(NACL, f) {
        Ok(n) => n,
        Err(c) => return c,
    };
    let flow = |egress: bool, what: String, proto: &'static str, addrs: Vec<Ipv4Addr>| Flow {
        egress,
        what,
        proto,
        port: (proto == "17").then_some(VXLAN_PORT),
        addrs,
    };
    // VXLAN goes between every pair of overlay subnets (one per AZ), so each subnet's ACL must
    // let it in from and out to all of them.
    let mut needs = Vec::new();
    if let (true, Some(group)) = (c.flood.needs_multicast_domain(), c.group) {
        needs.push(flow(
            false,
            "inbound IGMP from 0.0.0.0".into(),
            "2",
            vec![Ipv4Addr::UNSPECIFIED],
        ));
        needs.push(flow(
            true,
            format!("outbound IGMP to {group}"),
            "2",
            vec![group],
        ));
        needs.push(flow(
            true,
            format!("outbound UDP {VXLAN_PORT} to {group}"),
            "17",
            vec![group],
        ));
    }
    for n in &nets {
        needs.push(flow(
            false,
            format!("inbound UDP {VXLAN_PORT} from {n}"),
            "17",
            samples(n),
        ));
        needs.push(flow(
            true,
            format!("outbound UDP {VXLAN_PORT} to {n}"),
            "17",
            samples(n),
        ));
    }
    let mut evidence = Vec::new();
    let mut failed = Vec::new();
    let mut missing = Vec::new();
    let mut ok_acls = Vec::new();
    for (subnet, _) in &f.subnets {
        let Some(acl) = acls.get(subnet) else {
            evidence.push(format!("{subnet}: no network ACL associated"));
            missing.push(subnet.clone());
            continue;
        };
        evidence.push(format!("network ACL {} of {subnet}", acl.id));
        let mut denied = Vec::new();
        for Flow {
            egress,
            what,
            proto,
            port,
            addrs,
        } in &needs
        {
            let mut verdicts = Vec::new();
            let mut all = true;
            for a in addrs {
                let (allow, rule) = nacl_decides(&acl.entries, *egress, proto, *port, *a);
                all &= allow;
                let rule = rule
                    .map(|r| format!("rule {r}"))
                    .unwrap_or_else(|| "no rule (implicit deny)".into());
                verdicts.push(format!(
                    "{a}: {} by {rule}",
                    if allow { "allowed" } else { "denied" }
                ));
            }
            evidence.push(format!("{what}: {}", verdicts.join(", ")));
            if !all {
                denied.push(what.clone());
            }
        }
        if denied.is_empty() {
            if !ok_acls.contains(&acl.id) {
                ok_acls.push(acl.id.clone());
            }
        } else {
            failed.push((acl.id.clone(), subnet.clone(), denied));
        }
    }
    if let Some((id, subnet, denied)) = failed.first() {
        let of = if f.subnets.len() > 1 {
            format!(" of {subnet}")
        } else {
            String::new()
        };
        let more: Vec<String> = failed[1..]
            .iter()
            .map(|(id, s, d)| format!("{id} of {s} denies {}", d.join(", ")))
            .collect();
        let more = if more.is_empty() {
            String::new()
        } else {
            format!("; {}", more.join("; "))
        };
        return check(
            NACL,
            Verdict::Fail,
            format!("network ACL {id}{of} denies {}{more}", denied.join(", ")),
            evidence,
            Some(format!(
                "add allow entries to {id} numbered below the denying rule (network ACLs are stateless: \
                 both directions), e.g. aws ec2 create-network-acl-entry --network-acl-id {id} --ingress \
                 --rule-number <n> --protocol udp --port-range From={VXLAN_PORT},To={VXLAN_PORT} \
                 --cidr-block {} --rule-action allow",
                nets[0]
            )),
        );
    }
    if !missing.is_empty() {
        return check(
            NACL,
            Verdict::Unknown,
            format!(
                "cannot decide: no network ACL is associated with {}",
                missing.join(", ")
            ),
            evidence,
            Some(format!(
                "every subnet has one in AWS; check {} and the region",
                c.subnet_field()
            )),
        );
    }
    ok(
        NACL,
        format!(
            "network ACL {} allows the overlay's traffic",
            ok_acls.join(", ")
        ),
        evidence,
    )
}

fn tgw_domain(c: &Cluster, f: &AwsFacts) -> Check {
    let t = match &f.tgw {
        Err(e) => return unreadable(TGW_DOMAIN, e),
        Ok(t) => t,
    };
    if !c.flood.needs_multicast_domain() {
        let evidence = t
            .tgw
            .iter()
            .map(|g| {
                format!(
                    "{} tagged {CLUSTER_TAG}={} is left from flood = multicast: overlayctl teardown deletes it",
                    g.id,
                    c.name()
                )
            })
            .collect();
        return not_used(c, TGW_DOMAIN, "flooding needs no transit gateway", evidence);
    }
    let bootstrap =
        || Some("overlayctl bootstrap (creates or resumes the transit gateway chain)".to_string());
    let mut ev = Vec::new();
    let Some(tgw) = &t.tgw else {
        return check(
            TGW_DOMAIN,
            Verdict::Fail,
            format!("no transit gateway tagged {CLUSTER_TAG}={}", c.name()),
            ev,
            bootstrap(),
        );
    };
    ev.push(format!(
        "transit gateway {}: {}, multicast {}",
        tgw.id,
        tgw.state,
        if tgw.multicast { "enable" } else { "disable" }
    ));
    if !tgw.multicast {
        return check(
            TGW_DOMAIN,
            Verdict::Fail,
            format!("transit gateway {} has multicast support off", tgw.id),
            ev,
            Some(
                "it can only be set at creation: overlayctl teardown, then overlayctl bootstrap"
                    .into(),
            ),
        );
    }
    let subnets = &c.subnets;
    let shown = subnets.join(", ");
    match &t.attachment {
        None => {
            return check(
                TGW_DOMAIN,
                Verdict::Fail,
                format!(
                    "transit gateway {} is not attached to {}",
                    tgw.id, c.cfg.vpc_id
                ),
                ev,
                bootstrap(),
            )
        }
        Some(a) => {
            ev.push(format!(
                "attachment {}: {}, subnets [{}]",
                a.id,
                a.state,
                a.subnets.join(", ")
            ));
            let lacking: Vec<&str> = subnets
                .iter()
                .filter(|s| !a.subnets.contains(s))
                .map(String::as_str)
                .collect();
            if !lacking.is_empty() {
                return check(
                    TGW_DOMAIN,
                    Verdict::Fail,
                    format!(
                        "attachment {} does not include the overlay subnet {}",
                        a.id,
                        lacking.join(", ")
                    ),
                    ev,
                    bootstrap(),
                );
            }
        }
    }
    let Some(d) = &t.domain else {
        return check(
            TGW_DOMAIN,
            Verdict::Fail,
            format!(
                "no multicast domain tagged {CLUSTER_TAG}={} on {}",
                c.name(),
                tgw.id
            ),
            ev,
            bootstrap(),
        );
    };
    ev.push(format!(
        "multicast domain {}: {}, igmpv2 {}, static sources {}, auto-accept {}",
        d.id, d.state, d.options.igmpv2, d.options.static_sources, d.options.auto_accept
    ));
    for a in &t.associations {
        ev.push(format!(
            "association {} via {}: {}",
            a.subnet, a.attachment, a.state
        ));
    }
    if d.options.igmpv2 != "enable" {
        return check(
            TGW_DOMAIN,
            Verdict::Fail,
            format!(
                "multicast domain {} has IGMPv2 {}: the transit gateway ignores the nodes' joins",
                d.id, d.options.igmpv2
            ),
            ev,
            Some("domain options cannot change in place: overlayctl teardown, then overlayctl bootstrap".into()),
        );
    }
    let att = t.attachment.as_ref().map(|a| a.id.as_str()).unwrap_or("");
    let mut pending = Vec::new();
    for subnet in subnets {
        let assoc = t
            .associations
            .iter()
            .find(|a| &a.subnet == subnet && a.attachment == att);
        match assoc.map(|a| a.state.as_str()) {
            Some("associated") => {}
            Some(s @ ("associating" | "pendingAcceptance")) => {
                pending.push(format!("the overlay subnet {subnet} is still {s}"));
            }
            other => {
                return check(
                    TGW_DOMAIN,
                    Verdict::Fail,
                    format!(
                    "the overlay subnet {subnet} is not associated with multicast domain {} ({})",
                    d.id,
                    other.unwrap_or("no association")
                ),
                    ev,
                    bootstrap(),
                )
            }
        }
    }
    if !pending.is_empty() {
        return check(
            TGW_DOMAIN,
            Verdict::Warn,
            format!("{} with {}", pending.join(", "), d.id),
            ev,
            Some("wait a minute and run doctor again".into()),
        );
    }
    if tgw.state != "available" || d.state != "available" {
        return check(
            TGW_DOMAIN,
            Verdict::Warn,
            format!(
                "transit gateway {} is {}, domain {} is {}",
                tgw.id, tgw.state, d.id, d.state
            ),
            ev,
            Some("wait for both to be available and run doctor again".into()),
        );
    }
    ok(
        TGW_DOMAIN,
        format!(
            "multicast domain {} has IGMPv2 on and {shown} associated",
            d.id
        ),
        ev,
    )
}

fn tgw_members(c: &Cluster, f: &AwsFacts) -> Check {
    if !c.flood.needs_multicast_domain() {
        return not_used(
            c,
            TGW_MEMBERS,
            "no multicast group to be a member of",
            vec![],
        );
    }
    let Some(group) = c.group else {
        return not_used(c, TGW_MEMBERS, "no multicast group", vec![]);
    };
    let t = match &f.tgw {
        Err(e) => return unreadable(TGW_MEMBERS, e),
        Ok(t) => t,
    };
    let instances = match &f.instances {
        Err(e) => return unreadable(TGW_MEMBERS, e),
        Ok(v) => v,
    };
    let members = match &t.members {
        None => {
            return check(
                TGW_MEMBERS,
                Verdict::Unknown,
                "cannot decide: no multicast domain to search (see tgw.domain)",
                vec![],
                None,
            )
        }
        Some(Err(e)) => return unreadable(TGW_MEMBERS, e),
        Some(Ok(m)) => m,
    };
    let ours: Vec<&Instance> = instances
        .iter()
        .filter(|i| is_member(c, i) && i.live())
        .collect();
    let member_enis: BTreeSet<&str> = members.iter().map(|m| m.eni.as_str()).collect();
    let mut ev = vec![format!(
        "group {group}: {} member(s) ({}); {} running cluster instance(s)",
        members.len(),
        members
            .iter()
            .map(|m| format!("{} {} in {}", m.eni, m.member_type, m.subnet))
            .collect::<Vec<_>>()
            .join(", "),
        ours.len()
    )];
    let mut missing = Vec::new();
    let mut our_enis = BTreeSet::new();
    for i in &ours {
        our_enis.extend(i.enis.iter().map(|(e, _)| e.as_str()));
        let joined: Vec<&str> = i
            .enis
            .iter()
            .map(|(e, _)| e.as_str())
            .filter(|e| member_enis.contains(e))
            .collect();
        ev.push(format!(
            "{}: {} [{}]: {}",
            i.label(),
            i.state,
            i.enis
                .iter()
                .map(|(e, s)| format!("{e} in {s}"))
                .collect::<Vec<_>>()
                .join(", "),
            if joined.is_empty() {
                "not a member".to_string()
            } else {
                format!("member via {}", joined.join(", "))
            }
        ));
        if joined.is_empty() {
            missing.push(i.label());
        }
    }
    // a stopped cluster instance (say the standby router) may still be listed: it is ours
    our_enis.extend(
        instances
            .iter()
            .filter(|i| is_member(c, i))
            .flat_map(|i| i.enis.iter().map(|(e, _)| e.as_str())),
    );
    let foreign: Vec<&str> = members
        .iter()
        .map(|m| m.eni.as_str())
        .filter(|e| !our_enis.contains(e))
        .collect();
    let count = members.len().max(ours.len());
    if ours.len() > GROUP_MEMBER_CAP {
        return check(
            TGW_MEMBERS,
            Verdict::Fail,
            format!(
                "{} cluster instances, but a multicast group holds at most {GROUP_MEMBER_CAP} members (not adjustable)",
                ours.len()
            ),
            ev,
            Some("split the cloud into clusters of at most 100 nodes, or use flood = \"unicast\"".into()),
        );
    }
    if !missing.is_empty() {
        return check(
            TGW_MEMBERS,
            Verdict::Fail,
            format!(
                "not a member of {group}: {} (they receive no flooded frames: ARP, DHCP and unknown unicast)",
                missing.join(", ")
            ),
            ev,
            Some(format!(
                "on each: is overlayd running (overlayd doctor: force_igmp_version 2, group joined)? \
                 is the instance in {} with the vtep security group (sg.vtep.igmp)? The transit \
                 gateway asks every 2 minutes: a node that answered becomes a member",
                c.subnets.join(" or ")
            )),
        );
    }
    if count >= GROUP_MEMBER_WARN {
        return check(
            TGW_MEMBERS,
            Verdict::Warn,
            format!(
                "{count} members of {group}: close to the transit gateway's cap of {GROUP_MEMBER_CAP} per group (not adjustable)"
            ),
            ev,
            Some("plan the next nodes for another cluster, or use flood = \"unicast\"".into()),
        );
    }
    if !foreign.is_empty() {
        return check(
            TGW_MEMBERS,
            Verdict::Warn,
            format!(
                "{} member(s) of {group} belong to no cluster instance: {} (they receive every flooded frame)",
                foreign.len(),
                foreign.join(", ")
            ),
            ev,
            Some(format!(
                "find what owns them (aws ec2 describe-network-interfaces --network-interface-ids {}): \
                 tag a node {CLUSTER_TAG}={}, or stop whatever joined the group",
                foreign.join(" "),
                c.name()
            )),
        );
    }
    ok(
        TGW_MEMBERS,
        format!(
            "all {} running cluster instance(s) are members of {group}",
            ours.len()
        ),
        ev,
    )
}

fn strangers(c: &Cluster, f: &AwsFacts) -> Check {
    let instances = match &f.instances {
        Err(e) => return unreadable(STRANGERS, e),
        Ok(v) => v,
    };
    let subnet = c.subnets.join(", ");
    let in_subnet: Vec<&Instance> = instances
        .iter()
        .filter(|i| c.subnets.iter().any(|s| i.in_subnet(s)))
        .collect();
    let strangers: Vec<&&Instance> = in_subnet.iter().filter(|i| !is_member(c, i)).collect();
    let mut ev = vec![format!(
        "{subnet}: {} instance(s), {} of the cluster (tagged {CLUSTER_TAG}={} or the router)",
        in_subnet.len(),
        in_subnet.len() - strangers.len(),
        c.name()
    )];
    for s in &strangers {
        ev.push(format!(
            "{}: {}, {CLUSTER_TAG} {}",
            s.label(),
            s.state,
            s.cluster_tag.as_deref().unwrap_or("none")
        ));
    }
    if strangers.is_empty() {
        return ok(
            STRANGERS,
            format!(
                "only cluster instances in the overlay subnet{} {subnet}",
                if c.subnets.len() > 1 { "s" } else { "" }
            ),
            ev,
        );
    }
    let live: Vec<String> = strangers
        .iter()
        .filter(|i| i.live())
        .map(|i| i.label())
        .collect();
    let fix = Some(format!(
        "the overlay nodes need a dedicated subnet: move these instances to another subnet (a node \
         answers them directly, not through the router, and AWS drops the replies); if one is an \
         overlay node, tag it {CLUSTER_TAG}={}",
        c.name()
    ));
    if live.is_empty() {
        let names: Vec<String> = strangers
            .iter()
            .map(|i| format!("{} ({})", i.label(), i.state))
            .collect();
        return check(
            STRANGERS,
            Verdict::Warn,
            format!("stopped instances outside the cluster in {subnet}: {} (the asymmetric path fault once they run)", names.join(", ")),
            ev,
            fix,
        );
    }
    check(
        STRANGERS,
        Verdict::Fail,
        format!(
            "instances outside the cluster in the overlay subnet {subnet}: {} (asymmetric path: their traffic with overlay addresses is dropped)",
            live.join(", ")
        ),
        ev,
        fix,
    )
}

fn nitro(c: &Cluster, f: &AwsFacts) -> Check {
    if !c.flood.needs_multicast_domain() {
        return not_used(
            c,
            NITRO,
            "unicast UDP works from every instance type",
            vec![],
        );
    }
    let instances = match &f.instances {
        Err(e) => return unreadable(NITRO, e),
        Ok(v) => v,
    };
    let types = match &f.types {
        Err(e) => return unreadable(NITRO, e),
        Ok(t) => t,
    };
    let ours: Vec<&Instance> = instances
        .iter()
        .filter(|i| is_member(c, i) && i.state != "shutting-down")
        .collect();
    let mut ev = Vec::new();
    let mut xen = Vec::new();
    let mut unknown = Vec::new();
    for i in &ours {
        let what = match types.get(&i.instance_type) {
            Some(t) if t.hypervisor == "nitro" => "nitro".to_string(),
            Some(t) if t.bare_metal => "bare metal (Nitro System)".to_string(),
            Some(t) => {
                xen.push(format!("{} {}", i.label(), i.instance_type));
                if t.hypervisor.is_empty() {
                    "not Nitro".into()
                } else {
                    t.hypervisor.clone()
                }
            }
            None => {
                unknown.push(format!("{} {}", i.label(), i.instance_type));
                "unknown type".to_string()
            }
        };
        ev.push(format!("{}: {} ({what})", i.label(), i.instance_type));
    }
    if !xen.is_empty() {
        return check(
            NITRO,
            Verdict::Fail,
            format!(
                "not built on the Nitro System, so they cannot send multicast (every VTEP floods): {}",
                xen.join(", ")
            ),
            ev,
            Some("change their instance type to a Nitro one (e.g. m5, c5, m6i, m7g): stop, aws ec2 modify-instance-attribute --instance-type, start".into()),
        );
    }
    if !unknown.is_empty() {
        return check(
            NITRO,
            Verdict::Unknown,
            format!(
                "cannot decide for: {} (DescribeInstanceTypes does not know the type)",
                unknown.join(", ")
            ),
            ev,
            None,
        );
    }
    ok(
        NITRO,
        format!("all {} cluster instance(s) are Nitro instances", ours.len()),
        ev,
    )
}

fn rds_parameters(c: &Cluster, f: &AwsFacts) -> Check {
    let r = match &f.rds {
        Err(e) => return unreadable(RDS_PARAMS, e),
        Ok(r) => r,
    };
    let bootstrap = || {
        Some("overlayctl bootstrap (creates the group, sets CloudStack's values and points the instance at it)".to_string())
    };
    let id = c.db_instance_id();
    let Some(db) = &r.db else {
        return check(
            RDS_PARAMS,
            Verdict::Fail,
            format!("no DB instance {id}"),
            vec![],
            Some("overlayctl bootstrap (creates it)".into()),
        );
    };
    let mut ev = vec![format!(
        "{id}: {}, MySQL {}, parameter group {} ({})",
        db.status, db.engine_version, db.settings.parameter_group, db.parameter_apply_status
    )];
    if !r.group_exists {
        return check(
            RDS_PARAMS,
            Verdict::Fail,
            format!("parameter group {} does not exist", r.want_group),
            ev,
            bootstrap(),
        );
    }
    for (n, want, _) in model::DB_PARAMETERS {
        ev.push(format!(
            "{}: {n} = {} (CloudStack needs {want})",
            r.want_group,
            r.params.get(n).map(String::as_str).unwrap_or("default")
        ));
    }
    let changes = model::param_changes(&r.params);
    if !changes.is_empty() {
        let what: Vec<String> = changes
            .iter()
            .map(|(n, v, _)| {
                format!(
                    "{n} = {} (want {v})",
                    r.params.get(*n).map(String::as_str).unwrap_or("default")
                )
            })
            .collect();
        return check(
            RDS_PARAMS,
            Verdict::Fail,
            format!(
                "parameter group {} differs from CloudStack's settings: {}",
                r.want_group,
                what.join(", ")
            ),
            ev,
            bootstrap(),
        );
    }
    if db.settings.parameter_group != r.want_group {
        return check(
            RDS_PARAMS,
            Verdict::Fail,
            format!(
                "{id} uses parameter group {}, not {}",
                db.settings.parameter_group, r.want_group
            ),
            ev,
            bootstrap(),
        );
    }
    if db.parameter_apply_status == "pending-reboot" {
        return check(
            RDS_PARAMS,
            Verdict::Warn,
            format!("{id} has not applied {} yet (pending-reboot): innodb_rollback_on_timeout is static", r.want_group),
            ev,
            Some(format!("reboot it in a quiet moment: aws rds reboot-db-instance --db-instance-identifier {id}")),
        );
    }
    ok(
        RDS_PARAMS,
        format!("{id} uses {} with CloudStack's settings", r.want_group),
        ev,
    )
}

fn efs_mount_target(c: &Cluster, f: &AwsFacts) -> Check {
    let e = match &f.efs {
        Err(e) => return unreadable(EFS_MOUNT, e),
        Ok(e) => e,
    };
    let bootstrap =
        || Some("overlayctl bootstrap (creates the file system and its mount targets)".to_string());
    let Some(fs) = &e.fs else {
        return check(
            EFS_MOUNT,
            Verdict::Fail,
            format!("no EFS file system tagged {CLUSTER_TAG}={}", c.name()),
            vec![],
            bootstrap(),
        );
    };
    let mut ev = vec![format!("file system {}: {}", fs.id, fs.state)];
    if !e.other_subnets.is_empty() {
        ev.push(format!(
            "mount targets in other subnets: {}",
            e.other_subnets.join(", ")
        ));
    }
    for mt in c.subnets.iter().filter_map(|s| e.mount_targets.get(s)) {
        ev.push(format!(
            "mount target {} in {}: {}, security groups [{}]",
            mt.target.id,
            mt.target.subnet,
            mt.target.state,
            mt.security_groups.join(", ")
        ));
    }
    let lacking: Vec<&str> = c
        .subnets
        .iter()
        .filter(|s| !e.mount_targets.contains_key(*s))
        .map(String::as_str)
        .collect();
    if !lacking.is_empty() {
        return check(
            EFS_MOUNT,
            Verdict::Fail,
            format!(
                "{} has no mount target in the overlay subnet {}: the nodes there cannot mount primary/secondary storage",
                fs.id,
                lacking.join(", ")
            ),
            ev,
            bootstrap(),
        );
    }
    let efs_sg = f
        .groups
        .as_ref()
        .ok()
        .and_then(|g| g.get("efs"))
        .map(|g| g.id.clone());
    let mts: Vec<&ObservedMountTarget> = c
        .subnets
        .iter()
        .filter_map(|s| e.mount_targets.get(s))
        .collect();
    if let Some(sg) = efs_sg {
        if let Some(mt) = mts.iter().find(|m| !m.security_groups.contains(&sg)) {
            return check(
                EFS_MOUNT,
                Verdict::Fail,
                format!("mount target {} lacks the efs security group {sg}: NFS from the nodes is refused", mt.target.id),
                ev,
                bootstrap(),
            );
        }
    }
    if let Some(mt) = mts.iter().find(|m| m.target.state != "available") {
        return check(
            EFS_MOUNT,
            Verdict::Warn,
            format!("mount target {} is {}", mt.target.id, mt.target.state),
            ev,
            Some("wait for it to be available and run doctor again".into()),
        );
    }
    let summary = match mts.as_slice() {
        [mt] => format!(
            "{} has an available mount target {} in {}",
            fs.id, mt.target.id, mt.target.subnet
        ),
        _ => format!(
            "{} has an available mount target in every overlay subnet ({})",
            fs.id,
            mts.iter()
                .map(|m| format!("{} in {}", m.target.id, m.target.subnet))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    ok(EFS_MOUNT, summary, ev)
}

/// 0 when nothing fails, 1 when something does (warnings and unknowns alone: 0).
pub fn exit_code(checks: &[Check]) -> i32 {
    i32::from(checks.iter().any(|c| c.verdict == Verdict::Fail))
}

/// The text report: one line per check, evidence and fix indented below it.
pub fn render(checks: &[Check]) -> String {
    let mut s = String::new();
    for c in checks {
        s.push_str(&format!(
            "{:<7} {:<24} {}\n",
            c.verdict.as_str(),
            c.id,
            c.summary
        ));
        for e in &c.evidence {
            s.push_str(&format!("        evidence: {e}\n"));
        }
        if let Some(fix) = &c.fix {
            s.push_str(&format!("        fix: {fix}\n"));
        }
    }
    let n = |v: Verdict| checks.iter().filter(|c| c.verdict == v).count();
    s.push_str(&format!(
        "{} checks: {} ok, {} warn, {} fail, {} unknown\n",
        checks.len(),
        n(Verdict::Ok),
        n(Verdict::Warn),
        n(Verdict::Fail),
        n(Verdict::Unknown)
    ));
    s
}

// ------------------------------------------------------------------------------------------------
// reading (Describe / Get / Search calls only)

fn reason(e: anyhow::Error) -> String {
    format!("{e:#}")
}

/// Reads the environment (the same checks of the cluster file against AWS as plan: bad input is
/// an error), then judges it.
pub async fn run(ctx: &Ctx) -> Result<Vec<Check>> {
    let env = crate::bootstrap::preflight(ctx).await?;
    let facts = read(ctx, &env).await;
    Ok(diagnose(&ctx.cluster, &facts))
}

/// Reads every fact doctor decides from; a call that fails leaves its part `Err`.
pub async fn read(ctx: &Ctx, env: &Env) -> AwsFacts {
    let groups = ec2::find_groups(ctx).await.map_err(reason);
    let (route_tables, vpc_subnets, nacls, instances, tgw, efs, rds) = futures::join!(
        read_route_tables(ctx),
        read_vpc_subnets(ctx),
        read_nacls(ctx),
        read_instances(ctx),
        read_tgw(ctx),
        read_efs(ctx),
        read_rds(ctx),
    );
    let types = match &instances {
        Ok(v) => {
            let wanted: BTreeSet<String> = v
                .iter()
                .filter(|i| {
                    i.cluster_tag.as_deref() == Some(ctx.name())
                        || ctx.cluster.routers.contains(&i.id)
                })
                .map(|i| i.instance_type.clone())
                .collect();
            read_types(ctx, wanted).await
        }
        Err(e) => Err(e.clone()),
    };
    AwsFacts {
        subnets: ctx
            .cluster
            .subnets
            .iter()
            .zip(&env.facts.subnets)
            .map(|(id, f)| {
                (
                    id.clone(),
                    f.as_ref().map(|f| f.3.to_string()).unwrap_or_default(),
                )
            })
            .collect(),
        routers: env
            .routers
            .iter()
            .map(|r| RouterFacts {
                id: r.id.clone(),
                eni: r.eni.clone(),
                sdc: r.sdc,
            })
            .collect(),
        selected_tables: ec2::route_tables(ctx, env).await,
        route_tables,
        vpc_subnets,
        groups,
        nacls,
        instances,
        types,
        tgw,
        efs,
        rds,
    }
}

async fn read_route_tables(ctx: &Ctx) -> Read<Vec<RouteTable>> {
    let cidr = &ctx.cluster.cfg.overlay_cidr;
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = ctx
            .clients
            .ec2
            .describe_route_tables()
            .filters(filter("vpc-id", &ctx.cluster.cfg.vpc_id))
            .set_next_token(token.clone())
            .send()
            .await
            .map_err(|e| reason(crate::aws::err("DescribeRouteTables", e)))?;
        for rt in page.route_tables() {
            let Some(id) = rt.route_table_id() else {
                continue;
            };
            out.push(RouteTable {
                id: id.to_string(),
                main: rt.associations().iter().any(|a| a.main() == Some(true)),
                subnets: rt
                    .associations()
                    .iter()
                    .filter_map(|a| a.subnet_id().map(str::to_string))
                    .collect(),
                overlay_route: rt
                    .routes()
                    .iter()
                    .find(|r| r.destination_cidr_block() == Some(cidr.as_str()))
                    .map(ec2::router::route_target),
            });
        }
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            return Ok(out);
        }
    }
}

async fn read_vpc_subnets(ctx: &Ctx) -> Read<Vec<String>> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = ctx
            .clients
            .ec2
            .describe_subnets()
            .filters(filter("vpc-id", &ctx.cluster.cfg.vpc_id))
            .set_next_token(token.clone())
            .send()
            .await
            .map_err(|e| reason(crate::aws::err("DescribeSubnets", e)))?;
        out.extend(
            page.subnets()
                .iter()
                .filter_map(|s| s.subnet_id().map(str::to_string)),
        );
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            return Ok(out);
        }
    }
}

async fn read_nacls(ctx: &Ctx) -> Read<BTreeMap<String, Nacl>> {
    let out = ctx
        .clients
        .ec2
        .describe_network_acls()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("association.subnet-id")
                .set_values(Some(ctx.cluster.subnets.clone()))
                .build(),
        )
        .send()
        .await
        .map_err(|e| reason(crate::aws::err("DescribeNetworkAcls", e)))?;
    let mut by_subnet = BTreeMap::new();
    for a in out.network_acls() {
        let acl = Nacl {
            id: a.network_acl_id().unwrap_or_default().to_string(),
            entries: a
                .entries()
                .iter()
                .filter_map(|e| {
                    Some(NaclEntry {
                        rule: e.rule_number()?,
                        egress: e.egress().unwrap_or(false),
                        proto: model::norm_proto(e.protocol().unwrap_or("-1")),
                        ports: e.port_range().and_then(|p| Some((p.from()?, p.to()?))),
                        cidr: e.cidr_block()?.parse().ok()?,
                        allow: e.rule_action().map(|a| a.as_str()) == Some("allow"),
                    })
                })
                .collect(),
        };
        for assoc in a.associations() {
            if let Some(s) = assoc.subnet_id() {
                if ctx.cluster.subnets.iter().any(|x| x == s) {
                    by_subnet.insert(s.to_string(), acl.clone());
                }
            }
        }
    }
    Ok(by_subnet)
}

async fn read_instances(ctx: &Ctx) -> Read<Vec<Instance>> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = ctx
            .clients
            .ec2
            .describe_instances()
            .filters(filter("vpc-id", &ctx.cluster.cfg.vpc_id))
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("instance-state-name")
                    .set_values(Some(
                        ["pending", "running", "stopping", "stopped", "shutting-down"]
                            .map(String::from)
                            .to_vec(),
                    ))
                    .build(),
            )
            .set_next_token(token.clone())
            .send()
            .await
            .map_err(|e| reason(crate::aws::err("DescribeInstances", e)))?;
        for i in page.reservations().iter().flat_map(|r| r.instances()) {
            let tag = |k: &str| {
                i.tags()
                    .iter()
                    .find(|t| t.key() == Some(k))
                    .and_then(|t| t.value())
                    .map(str::to_string)
            };
            let mut enis: Vec<(String, String)> = i
                .network_interfaces()
                .iter()
                .filter_map(|n| {
                    Some((
                        n.network_interface_id()?.to_string(),
                        n.subnet_id().unwrap_or_default().to_string(),
                    ))
                })
                .collect();
            if enis.is_empty() {
                if let Some(s) = i.subnet_id() {
                    enis.push((String::new(), s.to_string()));
                }
            }
            out.push(Instance {
                id: i.instance_id().unwrap_or_default().to_string(),
                state: i
                    .state()
                    .and_then(|s| s.name())
                    .map(|n| n.as_str().to_string())
                    .unwrap_or_default(),
                instance_type: i
                    .instance_type()
                    .map(|t| t.as_str().to_string())
                    .unwrap_or_default(),
                name: tag("Name"),
                cluster_tag: tag(CLUSTER_TAG),
                enis,
            });
        }
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            return Ok(out);
        }
    }
}

async fn read_types(ctx: &Ctx, wanted: BTreeSet<String>) -> Read<BTreeMap<String, TypeInfo>> {
    let mut out = BTreeMap::new();
    if wanted.is_empty() {
        return Ok(out);
    }
    let types: Vec<aws_sdk_ec2::types::InstanceType> =
        wanted.iter().map(|t| t.as_str().into()).collect();
    let mut token: Option<String> = None;
    loop {
        let page = ctx
            .clients
            .ec2
            .describe_instance_types()
            .set_instance_types(Some(types.clone()))
            .set_next_token(token.clone())
            .send()
            .await
            .map_err(|e| reason(crate::aws::err("DescribeInstanceTypes", e)))?;
        for t in page.instance_types() {
            if let Some(name) = t.instance_type() {
                out.insert(
                    name.as_str().to_string(),
                    TypeInfo {
                        hypervisor: t
                            .hypervisor()
                            .map(|h| h.as_str().to_string())
                            .unwrap_or_default(),
                        bare_metal: t.bare_metal().unwrap_or(false),
                    },
                );
            }
        }
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            return Ok(out);
        }
    }
}

async fn read_tgw(ctx: &Ctx) -> Read<TgwFacts> {
    let mut t = TgwFacts {
        tgw: ec2::find_tgw(ctx).await.map_err(reason)?,
        ..Default::default()
    };
    if !ctx.cluster.flood.needs_multicast_domain() {
        return Ok(t);
    }
    let Some(tgw) = t.tgw.clone() else {
        return Ok(t);
    };
    t.attachment = ec2::find_attachment(ctx, &tgw.id).await.map_err(reason)?;
    t.domain = ec2::find_domain(ctx, &tgw.id).await.map_err(reason)?;
    if let Some(d) = t.domain.clone() {
        t.associations = ec2::associations(ctx, &d.id).await.map_err(reason)?;
        if let Some(g) = ctx.cluster.group {
            t.members = Some(read_members(ctx, &d.id, &g.to_string()).await);
        }
    }
    Ok(t)
}

async fn read_members(ctx: &Ctx, domain: &str, group: &str) -> Read<Vec<Member>> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = ctx
            .clients
            .ec2
            .search_transit_gateway_multicast_groups()
            .transit_gateway_multicast_domain_id(domain)
            .filters(filter("group-ip-address", group))
            .filters(filter("is-group-member", "true"))
            .set_next_token(token.clone())
            .send()
            .await
            .map_err(|e| reason(crate::aws::err("SearchTransitGatewayMulticastGroups", e)))?;
        for g in page.multicast_groups() {
            if g.group_member() == Some(false) {
                continue;
            }
            if let Some(eni) = g.network_interface_id() {
                out.push(Member {
                    eni: eni.to_string(),
                    subnet: g.subnet_id().unwrap_or_default().to_string(),
                    member_type: g
                        .member_type()
                        .map(|m| m.as_str().to_string())
                        .unwrap_or_default(),
                });
            }
        }
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            return Ok(out);
        }
    }
}

async fn read_efs(ctx: &Ctx) -> Read<EfsFacts> {
    let mut e = EfsFacts {
        fs: efs::find(ctx).await.map_err(reason)?,
        ..Default::default()
    };
    if let Some(fs) = e.fs.clone() {
        let subnets = &ctx.cluster.subnets;
        for subnet in subnets {
            if let Some(mt) = efs::observe_mount_target(ctx, &fs.id, subnet)
                .await
                .map_err(reason)?
            {
                e.mount_targets.insert(subnet.clone(), mt);
            }
        }
        e.other_subnets = efs::mount_targets(ctx, &fs.id)
            .await
            .map_err(reason)?
            .into_iter()
            .filter(|m| !subnets.contains(&m.subnet))
            .map(|m| m.subnet)
            .collect();
    }
    Ok(e)
}

async fn read_rds(ctx: &Ctx) -> Read<RdsFacts> {
    let db = rds::find_instance(ctx).await.map_err(reason)?;
    let mysql = model::db_mysql_for(db.as_ref().map(|d| d.engine_version.as_str()));
    let want_group = ctx.cluster.db_parameter_group_for(&mysql);
    let group_exists = rds::find_parameter_group(ctx, &want_group)
        .await
        .map_err(reason)?
        .is_some();
    let params = if group_exists {
        rds::user_parameters(ctx, &want_group)
            .await
            .map_err(reason)?
    } else {
        BTreeMap::new()
    };
    Ok(RdsFacts {
        db,
        want_group,
        group_exists,
        params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ec2::tgw::DomainOptions;
    use crate::efs::MountTarget;
    use crate::model::{DbSettings, Perm};

    const CONFIG: &str = r#"
name = "lab1"
region = "eu-west-1"
vpc_id = "vpc-0123456789abcdef0"
subnet_id = "subnet-0123456789abcdef0"
second_subnet_id = "subnet-0123456789abcdef1"
overlay_cidr = "100.64.0.0/16"
multicast_group = "239.1.1.1"
router_instance_id = "i-0123456789abcdef0"
access_cidr = "203.0.113.0/24"
"#;
    const SUBNET: &str = "subnet-0123456789abcdef0";
    const SUBNET2: &str = "subnet-0123456789abcdef1";
    const ROUTER: &str = "i-0123456789abcdef0";

    fn cluster() -> Cluster {
        crate::config::parse(CONFIG).unwrap()
    }

    fn unicast() -> Cluster {
        crate::config::parse(&format!("{CONFIG}flood = \"unicast\"\n")).unwrap()
    }

    fn evpn() -> Cluster {
        crate::config::parse(&format!("{CONFIG}flood = \"evpn\"\n")).unwrap()
    }

    const BGP: fn() -> Perm = || perm("tcp", 179, cidr("10.0.1.0/24"));

    /// [`good`] as an evpn cluster has it: no IGMP rule, BGP from the subnet.
    fn evpn_good() -> AwsFacts {
        AwsFacts {
            groups: Ok(vtep(vec![perm("udp", 4789, cidr("10.0.1.0/24")), BGP()])),
            ..good()
        }
    }

    fn inst(id: &str, eni: &str, tagged: bool) -> Instance {
        Instance {
            id: id.into(),
            state: "running".into(),
            instance_type: "c5.large".into(),
            name: None,
            cluster_tag: tagged.then(|| "lab1".to_string()),
            enis: vec![(eni.into(), SUBNET.into())],
        }
    }

    fn member(eni: &str) -> Member {
        Member {
            eni: eni.into(),
            subnet: SUBNET.into(),
            member_type: "igmp".into(),
        }
    }

    fn perm(proto: &str, port: i32, src: Source) -> Perm {
        Perm::new(proto, port, port, src, "")
    }

    fn cidr(s: &str) -> Source {
        Source::Cidr(s.into())
    }

    fn vtep(rules: Vec<Perm>) -> BTreeMap<String, FoundGroup> {
        let mut m = BTreeMap::new();
        m.insert(
            "vtep".to_string(),
            FoundGroup {
                id: "sg-v".into(),
                ingress: rules,
            },
        );
        m.insert(
            "efs".to_string(),
            FoundGroup {
                id: "sg-e".into(),
                ingress: vec![],
            },
        );
        m
    }

    fn allow_all(rule: i32, egress: bool) -> NaclEntry {
        NaclEntry {
            rule,
            egress,
            proto: "-1".into(),
            ports: None,
            cidr: "0.0.0.0/0".parse().unwrap(),
            allow: true,
        }
    }

    fn nacl_of(subnet: &str, acl: Nacl) -> BTreeMap<String, Nacl> {
        [(subnet.to_string(), acl)].into()
    }

    /// A healthy multicast cluster: router and one host, both members.
    fn good() -> AwsFacts {
        let params = model::DB_PARAMETERS
            .iter()
            .map(|(n, v, _)| (n.to_string(), v.to_string()))
            .collect();
        AwsFacts {
            subnets: vec![(SUBNET.into(), "10.0.1.0/24".into())],
            routers: vec![RouterFacts {
                id: ROUTER.into(),
                eni: "eni-r".into(),
                sdc: false,
            }],
            selected_tables: vec!["rtb-main".into()],
            route_tables: Ok(vec![RouteTable {
                id: "rtb-main".into(),
                main: true,
                subnets: vec![],
                overlay_route: Some(RouteTarget {
                    eni: Some("eni-r".into()),
                    other: None,
                }),
            }]),
            vpc_subnets: Ok(vec![SUBNET.into(), SUBNET2.into()]),
            groups: Ok(vtep(vec![
                perm("2", -1, cidr("0.0.0.0/32")),
                perm("udp", 4789, cidr("10.0.1.0/24")),
            ])),
            nacls: Ok(nacl_of(
                SUBNET,
                Nacl {
                    id: "acl-1".into(),
                    entries: vec![allow_all(100, false), allow_all(100, true)],
                },
            )),
            instances: Ok(vec![
                inst(ROUTER, "eni-r", false),
                inst("i-h", "eni-h", true),
            ]),
            types: Ok([(
                "c5.large".to_string(),
                TypeInfo {
                    hypervisor: "nitro".into(),
                    bare_metal: false,
                },
            )]
            .into()),
            tgw: Ok(TgwFacts {
                tgw: Some(FoundTgw {
                    id: "tgw-1".into(),
                    state: "available".into(),
                    multicast: true,
                }),
                attachment: Some(FoundAttachment {
                    id: "tgw-attach-1".into(),
                    state: "available".into(),
                    subnets: vec![SUBNET.into()],
                }),
                domain: Some(FoundDomain {
                    id: "tgw-mcast-domain-1".into(),
                    state: "available".into(),
                    options: crate::ec2::tgw::wanted_options(),
                }),
                associations: vec![Association {
                    attachment: "tgw-attach-1".into(),
                    subnet: SUBNET.into(),
                    state: "associated".into(),
                }],
                members: Some(Ok(vec![member("eni-r"), member("eni-h")])),
            }),
            efs: Ok(EfsFacts {
                fs: Some(Fs {
                    id: "fs-1".into(),
                    state: "available".into(),
                    encrypted: true,
                    mode: "provisioned".into(),
                    mibps: Some(25.0),
                }),
                mount_targets: [(
                    SUBNET.to_string(),
                    ObservedMountTarget {
                        target: MountTarget {
                            id: "fsmt-1".into(),
                            subnet: SUBNET.into(),
                            state: "available".into(),
                        },
                        security_groups: vec!["sg-e".into()],
                    },
                )]
                .into(),
                other_subnets: vec![],
            }),
            rds: Ok(RdsFacts {
                db: Some(Db {
                    id: "overlay-lab1-db".into(),
                    arn: "arn:db".into(),
                    status: "available".into(),
                    engine_version: "8.4.8".into(),
                    endpoint: None,
                    settings: DbSettings {
                        parameter_group: "overlay-lab1-mysql84".into(),
                        ..Default::default()
                    },
                    ours: true,
                    parameter_apply_status: "in-sync".into(),
                }),
                want_group: "overlay-lab1-mysql84".into(),
                group_exists: true,
                params,
            }),
        }
    }

    fn get<'a>(checks: &'a [Check], id: &str) -> &'a Check {
        checks.iter().find(|c| c.id == id).unwrap()
    }

    /// `id` has `verdict` and every other check is ok; returns `id`'s check.
    fn only(c: &Cluster, f: &AwsFacts, id: &str, verdict: Verdict) -> Check {
        let checks = diagnose(c, f);
        for k in &checks {
            if k.id == id {
                assert_eq!(k.verdict, verdict, "{k:#?}");
            } else {
                assert_eq!(k.verdict, Verdict::Ok, "{k:#?}");
            }
        }
        get(&checks, id).clone()
    }

    #[test]
    fn a_healthy_cluster_is_all_ok_in_id_order_without_fixes() {
        for (c, f) in [
            (cluster(), good()),
            (unicast(), good()),
            (evpn(), evpn_good()),
        ] {
            let checks = diagnose(&c, &f);
            let ids: Vec<&str> = checks.iter().map(|k| k.id).collect();
            assert_eq!(ids, CHECK_IDS);
            for k in &checks {
                assert_eq!(k.verdict, Verdict::Ok, "{k:#?}");
                assert_eq!(k.fix, None);
                assert!(!k.summary.is_empty());
            }
            assert_eq!(exit_code(&checks), 0);
        }
    }

    #[test]
    fn every_verdict_but_ok_carries_a_fix_or_a_reason() {
        let mut f = good();
        f.routers[0].sdc = true;
        f.nacls = Err("DescribeNetworkAcls: UnauthorizedOperation".into());
        let checks = diagnose(&cluster(), &f);
        let sdc = get(&checks, ROUTER_SDC);
        assert!(sdc
            .fix
            .as_deref()
            .unwrap()
            .contains("--no-source-dest-check"));
        let n = get(&checks, NACL);
        assert_eq!(n.verdict, Verdict::Unknown);
        assert!(n.summary.contains("DescribeNetworkAcls"), "{n:?}");
        assert!(n
            .fix
            .as_deref()
            .unwrap()
            .contains("iam-policy --for bootstrap"));
    }

    #[test]
    fn router_check_on_or_router_stopped_fail() {
        let mut f = good();
        f.routers[0].sdc = true;
        let k = only(&cluster(), &f, ROUTER_SDC, Verdict::Fail);
        assert!(k.summary.contains(ROUTER));
        let mut f = good();
        if let Ok(v) = &mut f.instances {
            v[0].state = "stopped".into();
        }
        let checks = diagnose(&cluster(), &f);
        let k = get(&checks, ROUTER_SDC);
        assert_eq!(k.verdict, Verdict::Fail);
        assert!(k.summary.contains("stopped"), "{k:?}");
    }

    #[test]
    fn routes_name_each_table_and_subnet_that_lacks_the_route() {
        let mut f = good();
        f.selected_tables = vec!["rtb-main".into(), "rtb-2".into()];
        if let Ok(t) = &mut f.route_tables {
            t[0].overlay_route = Some(RouteTarget {
                eni: None,
                other: Some("igw-1".into()),
            });
            t.push(RouteTable {
                id: "rtb-2".into(),
                main: false,
                subnets: vec![SUBNET2.into()],
                overlay_route: None,
            });
        }
        let k = only(&cluster(), &f, ROUTES, Verdict::Fail);
        // the main table's subnets are those no table names explicitly
        assert!(k.summary.contains("rtb-main (-> igw-1)"), "{}", k.summary);
        assert!(k.summary.contains("rtb-2 (no route)"), "{}", k.summary);
        assert!(
            k.summary
                .contains(&format!("subnets without the route: {SUBNET}, {SUBNET2}")),
            "{}",
            k.summary
        );
        assert!(
            k.evidence
                .iter()
                .any(|e| e.starts_with("rtb-main (main): subnets [subnet-0123456789abcdef0]")),
            "{:?}",
            k.evidence
        );
    }

    #[test]
    fn the_overlay_subnets_own_table_counts_even_when_not_selected() {
        let mut f = good();
        f.selected_tables = vec!["rtb-2".into()];
        if let Ok(t) = &mut f.route_tables {
            t[0].overlay_route = None;
            t.push(RouteTable {
                id: "rtb-2".into(),
                main: false,
                subnets: vec![SUBNET2.into()],
                overlay_route: Some(RouteTarget {
                    eni: Some("eni-r".into()),
                    other: None,
                }),
            });
        }
        let k = only(&cluster(), &f, ROUTES, Verdict::Fail);
        assert!(k.summary.contains("rtb-main"), "{}", k.summary);
        assert!(
            k.fix.as_deref().unwrap().contains("add rtb-main"),
            "{:?}",
            k.fix
        );
        // a selected table that is gone
        let mut f = good();
        f.selected_tables.push("rtb-gone".into());
        let k = only(&cluster(), &f, ROUTES, Verdict::Fail);
        assert!(k.summary.contains("rtb-gone (gone)"), "{}", k.summary);
    }

    fn with_vtep(rules: Vec<Perm>) -> AwsFacts {
        AwsFacts {
            groups: Ok(vtep(rules)),
            ..good()
        }
    }

    const VX: fn() -> Perm = || perm("udp", 4789, cidr("10.0.1.0/24"));
    const IGMP: fn() -> Perm = || perm("2", -1, cidr("0.0.0.0/32"));

    #[test]
    fn igmp_rule_exact_wide_by_reference_or_missing() {
        let c = cluster();
        // "all traffic" from 0.0.0.0/32 counts too
        only(
            &c,
            &with_vtep(vec![perm("-1", -1, cidr("0.0.0.0/32")), VX()]),
            SG_IGMP,
            Verdict::Ok,
        );
        let k = only(
            &c,
            &with_vtep(vec![perm("2", -1, cidr("0.0.0.0/0")), VX()]),
            SG_IGMP,
            Verdict::Warn,
        );
        assert!(k.summary.contains("wider"), "{}", k.summary);
        let k = only(
            &c,
            &with_vtep(vec![perm("2", -1, Source::Group("sg-x".into())), VX()]),
            SG_IGMP,
            Verdict::Fail,
        );
        assert!(k.summary.contains("does not honour"), "{}", k.summary);
        let k = only(&c, &with_vtep(vec![VX()]), SG_IGMP, Verdict::Fail);
        assert!(
            k.fix.as_deref().unwrap().contains("IpProtocol=2"),
            "{:?}",
            k.fix
        );
        // unicast: not used, whatever the group has
        let k = only(&unicast(), &with_vtep(vec![VX()]), SG_IGMP, Verdict::Ok);
        assert!(k.summary.starts_with("not used (flood = unicast)"));
    }

    #[test]
    fn vxlan_rule_from_the_subnet_a_wider_net_anywhere_a_reference_or_part() {
        let c = cluster();
        only(
            &c,
            &with_vtep(vec![IGMP(), perm("udp", 4789, cidr("10.0.0.0/16"))]),
            SG_VXLAN,
            Verdict::Ok,
        );
        // a port range covering 4789
        only(
            &c,
            &with_vtep(vec![
                IGMP(),
                Perm::new("udp", 4000, 5000, cidr("10.0.1.0/24"), ""),
            ]),
            SG_VXLAN,
            Verdict::Ok,
        );
        let k = only(
            &c,
            &with_vtep(vec![IGMP(), perm("udp", 4789, cidr("0.0.0.0/0"))]),
            SG_VXLAN,
            Verdict::Warn,
        );
        assert!(k.summary.contains("too wide"), "{}", k.summary);
        let by_ref = with_vtep(vec![
            IGMP(),
            perm("udp", 4789, Source::Group("sg-v".into())),
        ]);
        let k = only(&c, &by_ref, SG_VXLAN, Verdict::Fail);
        assert!(k.summary.contains("does not honour"), "{}", k.summary);
        only(&unicast(), &by_ref, SG_VXLAN, Verdict::Warn);
        let k = only(
            &c,
            &with_vtep(vec![IGMP(), perm("udp", 4789, cidr("10.0.1.0/25"))]),
            SG_VXLAN,
            Verdict::Fail,
        );
        assert!(
            k.summary.contains("part of the overlay subnet"),
            "{}",
            k.summary
        );
        let k = only(
            &c,
            &with_vtep(vec![IGMP(), perm("udp", 8472, cidr("10.0.1.0/24"))]),
            SG_VXLAN,
            Verdict::Fail,
        );
        assert!(k
            .fix
            .as_deref()
            .unwrap()
            .contains("--port 4789 --cidr 10.0.1.0/24"));
    }

    #[test]
    fn bgp_rule_from_the_subnet_missing_by_reference_anywhere_or_part() {
        let c = evpn();
        let vx = || perm("udp", 4789, cidr("10.0.1.0/24"));
        let k = only(&c, &evpn_good(), SG_BGP, Verdict::Ok);
        assert_eq!(
            k.summary,
            "sg-v lets TCP 179 in from 10.0.1.0/24 (covers the overlay subnet 10.0.1.0/24)"
        );
        assert!(k
            .evidence
            .iter()
            .any(|e| e == "rule: tcp/179 from 10.0.1.0/24"));
        // a wider net, a port range, "all traffic" from the subnet: ok
        for rule in [
            perm("tcp", 179, cidr("10.0.0.0/16")),
            Perm::new("tcp", 1, 1024, cidr("10.0.1.0/24"), ""),
            perm("-1", -1, cidr("10.0.1.0/24")),
        ] {
            only(&c, &with_vtep(vec![vx(), rule]), SG_BGP, Verdict::Ok);
        }
        // missing: fail, with the rule to add
        let k = only(&c, &with_vtep(vec![vx()]), SG_BGP, Verdict::Fail);
        assert!(
            k.summary
                .starts_with("sg-v does not let TCP 179 in from the overlay subnet 10.0.1.0/24"),
            "{}",
            k.summary
        );
        assert!(k.summary.contains("route reflector"), "{}", k.summary);
        assert!(
            k.fix
                .as_deref()
                .unwrap()
                .contains("--group-id sg-v --protocol tcp --port 179 --cidr 10.0.1.0/24"),
            "{:?}",
            k.fix
        );
        // UDP 179 or TCP 4789 is not BGP
        for rule in [
            perm("udp", 179, cidr("10.0.1.0/24")),
            perm("tcp", 4789, cidr("10.0.1.0/24")),
        ] {
            only(&c, &with_vtep(vec![vx(), rule]), SG_BGP, Verdict::Fail);
        }
        // only from a security group: BGP is unicast TCP, it works between members: warn (as
        // sg.vtep.vxlan judges a reference without multicast)
        let k = only(
            &c,
            &with_vtep(vec![vx(), perm("tcp", 179, Source::Group("sg-v".into()))]),
            SG_BGP,
            Verdict::Warn,
        );
        assert!(
            k.summary
                .contains("from a security group (tcp/179 from sg-v)"),
            "{}",
            k.summary
        );
        assert!(k.fix.as_deref().unwrap().contains("--port 179"));
        // from anywhere: warn, too wide
        let k = only(
            &c,
            &with_vtep(vec![vx(), perm("tcp", 179, cidr("0.0.0.0/0"))]),
            SG_BGP,
            Verdict::Warn,
        );
        assert!(k.summary.contains("too wide"), "{}", k.summary);
        // part of the subnet
        let k = only(
            &c,
            &with_vtep(vec![vx(), perm("tcp", 179, cidr("10.0.1.0/25"))]),
            SG_BGP,
            Verdict::Fail,
        );
        assert!(
            k.summary.contains("part of the overlay subnet"),
            "{}",
            k.summary
        );
        // the VXLAN rule by reference only warns with evpn too (no multicast)
        only(
            &c,
            &with_vtep(vec![perm("udp", 4789, Source::Group("sg-v".into())), BGP()]),
            SG_VXLAN,
            Verdict::Warn,
        );
    }

    #[test]
    fn bgp_is_not_used_without_evpn_and_evpn_does_not_use_the_multicast_checks() {
        for (c, mode) in [(cluster(), "multicast"), (unicast(), "unicast")] {
            // no TCP 179 rule at all: fine
            let k = only(&c, &good(), SG_BGP, Verdict::Ok);
            assert!(
                k.summary
                    .starts_with(&format!("not used (flood = {mode}): no BGP speaker")),
                "{}",
                k.summary
            );
            assert_eq!(k.evidence, Vec::<String>::new());
        }
        let checks = diagnose(&evpn(), &evpn_good());
        for id in [SG_IGMP, TGW_DOMAIN, TGW_MEMBERS, NITRO] {
            let k = get(&checks, id);
            assert_eq!(k.verdict, Verdict::Ok, "{k:?}");
            assert!(
                k.summary.starts_with("not used (flood = evpn)"),
                "{id}: {}",
                k.summary
            );
        }
        // a transit gateway left from multicast flooding is named, as with unicast
        assert!(get(&checks, TGW_DOMAIN).evidence[0].contains("tgw-1"));
        // an xen node can do unicast, hence EVPN
        let mut f = evpn_good();
        if let Ok(v) = &mut f.instances {
            v[1].instance_type = "m4.large".into();
        }
        if let Ok(m) = &mut f.types {
            m.insert(
                "m4.large".into(),
                TypeInfo {
                    hypervisor: "xen".into(),
                    bare_metal: false,
                },
            );
        }
        only(&evpn(), &f, NITRO, Verdict::Ok);
    }

    #[test]
    fn no_vtep_group_fails_both_rules_and_an_unreadable_one_is_unknown() {
        let mut f = good();
        f.groups = Ok(BTreeMap::new());
        let checks = diagnose(&cluster(), &f);
        assert_eq!(get(&checks, SG_IGMP).verdict, Verdict::Fail);
        assert_eq!(get(&checks, SG_VXLAN).verdict, Verdict::Fail);
        f.groups = Err("DescribeSecurityGroups: throttled".into());
        let checks = diagnose(&cluster(), &f);
        assert_eq!(get(&checks, SG_IGMP).verdict, Verdict::Unknown);
        assert_eq!(get(&checks, SG_VXLAN).verdict, Verdict::Unknown);
        // evpn: the BGP rule too
        f.groups = Ok(BTreeMap::new());
        assert_eq!(get(&diagnose(&evpn(), &f), SG_BGP).verdict, Verdict::Fail);
        f.groups = Err("DescribeSecurityGroups: throttled".into());
        assert_eq!(
            get(&diagnose(&evpn(), &f), SG_BGP).verdict,
            Verdict::Unknown
        );
    }

    fn entry(
        rule: i32,
        egress: bool,
        proto: &str,
        ports: Option<(i32, i32)>,
        net: &str,
        allow: bool,
    ) -> NaclEntry {
        NaclEntry {
            rule,
            egress,
            proto: proto.into(),
            ports,
            cidr: net.parse().unwrap(),
            allow,
        }
    }

    #[test]
    fn network_acl_rules_are_evaluated_in_number_order() {
        let a: Ipv4Addr = "10.0.1.7".parse().unwrap();
        let deny = entry(50, false, "17", Some((4789, 4789)), "0.0.0.0/0", false);
        let es = vec![allow_all(100, false), deny.clone()];
        assert_eq!(
            nacl_decides(&es, false, "17", Some(4789), a),
            (false, Some(50))
        );
        assert_eq!(
            nacl_decides(&es, false, "17", Some(4790), a),
            (true, Some(100))
        );
        assert_eq!(nacl_decides(&es, true, "17", Some(4789), a), (false, None));
        // the deny covers only the upper half of the subnet
        let mut f = good();
        f.nacls = Ok(nacl_of(
            SUBNET,
            Nacl {
                id: "acl-1".into(),
                entries: vec![
                    allow_all(100, false),
                    allow_all(100, true),
                    entry(10, false, "17", Some((4789, 4789)), "10.0.1.128/25", false),
                ],
            },
        ));
        let k = only(&cluster(), &f, NACL, Verdict::Fail);
        assert!(
            k.summary.contains("inbound UDP 4789 from 10.0.1.0/24"),
            "{}",
            k.summary
        );
        // IGMP to the group going out, denied
        let mut f = good();
        f.nacls = Ok(nacl_of(
            SUBNET,
            Nacl {
                id: "acl-1".into(),
                entries: vec![
                    allow_all(100, false),
                    entry(100, true, "17", None, "10.0.0.0/8", true),
                ],
            },
        ));
        let k = only(&cluster(), &f, NACL, Verdict::Fail);
        assert!(
            k.summary.contains("outbound IGMP to 239.1.1.1"),
            "{}",
            k.summary
        );
        assert!(
            k.summary.contains("outbound UDP 4789 to 239.1.1.1"),
            "{}",
            k.summary
        );
        // the same ACL carries unicast flooding
        only(&unicast(), &f, NACL, Verdict::Ok);
    }

    fn tgw_facts(f: &mut AwsFacts) -> &mut TgwFacts {
        f.tgw.as_mut().unwrap()
    }

    #[test]
    fn multicast_domain_igmp_off_missing_pieces_or_associating() {
        let c = cluster();
        let mut f = good();
        tgw_facts(&mut f).domain.as_mut().unwrap().options = DomainOptions {
            igmpv2: "disable".into(),
            ..crate::ec2::tgw::wanted_options()
        };
        let k = only(&c, &f, TGW_DOMAIN, Verdict::Fail);
        assert!(k.summary.contains("IGMPv2 disable"), "{}", k.summary);
        assert!(k.fix.as_deref().unwrap().contains("teardown"));
        let mut f = good();
        tgw_facts(&mut f).associations[0].state = "associating".into();
        only(&c, &f, TGW_DOMAIN, Verdict::Warn);
        let mut f = good();
        tgw_facts(&mut f).attachment.as_mut().unwrap().subnets = vec![SUBNET2.into()];
        let k = only(&c, &f, TGW_DOMAIN, Verdict::Fail);
        assert!(k.summary.contains("does not include"), "{}", k.summary);
        let mut f = good();
        *tgw_facts(&mut f) = TgwFacts::default();
        let checks = diagnose(&c, &f);
        assert_eq!(get(&checks, TGW_DOMAIN).verdict, Verdict::Fail);
        // nothing to search: members unknown (the cause is tgw.domain's)
        assert_eq!(get(&checks, TGW_MEMBERS).verdict, Verdict::Unknown);
        // unicast: not used; a chain left from multicast is named
        let mut f = good();
        tgw_facts(&mut f).domain = None;
        let k = only(&unicast(), &f, TGW_DOMAIN, Verdict::Ok);
        assert!(k.summary.starts_with("not used (flood = unicast)"));
        assert!(k.evidence[0].contains("tgw-1") && k.evidence[0].contains("teardown"));
    }

    #[test]
    fn members_missing_foreign_near_or_over_the_cap() {
        let c = cluster();
        let mut f = good();
        tgw_facts(&mut f).members = Some(Ok(vec![member("eni-r")]));
        let k = only(&c, &f, TGW_MEMBERS, Verdict::Fail);
        assert!(
            k.summary.contains("i-h") && !k.summary.contains(ROUTER),
            "{}",
            k.summary
        );
        // a stopped cluster instance need not be a member
        if let Ok(v) = &mut f.instances {
            v[1].state = "stopped".into();
        }
        only(&c, &f, TGW_MEMBERS, Verdict::Ok);
        let mut f = good();
        tgw_facts(&mut f).members =
            Some(Ok(vec![member("eni-r"), member("eni-h"), member("eni-x")]));
        let k = only(&c, &f, TGW_MEMBERS, Verdict::Warn);
        assert!(k.summary.contains("eni-x"), "{}", k.summary);
        // 80 of 100: warn; 101 cluster instances: fail
        for (n, want) in [
            (79, Verdict::Ok),
            (80, Verdict::Warn),
            (100, Verdict::Warn),
            (101, Verdict::Fail),
        ] {
            let mut f = good();
            let hosts: Vec<Instance> = (0..n - 1)
                .map(|i| inst(&format!("i-{i}"), &format!("eni-{i}"), true))
                .chain([inst(ROUTER, "eni-r", false)])
                .collect();
            let members = hosts.iter().map(|h| member(&h.enis[0].0)).collect();
            tgw_facts(&mut f).members = Some(Ok(members));
            f.instances = Ok(hosts);
            let k = only(&c, &f, TGW_MEMBERS, want);
            if want == Verdict::Warn {
                assert!(k.summary.contains("cap of 100"), "{}", k.summary);
            }
        }
        let mut f = good();
        tgw_facts(&mut f).members = Some(Err("SearchTransitGatewayMulticastGroups: denied".into()));
        only(&c, &f, TGW_MEMBERS, Verdict::Unknown);
    }

    #[test]
    fn strangers_in_the_overlay_subnet() {
        let mut f = good();
        let mut s = inst("i-s", "eni-s", false);
        s.name = Some("bastion".into());
        // another cluster's node is a stranger here too
        let mut other = inst("i-o", "eni-o", false);
        other.cluster_tag = Some("lab2".into());
        // an instance in another subnet is none of our business
        let mut away = inst("i-away", "eni-a", false);
        away.enis[0].1 = SUBNET2.into();
        if let Ok(v) = &mut f.instances {
            v.extend([s.clone(), other, away]);
        }
        let k = only(&cluster(), &f, STRANGERS, Verdict::Fail);
        assert!(
            k.summary.contains("i-s (bastion)") && k.summary.contains("i-o"),
            "{}",
            k.summary
        );
        assert!(!k.summary.contains("i-away"));
        let mut f = good();
        s.state = "stopped".into();
        if let Ok(v) = &mut f.instances {
            v.push(s);
        }
        only(&cluster(), &f, STRANGERS, Verdict::Warn);
    }

    #[test]
    fn nitro_xen_bare_metal_and_unknown_types() {
        let c = cluster();
        let mut f = good();
        let set = |f: &mut AwsFacts, t: &str, h: &str, metal: bool| {
            if let Ok(v) = &mut f.instances {
                v[1].instance_type = t.into();
            }
            if let Ok(m) = &mut f.types {
                m.insert(
                    t.into(),
                    TypeInfo {
                        hypervisor: h.into(),
                        bare_metal: metal,
                    },
                );
            }
        };
        set(&mut f, "m4.large", "xen", false);
        let k = only(&c, &f, NITRO, Verdict::Fail);
        assert!(k.summary.contains("i-h m4.large"), "{}", k.summary);
        // unicast: no multicast to send
        only(&unicast(), &f, NITRO, Verdict::Ok);
        let mut f = good();
        set(&mut f, "c5.metal", "", true);
        only(&c, &f, NITRO, Verdict::Ok);
        let mut f = good();
        if let Ok(v) = &mut f.instances {
            v[1].instance_type = "z9.huge".into();
        }
        only(&c, &f, NITRO, Verdict::Unknown);
    }

    fn rds_facts(f: &mut AwsFacts) -> &mut RdsFacts {
        f.rds.as_mut().unwrap()
    }

    #[test]
    fn rds_parameters_drift_wrong_group_pending_reboot_or_no_db() {
        let c = cluster();
        let mut f = good();
        rds_facts(&mut f).params.remove("binlog_format");
        let k = only(&c, &f, RDS_PARAMS, Verdict::Fail);
        assert!(
            k.summary.contains("binlog_format = default (want ROW)"),
            "{}",
            k.summary
        );
        let mut f = good();
        rds_facts(&mut f)
            .db
            .as_mut()
            .unwrap()
            .settings
            .parameter_group = "default.mysql8.4".into();
        let k = only(&c, &f, RDS_PARAMS, Verdict::Fail);
        assert!(
            k.summary.contains("uses parameter group default.mysql8.4"),
            "{}",
            k.summary
        );
        let mut f = good();
        rds_facts(&mut f)
            .db
            .as_mut()
            .unwrap()
            .parameter_apply_status = "pending-reboot".into();
        let k = only(&c, &f, RDS_PARAMS, Verdict::Warn);
        assert!(k.fix.as_deref().unwrap().contains("reboot-db-instance"));
        let mut f = good();
        rds_facts(&mut f).group_exists = false;
        only(&c, &f, RDS_PARAMS, Verdict::Fail);
        let mut f = good();
        rds_facts(&mut f).db = None;
        only(&c, &f, RDS_PARAMS, Verdict::Fail);
    }

    #[test]
    fn efs_mount_target_missing_not_ready_or_without_the_efs_group() {
        let c = cluster();
        let mt = |f: &mut AwsFacts| f.efs.as_mut().unwrap().mount_targets[SUBNET].clone();
        let set = |f: &mut AwsFacts, m: ObservedMountTarget| {
            f.efs
                .as_mut()
                .unwrap()
                .mount_targets
                .insert(SUBNET.into(), m);
        };
        let mut f = good();
        f.efs.as_mut().unwrap().mount_targets.clear();
        f.efs.as_mut().unwrap().other_subnets = vec![SUBNET2.into()];
        let k = only(&c, &f, EFS_MOUNT, Verdict::Fail);
        assert!(k.summary.contains(SUBNET), "{}", k.summary);
        assert!(k.evidence.iter().any(|e| e.contains(SUBNET2)));
        let mut f = good();
        let mut m = mt(&mut f);
        m.target.state = "creating".into();
        set(&mut f, m);
        only(&c, &f, EFS_MOUNT, Verdict::Warn);
        let mut f = good();
        let mut m = mt(&mut f);
        m.security_groups = vec!["sg-default".into()];
        set(&mut f, m);
        let k = only(&c, &f, EFS_MOUNT, Verdict::Fail);
        assert!(k.summary.contains("sg-e"), "{}", k.summary);
        let mut f = good();
        f.efs.as_mut().unwrap().fs = None;
        only(&c, &f, EFS_MOUNT, Verdict::Fail);
    }

    #[test]
    fn exit_code_fails_only_on_fail_and_render_counts() {
        let mk = |v| check("x", v, "s", vec!["e".into()], Some("do it".into()));
        assert_eq!(
            exit_code(&[mk(Verdict::Ok), mk(Verdict::Warn), mk(Verdict::Unknown)]),
            0
        );
        assert_eq!(exit_code(&[mk(Verdict::Ok), mk(Verdict::Fail)]), 1);
        assert_eq!(mk(Verdict::Ok).fix, None);
        let text = render(&[mk(Verdict::Ok), mk(Verdict::Fail)]);
        assert!(text.contains("fail    x"), "{text}");
        assert!(text.contains("        evidence: e\n"));
        assert!(text.contains("        fix: do it\n"));
        assert!(
            text.ends_with("2 checks: 1 ok, 0 warn, 1 fail, 0 unknown\n"),
            "{text}"
        );
        // the JSON field names are overlayd doctor's
        let v = serde_json::to_value(mk(Verdict::Warn)).unwrap();
        assert_eq!(v["verdict"], "warn");
        for k in ["id", "verdict", "summary", "evidence", "fix"] {
            assert!(v.get(k).is_some(), "{k}");
        }
    }

    const ROUTER_B: &str = "i-0123456789abcdef1";

    /// A healthy multi-AZ cluster: two subnets (one per AZ), a router pair (a in SUBNET, b in
    /// SUBNET2), the overlay routed to a.
    fn pair_cluster() -> Cluster {
        let text: String = CONFIG
            .lines()
            .filter(|l| {
                !l.starts_with("subnet_id")
                    && !l.starts_with("second_subnet_id")
                    && !l.starts_with("router_instance_id")
            })
            .map(|l| format!("{l}\n"))
            .chain([
                format!("subnet_ids = [\"{SUBNET}\", \"{SUBNET2}\"]\n"),
                format!("router_instance_ids = [\"{ROUTER}\", \"{ROUTER_B}\"]\n"),
            ])
            .collect();
        crate::config::parse(&text).unwrap()
    }

    fn pair_good() -> AwsFacts {
        let mut f = good();
        f.subnets.push((SUBNET2.into(), "10.0.2.0/24".into()));
        f.routers.push(RouterFacts {
            id: ROUTER_B.into(),
            eni: "eni-b".into(),
            sdc: false,
        });
        let mut b = inst(ROUTER_B, "eni-b", false);
        b.enis[0].1 = SUBNET2.into();
        if let Ok(v) = &mut f.instances {
            v.push(b);
        }
        if let Ok(g) = &mut f.groups {
            g.get_mut("vtep")
                .unwrap()
                .ingress
                .push(perm("udp", 4789, cidr("10.0.2.0/24")));
        }
        if let Ok(n) = &mut f.nacls {
            let acl = n[SUBNET].clone();
            n.insert(SUBNET2.into(), acl);
        }
        let t = tgw_facts(&mut f);
        t.attachment.as_mut().unwrap().subnets.push(SUBNET2.into());
        t.associations.push(Association {
            attachment: "tgw-attach-1".into(),
            subnet: SUBNET2.into(),
            state: "associated".into(),
        });
        t.members = Some(Ok(vec![member("eni-r"), member("eni-h"), member("eni-b")]));
        let e = f.efs.as_mut().unwrap();
        let mut mt = e.mount_targets[SUBNET].clone();
        mt.target.id = "fsmt-2".into();
        mt.target.subnet = SUBNET2.into();
        e.mount_targets.insert(SUBNET2.into(), mt);
        f
    }

    fn set_state(f: &mut AwsFacts, id: &str, state: &str) {
        if let Ok(v) = &mut f.instances {
            v.iter_mut().find(|i| i.id == id).unwrap().state = state.into();
        }
    }

    #[test]
    fn a_healthy_pair_is_all_ok_and_one_router_does_not_use_the_pair_check() {
        let checks = diagnose(&pair_cluster(), &pair_good());
        for k in &checks {
            assert_eq!(k.verdict, Verdict::Ok, "{k:#?}");
        }
        let p = get(&checks, ROUTER_PAIR);
        assert!(
            p.summary.contains(ROUTER) && p.summary.contains(ROUTER_B),
            "{p:?}"
        );
        assert!(get(&checks, EFS_MOUNT).summary.contains("fsmt-2"));
        let k = get(&diagnose(&cluster(), &good()), ROUTER_PAIR).clone();
        assert_eq!(k.verdict, Verdict::Ok);
        assert!(k.summary.starts_with("not used (one router)"), "{k:?}");
    }

    #[test]
    fn a_failover_to_the_standby_is_healthy() {
        let mut f = pair_good();
        if let Ok(t) = &mut f.route_tables {
            t[0].overlay_route.as_mut().unwrap().eni = Some("eni-b".into());
        }
        let checks = diagnose(&pair_cluster(), &f);
        for k in &checks {
            assert_eq!(k.verdict, Verdict::Ok, "{k:#?}");
        }
        assert!(get(&checks, ROUTER_PAIR)
            .evidence
            .iter()
            .any(|e| e.contains(ROUTER_B)));
    }

    #[test]
    fn one_router_down_warns_no_standby_both_down_fail() {
        let c = pair_cluster();
        // the standby stopped: the overlay still works, without a standby
        let mut f = pair_good();
        set_state(&mut f, ROUTER_B, "stopped");
        let k = only(&c, &f, ROUTER_PAIR, Verdict::Warn);
        assert!(k.summary.contains("no standby"), "{}", k.summary);
        assert!(k.summary.contains(ROUTER_B), "{}", k.summary);
        assert!(
            k.fix.as_deref().unwrap().contains("start-instances"),
            "{:?}",
            k.fix
        );
        // the active one stopped and the routes still on it: said so
        let mut f = pair_good();
        set_state(&mut f, ROUTER, "stopped");
        let k = only(&c, &f, ROUTER_PAIR, Verdict::Warn);
        assert!(k.summary.contains("still routed to it"), "{}", k.summary);
        // both
        let mut f = pair_good();
        set_state(&mut f, ROUTER, "stopped");
        set_state(&mut f, ROUTER_B, "stopping");
        let checks = diagnose(&c, &f);
        let k = get(&checks, ROUTER_PAIR);
        assert_eq!(k.verdict, Verdict::Fail);
        assert!(k.summary.contains("double failure"), "{}", k.summary);
        assert!(
            k.summary
                .contains("nothing carries traffic between the overlay and the VPC"),
            "{}",
            k.summary
        );
        assert!(k.fix.as_deref().unwrap().contains(ROUTER_B));
        assert_eq!(exit_code(&checks), 1);
        // the instances unreadable: unknown
        let mut f = pair_good();
        f.instances = Err("DescribeInstances: throttled".into());
        let k = get(&diagnose(&c, &f), ROUTER_PAIR).clone();
        assert_eq!(k.verdict, Verdict::Unknown);
    }

    #[test]
    fn the_check_covers_every_router_of_a_pair() {
        let mut f = pair_good();
        f.routers[1].sdc = true;
        let k = only(&pair_cluster(), &f, ROUTER_SDC, Verdict::Fail);
        assert!(
            k.summary.contains(ROUTER_B) && !k.summary.contains(ROUTER),
            "{}",
            k.summary
        );
        assert!(k.fix.as_deref().unwrap().contains(ROUTER_B));
    }

    #[test]
    fn an_evpn_pair_needs_bgp_from_both_subnets() {
        let text = format!(
            "{}flood = \"evpn\"\n",
            CONFIG
                .lines()
                .filter(|l| {
                    !l.starts_with("subnet_id")
                        && !l.starts_with("second_subnet_id")
                        && !l.starts_with("router_instance_id")
                })
                .map(|l| format!("{l}\n"))
                .chain([
                    format!("subnet_ids = [\"{SUBNET}\", \"{SUBNET2}\"]\n"),
                    format!("router_instance_ids = [\"{ROUTER}\", \"{ROUTER_B}\"]\n"),
                ])
                .collect::<String>()
        );
        let c = crate::config::parse(&text).unwrap();
        let mut f = pair_good();
        if let Ok(g) = &mut f.groups {
            let v = g.get_mut("vtep").unwrap();
            v.ingress.retain(|p| p.proto != "2");
            v.ingress.push(BGP());
            v.ingress.push(perm("tcp", 179, cidr("10.0.2.0/24")));
        }
        let k = only(&c, &f, SG_BGP, Verdict::Ok);
        assert!(
            k.summary
                .contains("from every overlay subnet (10.0.1.0/24, 10.0.2.0/24)"),
            "{}",
            k.summary
        );
        if let Ok(g) = &mut f.groups {
            g.get_mut("vtep")
                .unwrap()
                .ingress
                .retain(|p| !(p.proto == "6" && p.source == cidr("10.0.2.0/24")));
        }
        let k = only(&c, &f, SG_BGP, Verdict::Fail);
        assert!(k.summary.contains("10.0.2.0/24"), "{}", k.summary);
        let fix = k.fix.as_deref().unwrap();
        assert!(
            fix.contains("--port 179 --cidr 10.0.2.0/24") && !fix.contains("--cidr 10.0.1.0/24"),
            "{fix}"
        );
    }

    #[test]
    fn every_per_subnet_check_covers_the_second_subnet() {
        let c = pair_cluster();
        // VXLAN from the first subnet only
        let mut f = pair_good();
        if let Ok(g) = &mut f.groups {
            g.get_mut("vtep")
                .unwrap()
                .ingress
                .retain(|p| p.source != cidr("10.0.2.0/24"));
        }
        let k = only(&c, &f, SG_VXLAN, Verdict::Fail);
        assert!(k.summary.contains("10.0.2.0/24"), "{}", k.summary);
        assert!(k.fix.as_deref().unwrap().contains("--cidr 10.0.2.0/24"));
        // the second subnet's ACL denies VXLAN from the first
        let mut f = pair_good();
        if let Ok(n) = &mut f.nacls {
            n.insert(
                SUBNET2.into(),
                Nacl {
                    id: "acl-2".into(),
                    entries: vec![
                        allow_all(100, false),
                        allow_all(100, true),
                        entry(10, false, "17", Some((4789, 4789)), "10.0.1.0/24", false),
                    ],
                },
            );
        }
        let k = only(&c, &f, NACL, Verdict::Fail);
        assert!(
            k.summary.contains("acl-2") && k.summary.contains(SUBNET2),
            "{}",
            k.summary
        );
        assert!(
            k.summary.contains("inbound UDP 4789 from 10.0.1.0/24"),
            "{}",
            k.summary
        );
        // the second subnet's own table lacks the route
        let mut f = pair_good();
        if let Ok(t) = &mut f.route_tables {
            t.push(RouteTable {
                id: "rtb-2".into(),
                main: false,
                subnets: vec![SUBNET2.into()],
                overlay_route: None,
            });
        }
        let checks = diagnose(&c, &f);
        let k = get(&checks, ROUTES);
        assert_eq!(k.verdict, Verdict::Fail);
        assert!(
            k.summary.contains("rtb-2") && k.summary.contains(SUBNET2),
            "{}",
            k.summary
        );
        // not associated with the domain
        let mut f = pair_good();
        tgw_facts(&mut f).associations.pop();
        let k = get(&diagnose(&c, &f), TGW_DOMAIN).clone();
        assert_eq!(k.verdict, Verdict::Fail);
        assert!(k.summary.contains(SUBNET2), "{}", k.summary);
        // not in the attachment
        let mut f = pair_good();
        tgw_facts(&mut f).attachment.as_mut().unwrap().subnets.pop();
        let k = get(&diagnose(&c, &f), TGW_DOMAIN).clone();
        assert!(k.summary.contains("does not include") && k.summary.contains(SUBNET2));
        // no mount target there
        let mut f = pair_good();
        f.efs.as_mut().unwrap().mount_targets.remove(SUBNET2);
        let k = only(&c, &f, EFS_MOUNT, Verdict::Fail);
        assert!(
            k.summary.contains(SUBNET2) && !k.summary.contains(SUBNET),
            "{}",
            k.summary
        );
        // a stranger there
        let mut f = pair_good();
        let mut s = inst("i-s", "eni-s", false);
        s.enis[0].1 = SUBNET2.into();
        if let Ok(v) = &mut f.instances {
            v.push(s);
        }
        let k = only(&c, &f, STRANGERS, Verdict::Fail);
        assert!(k.summary.contains("i-s"), "{}", k.summary);
    }
}
