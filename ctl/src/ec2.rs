//! EC2 side: validation facts, security groups, router, transit gateway multicast chain.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use aws_sdk_ec2::types::{
    AttributeBooleanValue, AutoAcceptSharedAssociationsValue,
    CreateTransitGatewayMulticastDomainRequestOptions, Filter, Igmpv2SupportValue, IpPermission,
    IpRange, MulticastSupportValue, ResourceType, StaticSourcesSupportValue, Tag, TagSpecification,
    TransitGatewayRequestOptions, UserIdGroupPair,
};

use crate::aws::{code, err};
use crate::config::{Facts, CLUSTER_TAG, ROLE_TAG};
use crate::ctx::{Action, Ctx};
use crate::model::{self, Perm, RouteAction, RouteTarget, RuleInputs, Source};

fn filter(name: &str, value: &str) -> Filter {
    Filter::builder().name(name).values(value).build()
}

fn tag_spec(ctx: &Ctx, rt: ResourceType, role: &str) -> TagSpecification {
    let tags = ctx
        .tags(role)
        .into_iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect();
    TagSpecification::builder()
        .resource_type(rt)
        .set_tags(Some(tags))
        .build()
}

fn not_found(code: Option<String>) -> bool {
    code.map(|c| c.contains("NotFound") || c.contains("Malformed"))
        .unwrap_or(false)
}

/// Everything read about the environment the operator gave us.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub facts: Facts,
    pub subnet_cidr: String,
    pub router_az: String,
    pub router_eni: String,
    pub router_sdc: bool,
    pub vpc_cidrs: Vec<String>,
}

pub async fn gather(ctx: &Ctx) -> Result<Env> {
    let ec2 = &ctx.clients.ec2;
    let cfg = &ctx.cluster.cfg;
    let mut env = Env::default();
    match ec2.describe_vpcs().vpc_ids(&cfg.vpc_id).send().await {
        Ok(out) => {
            for v in out.vpcs() {
                env.facts.vpc_exists = true;
                let mut cidrs: Vec<String> =
                    v.cidr_block().map(str::to_string).into_iter().collect();
                for a in v.cidr_block_association_set() {
                    if let Some(c) = a.cidr_block() {
                        if !cidrs.iter().any(|x| x == c) {
                            cidrs.push(c.to_string());
                        }
                    }
                }
                for c in &cidrs {
                    if let Ok(n) = c.parse() {
                        env.facts.vpc_cidrs.push(n);
                    }
                }
                env.vpc_cidrs = cidrs;
            }
        }
        Err(e) if not_found(code(&e)) => {}
        Err(e) => return Err(err("DescribeVpcs", e)),
    }
    for (which, id) in [(0, &cfg.subnet_id), (1, &cfg.second_subnet_id)] {
        match ec2.describe_subnets().subnet_ids(id).send().await {
            Ok(out) => {
                if let Some(s) = out.subnets().first() {
                    let cidr = s.cidr_block().unwrap_or_default().to_string();
                    let fact = (
                        id.clone(),
                        s.vpc_id().unwrap_or_default().to_string(),
                        s.availability_zone().unwrap_or_default().to_string(),
                        cidr.parse()
                            .unwrap_or_else(|_| "0.0.0.0/32".parse().unwrap()),
                    );
                    if which == 0 {
                        env.subnet_cidr = cidr;
                        env.facts.subnet = Some(fact);
                    } else {
                        env.facts.second_subnet = Some(fact);
                    }
                }
            }
            Err(e) if not_found(code(&e)) => {}
            Err(e) => return Err(err("DescribeSubnets", e)),
        }
    }
    match ec2
        .describe_instances()
        .instance_ids(&cfg.router_instance_id)
        .send()
        .await
    {
        Ok(out) => {
            if let Some(i) = out.reservations().iter().flat_map(|r| r.instances()).next() {
                let primary = i
                    .network_interfaces()
                    .iter()
                    .find(|n| n.attachment().and_then(|a| a.device_index()) == Some(0))
                    .or_else(|| i.network_interfaces().first());
                let subnet = primary
                    .and_then(|n| n.subnet_id())
                    .or(i.subnet_id())
                    .unwrap_or_default()
                    .to_string();
                env.router_eni = primary
                    .and_then(|n| n.network_interface_id())
                    .unwrap_or_default()
                    .to_string();
                env.router_az = i
                    .placement()
                    .and_then(|p| p.availability_zone())
                    .unwrap_or_default()
                    .to_string();
                env.router_sdc = i.source_dest_check().unwrap_or(true);
                env.facts.router = Some((subnet, i.vpc_id().unwrap_or_default().to_string()));
            }
        }
        Err(e) if not_found(code(&e)) => {}
        Err(e) => return Err(err("DescribeInstances", e)),
    }
    if env.facts.vpc_exists {
        let out = ec2
            .describe_route_tables()
            .filters(filter("vpc-id", &cfg.vpc_id))
            .send()
            .await
            .map_err(|e| err("DescribeRouteTables", e))?;
        env.facts.vpc_route_tables = out
            .route_tables()
            .iter()
            .filter_map(|r| r.route_table_id().map(str::to_string))
            .collect();
    }
    Ok(env)
}

// ---------------------------------------------------------------------------------------------
// security groups

fn perms_from(p: &IpPermission) -> Vec<Perm> {
    let proto = p.ip_protocol().unwrap_or("-1");
    let from = p.from_port().unwrap_or(-1);
    let to = p.to_port().unwrap_or(-1);
    let mut out = Vec::new();
    for r in p.ip_ranges() {
        if let Some(c) = r.cidr_ip() {
            out.push(Perm::new(proto, from, to, Source::Cidr(c.to_string()), ""));
        }
    }
    for g in p.user_id_group_pairs() {
        if let Some(id) = g.group_id() {
            out.push(Perm::new(
                proto,
                from,
                to,
                Source::Group(id.to_string()),
                "",
            ));
        }
    }
    out
}

fn to_ip_permission(p: &Perm) -> IpPermission {
    let mut b = IpPermission::builder().ip_protocol(p.proto.clone());
    // moto crashes on protocol 2 without ports; AWS ignores ports for it. Always send them.
    b = b.from_port(p.from).to_port(p.to);
    match &p.source {
        Source::Cidr(c) => b.ip_ranges(IpRange::builder().cidr_ip(c).description(&p.why).build()),
        Source::Group(g) => b.user_id_group_pairs(
            UserIdGroupPair::builder()
                .group_id(g)
                .description(&p.why)
                .build(),
        ),
    }
    .build()
}

/// One of our security groups as AWS has it.
#[derive(Debug, Clone)]
pub struct FoundGroup {
    pub id: String,
    pub ingress: Vec<Perm>,
}

/// Our security groups by role.
pub async fn find_groups(ctx: &Ctx) -> Result<BTreeMap<String, FoundGroup>> {
    let out = ctx
        .clients
        .ec2
        .describe_security_groups()
        .filters(filter("vpc-id", &ctx.cluster.cfg.vpc_id))
        .filters(filter(&format!("tag:{CLUSTER_TAG}"), ctx.name()))
        .send()
        .await
        .map_err(|e| err("DescribeSecurityGroups", e))?;
    let mut map = BTreeMap::new();
    for g in out.security_groups() {
        let role = g
            .tags()
            .iter()
            .find(|t| t.key() == Some(ROLE_TAG))
            .and_then(|t| t.value())
            .unwrap_or_default()
            .to_string();
        let perms = g.ip_permissions().iter().flat_map(perms_from).collect();
        if let Some(id) = g.group_id() {
            map.insert(
                role,
                FoundGroup {
                    id: id.to_string(),
                    ingress: perms,
                },
            );
        }
    }
    Ok(map)
}

/// Creates/adopts the five groups and converges their ingress. Returns role -> group id.
pub async fn security_groups(ctx: &Ctx, env: &Env) -> Result<BTreeMap<String, String>> {
    let ec2 = &ctx.clients.ec2;
    let mut found = find_groups(ctx).await?;
    let mut ids: BTreeMap<String, String> = found
        .iter()
        .map(|(r, g)| (r.clone(), g.id.clone()))
        .collect();
    for role in model::SG_ROLES {
        let res = format!("security-group/{role}");
        if let Some(id) = ids.get(role) {
            ctx.record(
                &res,
                Some(id),
                "ok",
                Action::Keep,
                &ctx.cluster.res_name(role),
            );
            continue;
        }
        if !ctx.apply() {
            ctx.record(
                &res,
                None,
                "absent",
                Action::Create,
                &ctx.cluster.res_name(role),
            );
            continue;
        }
        let out = ec2
            .create_security_group()
            .group_name(ctx.cluster.res_name(role))
            .description(format!("overlay {} {role}", ctx.name()))
            .vpc_id(&ctx.cluster.cfg.vpc_id)
            .tag_specifications(tag_spec(ctx, ResourceType::SecurityGroup, role))
            .send()
            .await
            .map_err(|e| err("CreateSecurityGroup", e))?;
        let id = out.group_id().unwrap_or_default().to_string();
        ctx.record(
            &res,
            Some(&id),
            "created",
            Action::Create,
            &ctx.cluster.res_name(role),
        );
        ids.insert(role.to_string(), id.clone());
        found.insert(
            role.to_string(),
            FoundGroup {
                id,
                ingress: Vec::new(),
            },
        );
    }
    let inputs = RuleInputs {
        subnet_cidr: env.subnet_cidr.clone(),
        access_cidr: ctx.cluster.cfg.access_cidr.clone(),
        overlay_cidr: ctx.cluster.cfg.overlay_cidr.clone(),
        group_ids: ids.clone(),
    };
    for role in model::SG_ROLES {
        let res = format!("security-group/{role}/ingress");
        let want = model::desired_rules(role, &inputs);
        let Some(FoundGroup { id, ingress: have }) = found.get(role) else {
            let d: Vec<String> = want.iter().map(Perm::describe).collect();
            ctx.record(&res, None, "absent", Action::Create, &d.join(", "));
            continue;
        };
        let (missing, extra) = model::diff_rules(&want, have);
        if missing.is_empty() && extra.is_empty() {
            ctx.record(
                &res,
                Some(id),
                "ok",
                Action::Keep,
                &format!("{} rules", want.len()),
            );
            continue;
        }
        let mut detail: Vec<String> = missing
            .iter()
            .map(|p| format!("+{}", p.describe()))
            .collect();
        detail.extend(extra.iter().map(|p| format!("-{}", p.describe())));
        let action = if have.is_empty() {
            Action::Create
        } else {
            Action::Change
        };
        if ctx.apply() {
            if !missing.is_empty() {
                ec2.authorize_security_group_ingress()
                    .group_id(id)
                    .set_ip_permissions(Some(missing.iter().map(to_ip_permission).collect()))
                    .send()
                    .await
                    .map_err(|e| err("AuthorizeSecurityGroupIngress", e))?;
            }
            if !extra.is_empty() {
                ec2.revoke_security_group_ingress()
                    .group_id(id)
                    .set_ip_permissions(Some(extra.iter().map(to_ip_permission).collect()))
                    .send()
                    .await
                    .map_err(|e| err("RevokeSecurityGroupIngress", e))?;
            }
        }
        ctx.record(&res, Some(id), "drift", action, &detail.join(", "));
    }
    Ok(ids)
}

// ---------------------------------------------------------------------------------------------
// router

pub async fn route_tables(ctx: &Ctx, env: &Env) -> Vec<String> {
    ctx.cluster
        .cfg
        .route_table_ids
        .clone()
        .unwrap_or_else(|| env.facts.vpc_route_tables.clone())
}

pub async fn router(ctx: &Ctx, env: &Env) -> Result<()> {
    let ec2 = &ctx.clients.ec2;
    let cfg = &ctx.cluster.cfg;
    let rid = cfg.router_instance_id.as_str();
    if env.router_sdc {
        if ctx.apply() {
            ec2.modify_instance_attribute()
                .instance_id(rid)
                .source_dest_check(AttributeBooleanValue::builder().value(false).build())
                .send()
                .await
                .map_err(|e| err("ModifyInstanceAttribute", e))?;
        }
        ctx.record(
            "router/source-dest-check",
            Some(rid),
            "enabled",
            Action::Change,
            "disable",
        );
    } else {
        ctx.record(
            "router/source-dest-check",
            Some(rid),
            "disabled",
            Action::Keep,
            "",
        );
    }
    let tables = route_tables(ctx, env).await;
    let out = ec2
        .describe_route_tables()
        .filters(filter("vpc-id", &cfg.vpc_id))
        .send()
        .await
        .map_err(|e| err("DescribeRouteTables", e))?;
    for rt_id in tables {
        let res = format!("route/{rt_id}");
        let Some(rt) = out
            .route_tables()
            .iter()
            .find(|r| r.route_table_id() == Some(rt_id.as_str()))
        else {
            bail!("route table {rt_id} disappeared");
        };
        let existing = rt
            .routes()
            .iter()
            .find(|r| r.destination_cidr_block() == Some(cfg.overlay_cidr.as_str()))
            .map(|r| RouteTarget {
                eni: r.network_interface_id().map(str::to_string),
                other: r
                    .gateway_id()
                    .or(r.instance_id())
                    .or(r.transit_gateway_id())
                    .or(r.nat_gateway_id())
                    .or(r.vpc_peering_connection_id())
                    .map(str::to_string),
            });
        let detail = format!("{} -> {}", cfg.overlay_cidr, env.router_eni);
        match model::route_action(existing.as_ref(), &env.router_eni) {
            RouteAction::Keep => ctx.record(&res, Some(&rt_id), "ok", Action::Keep, &detail),
            RouteAction::Create => {
                if ctx.apply() {
                    ec2.create_route()
                        .route_table_id(&rt_id)
                        .destination_cidr_block(&cfg.overlay_cidr)
                        .network_interface_id(&env.router_eni)
                        .send()
                        .await
                        .map_err(|e| err("CreateRoute", e))?;
                }
                ctx.record(&res, Some(&rt_id), "absent", Action::Create, &detail);
            }
            RouteAction::Replace(old) => {
                if ctx.apply() {
                    ec2.replace_route()
                        .route_table_id(&rt_id)
                        .destination_cidr_block(&cfg.overlay_cidr)
                        .network_interface_id(&env.router_eni)
                        .send()
                        .await
                        .map_err(|e| err("ReplaceRoute", e))?;
                }
                ctx.record(
                    &res,
                    Some(&rt_id),
                    &format!("points at {old}"),
                    Action::Change,
                    &format!("{detail} (replaces {old})"),
                );
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// transit gateway chain

#[derive(Debug, Clone, Default)]
pub struct TgwIds {
    pub tgw: Option<String>,
    pub attachment: Option<String>,
    pub domain: Option<String>,
}

const GONE: [&str; 4] = ["deleted", "deleting", "failed", "rejected"];

/// Our transit gateway as AWS has it.
#[derive(Debug, Clone)]
pub struct FoundTgw {
    pub id: String,
    pub state: String,
    pub multicast: bool,
}

pub async fn find_tgw(ctx: &Ctx) -> Result<Option<FoundTgw>> {
    let out = ctx
        .clients
        .ec2
        .describe_transit_gateways()
        .filters(filter(&format!("tag:{CLUSTER_TAG}"), ctx.name()))
        .send()
        .await
        .map_err(|e| err("DescribeTransitGateways", e))?;
    Ok(out
        .transit_gateways()
        .iter()
        .filter(|t| !GONE.contains(&t.state().map(|s| s.as_str()).unwrap_or("")))
        .map(|t| FoundTgw {
            id: t.transit_gateway_id().unwrap_or_default().to_string(),
            state: t
                .state()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
            multicast: t
                .options()
                .and_then(|o| o.multicast_support())
                .map(|m| m.as_str())
                == Some("enable"),
        })
        .next())
}

async fn tgw_state(ctx: &Ctx, id: &str) -> Result<String> {
    let out = ctx
        .clients
        .ec2
        .describe_transit_gateways()
        .transit_gateway_ids(id)
        .send()
        .await
        .map_err(|e| err("DescribeTransitGateways", e))?;
    Ok(out
        .transit_gateways()
        .first()
        .and_then(|t| t.state())
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|| "missing".into()))
}

/// The transit gateway's attachment to our VPC as AWS has it.
#[derive(Debug, Clone)]
pub struct FoundAttachment {
    pub id: String,
    pub state: String,
    pub subnets: Vec<String>,
}

pub async fn find_attachment(ctx: &Ctx, tgw: &str) -> Result<Option<FoundAttachment>> {
    let out = ctx
        .clients
        .ec2
        .describe_transit_gateway_vpc_attachments()
        .filters(filter("transit-gateway-id", tgw))
        .filters(filter("vpc-id", &ctx.cluster.cfg.vpc_id))
        .send()
        .await
        .map_err(|e| err("DescribeTransitGatewayVpcAttachments", e))?;
    Ok(out
        .transit_gateway_vpc_attachments()
        .iter()
        .filter(|a| !GONE.contains(&a.state().map(|s| s.as_str()).unwrap_or("")))
        .map(|a| FoundAttachment {
            id: a
                .transit_gateway_attachment_id()
                .unwrap_or_default()
                .to_string(),
            state: a
                .state()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
            subnets: a.subnet_ids().to_vec(),
        })
        .next())
}

async fn attachment_state(ctx: &Ctx, id: &str) -> Result<String> {
    let out = ctx
        .clients
        .ec2
        .describe_transit_gateway_vpc_attachments()
        .transit_gateway_attachment_ids(id)
        .send()
        .await
        .map_err(|e| err("DescribeTransitGatewayVpcAttachments", e))?;
    Ok(out
        .transit_gateway_vpc_attachments()
        .first()
        .and_then(|a| a.state())
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|| "missing".into()))
}

/// Options of a multicast domain, as AWS spells them (enable / disable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainOptions {
    pub igmpv2: String,
    pub static_sources: String,
    pub auto_accept: String,
}

/// Our multicast domain as AWS has it.
#[derive(Debug, Clone)]
pub struct FoundDomain {
    pub id: String,
    pub state: String,
    pub options: DomainOptions,
}

pub async fn find_domain(ctx: &Ctx, tgw: &str) -> Result<Option<FoundDomain>> {
    let out = ctx
        .clients
        .ec2
        .describe_transit_gateway_multicast_domains()
        .filters(filter("transit-gateway-id", tgw))
        .filters(filter(&format!("tag:{CLUSTER_TAG}"), ctx.name()))
        .send()
        .await
        .map_err(|e| err("DescribeTransitGatewayMulticastDomains", e))?;
    Ok(out
        .transit_gateway_multicast_domains()
        .iter()
        .filter(|d| !GONE.contains(&d.state().map(|s| s.as_str()).unwrap_or("")))
        .map(|d| {
            let o = d.options();
            FoundDomain {
                id: d
                    .transit_gateway_multicast_domain_id()
                    .unwrap_or_default()
                    .to_string(),
                state: d
                    .state()
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default(),
                options: DomainOptions {
                    igmpv2: o
                        .and_then(|o| o.igmpv2_support())
                        .map(|v| v.as_str().to_string())
                        .unwrap_or_default(),
                    static_sources: o
                        .and_then(|o| o.static_sources_support())
                        .map(|v| v.as_str().to_string())
                        .unwrap_or_default(),
                    auto_accept: o
                        .and_then(|o| o.auto_accept_shared_associations())
                        .map(|v| v.as_str().to_string())
                        .unwrap_or_default(),
                },
            }
        })
        .next())
}

async fn domain_state(ctx: &Ctx, id: &str) -> Result<String> {
    let out = ctx
        .clients
        .ec2
        .describe_transit_gateway_multicast_domains()
        .transit_gateway_multicast_domain_ids(id)
        .send()
        .await
        .map_err(|e| err("DescribeTransitGatewayMulticastDomains", e))?;
    Ok(out
        .transit_gateway_multicast_domains()
        .first()
        .and_then(|d| d.state())
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|| "missing".into()))
}

/// (attachment, subnet, state) of a domain's associations.
pub async fn associations(ctx: &Ctx, domain: &str) -> Result<Vec<(String, String, String)>> {
    let out = ctx
        .clients
        .ec2
        .get_transit_gateway_multicast_domain_associations()
        .transit_gateway_multicast_domain_id(domain)
        .send()
        .await
        .map_err(|e| err("GetTransitGatewayMulticastDomainAssociations", e))?;
    Ok(out
        .multicast_domain_associations()
        .iter()
        .filter_map(|a| {
            let s = a.subnet()?;
            Some((
                a.transit_gateway_attachment_id()
                    .unwrap_or_default()
                    .to_string(),
                s.subnet_id().unwrap_or_default().to_string(),
                s.state()
                    .map(|x| x.as_str().to_string())
                    .unwrap_or_default(),
            ))
        })
        .collect())
}

pub async fn tgw_chain(ctx: &Ctx) -> Result<TgwIds> {
    let ec2 = &ctx.clients.ec2;
    let cfg = &ctx.cluster.cfg;
    let mut ids = TgwIds::default();

    // 1. transit gateway
    let tgw = match find_tgw(ctx).await? {
        Some(FoundTgw {
            id,
            state,
            multicast,
        }) => {
            if !multicast {
                bail!(
                    "transit gateway {id} (tagged {CLUSTER_TAG}={}) has multicast support off; it can only be \
                     set at creation: delete it (overlayctl teardown) and bootstrap again",
                    ctx.name()
                );
            }
            ctx.record(
                "transit-gateway",
                Some(&id),
                &state,
                Action::Keep,
                "multicast on",
            );
            Some(id)
        }
        None if ctx.apply() => {
            let out = ec2
                .create_transit_gateway()
                .description(format!("overlay {}", ctx.name()))
                .options(
                    TransitGatewayRequestOptions::builder()
                        .multicast_support(MulticastSupportValue::Enable)
                        .build(),
                )
                .tag_specifications(tag_spec(ctx, ResourceType::TransitGateway, "tgw"))
                .send()
                .await
                .map_err(|e| err("CreateTransitGateway", e))?;
            let id = out
                .transit_gateway()
                .and_then(|t| t.transit_gateway_id())
                .unwrap_or_default()
                .to_string();
            ctx.record(
                "transit-gateway",
                Some(&id),
                "pending",
                Action::Create,
                "multicast on",
            );
            Some(id)
        }
        None => {
            ctx.record(
                "transit-gateway",
                None,
                "absent",
                Action::Create,
                "multicast on",
            );
            None
        }
    };
    ids.tgw = tgw.clone();
    let Some(tgw) = tgw else {
        ctx.record(
            "tgw-attachment",
            None,
            "absent",
            Action::Create,
            &cfg.subnet_id,
        );
        ctx.record(
            "multicast-domain",
            None,
            "absent",
            Action::Create,
            "igmpv2 on, static sources off, auto-accept off",
        );
        ctx.record(
            "multicast-association",
            None,
            "absent",
            Action::Create,
            &cfg.subnet_id,
        );
        return Ok(ids);
    };
    if ctx.apply() {
        ctx.wait_for(&format!("transit gateway {tgw}"), || async {
            let s = tgw_state(ctx, &tgw).await?;
            Ok(if s == "available" { Ok(()) } else { Err(s) })
        })
        .await?;
    }

    // 2. VPC attachment on the overlay subnet
    let att = match find_attachment(ctx, &tgw).await? {
        Some(FoundAttachment { id, state, subnets }) => {
            if subnets.iter().any(|s| s == &cfg.subnet_id) {
                ctx.record(
                    "tgw-attachment",
                    Some(&id),
                    &state,
                    Action::Keep,
                    &cfg.subnet_id,
                );
            } else {
                if ctx.apply() {
                    ec2.modify_transit_gateway_vpc_attachment()
                        .transit_gateway_attachment_id(&id)
                        .add_subnet_ids(&cfg.subnet_id)
                        .send()
                        .await
                        .map_err(|e| err("ModifyTransitGatewayVpcAttachment", e))?;
                }
                ctx.record(
                    "tgw-attachment",
                    Some(&id),
                    &state,
                    Action::Change,
                    &format!("add {}", cfg.subnet_id),
                );
            }
            Some(id)
        }
        None if ctx.apply() => {
            let out = ec2
                .create_transit_gateway_vpc_attachment()
                .transit_gateway_id(&tgw)
                .vpc_id(&cfg.vpc_id)
                .subnet_ids(&cfg.subnet_id)
                .tag_specifications(tag_spec(
                    ctx,
                    ResourceType::TransitGatewayAttachment,
                    "tgw-attachment",
                ))
                .send()
                .await
                .map_err(|e| err("CreateTransitGatewayVpcAttachment", e))?;
            let id = out
                .transit_gateway_vpc_attachment()
                .and_then(|a| a.transit_gateway_attachment_id())
                .unwrap_or_default()
                .to_string();
            ctx.record(
                "tgw-attachment",
                Some(&id),
                "pending",
                Action::Create,
                &cfg.subnet_id,
            );
            Some(id)
        }
        None => {
            ctx.record(
                "tgw-attachment",
                None,
                "absent",
                Action::Create,
                &cfg.subnet_id,
            );
            None
        }
    };
    ids.attachment = att.clone();

    // 3. multicast domain
    let want_opts = DomainOptions {
        igmpv2: "enable".into(),
        static_sources: "disable".into(),
        auto_accept: "disable".into(),
    };
    let opts_detail = "igmpv2 on, static sources off, auto-accept off";
    let domain = match find_domain(ctx, &tgw).await? {
        Some(FoundDomain {
            id,
            state,
            options: opts,
        }) => {
            if opts != want_opts {
                bail!(
                    "multicast domain {id} has options igmpv2={} static-sources={} auto-accept={}; \
                     they cannot be changed in place: run overlayctl teardown and bootstrap again",
                    opts.igmpv2,
                    opts.static_sources,
                    opts.auto_accept
                );
            }
            ctx.record(
                "multicast-domain",
                Some(&id),
                &state,
                Action::Keep,
                opts_detail,
            );
            Some(id)
        }
        None if ctx.apply() => {
            let out = ec2
                .create_transit_gateway_multicast_domain()
                .transit_gateway_id(&tgw)
                .options(
                    CreateTransitGatewayMulticastDomainRequestOptions::builder()
                        .igmpv2_support(Igmpv2SupportValue::Enable)
                        .static_sources_support(StaticSourcesSupportValue::Disable)
                        .auto_accept_shared_associations(AutoAcceptSharedAssociationsValue::Disable)
                        .build(),
                )
                .tag_specifications(tag_spec(
                    ctx,
                    ResourceType::TransitGatewayMulticastDomain,
                    "multicast-domain",
                ))
                .send()
                .await
                .map_err(|e| err("CreateTransitGatewayMulticastDomain", e))?;
            let id = out
                .transit_gateway_multicast_domain()
                .and_then(|d| d.transit_gateway_multicast_domain_id())
                .unwrap_or_default()
                .to_string();
            ctx.record(
                "multicast-domain",
                Some(&id),
                "pending",
                Action::Create,
                opts_detail,
            );
            Some(id)
        }
        None => {
            ctx.record(
                "multicast-domain",
                None,
                "absent",
                Action::Create,
                opts_detail,
            );
            None
        }
    };
    ids.domain = domain.clone();

    // 4. association of the subnet
    let (Some(att), Some(domain)) = (att, domain) else {
        ctx.record(
            "multicast-association",
            None,
            "absent",
            Action::Create,
            &cfg.subnet_id,
        );
        return Ok(ids);
    };
    let assocs = associations(ctx, &domain).await?;
    let mine = assocs.iter().find(|(a, s, st)| {
        a == &att
            && s == &cfg.subnet_id
            && !matches!(
                st.as_str(),
                "disassociated" | "disassociating" | "failed" | "rejected"
            )
    });
    let res = "multicast-association";
    match mine {
        Some((_, _, st)) => ctx.record(res, Some(&cfg.subnet_id), st, Action::Keep, &domain),
        None => {
            if ctx.apply() {
                ctx.wait_for(&format!("attachment {att}"), || async {
                    let s = attachment_state(ctx, &att).await?;
                    Ok(if s == "available" { Ok(()) } else { Err(s) })
                })
                .await?;
                ctx.wait_for(&format!("multicast domain {domain}"), || async {
                    let s = domain_state(ctx, &domain).await?;
                    Ok(if s == "available" { Ok(()) } else { Err(s) })
                })
                .await?;
                ec2.associate_transit_gateway_multicast_domain()
                    .transit_gateway_multicast_domain_id(&domain)
                    .transit_gateway_attachment_id(&att)
                    .subnet_ids(&cfg.subnet_id)
                    .send()
                    .await
                    .map_err(|e| err("AssociateTransitGatewayMulticastDomain", e))?;
            }
            ctx.record(res, Some(&cfg.subnet_id), "absent", Action::Create, &domain);
        }
    }
    if ctx.apply() {
        ctx.wait_for(
            &format!("association of {} with {domain}", cfg.subnet_id),
            || async {
                let a = associations(ctx, &domain).await?;
                let st = a
                    .iter()
                    .find(|(_, s, _)| s == &cfg.subnet_id)
                    .map(|(_, _, st)| st.clone())
                    .unwrap_or_else(|| "missing".into());
                Ok(if st == "associated" { Ok(()) } else { Err(st) })
            },
        )
        .await?;
    }
    Ok(ids)
}
