//! EC2 side. This file reads the environment the operator named (VPC, subnets, router
//! instance: the facts bad-input checks need); each resource overlayctl manages has its own
//! file, shaped like the agent: observe into a typed model, a pure `plan` into ordered steps
//! (printed by `overlayctl plan`, carried out by `bootstrap` through [`Ctx::carry_out`]).
//!
//! - [`security_group`]: the five groups and their ingress rules
//! - [`router`]: source/destination check and the VPC routes for the overlay CIDR
//! - [`tgw`]: transit gateway, VPC attachment, multicast domain, subnet association (flood =
//!   multicast only)

use anyhow::Result;
use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};

use crate::aws::{code, err};
use crate::config::{Facts, SubnetFact};
use crate::ctx::Ctx;

pub mod router;
pub mod security_group;
pub mod tgw;

pub use router::route_tables;
pub use security_group::{find_groups, FoundGroup};
pub use tgw::{
    associations, find_attachment, find_domain, find_tgw, Association, FoundAttachment,
    FoundDomain, FoundTgw, TgwIds,
};

pub(crate) fn filter(name: &str, value: &str) -> Filter {
    Filter::builder().name(name).values(value).build()
}

pub(crate) fn tag_spec(ctx: &Ctx, rt: ResourceType, role: &str) -> TagSpecification {
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

/// One router instance as EC2 has it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouterEnv {
    pub id: String,
    /// Its primary network interface.
    pub eni: String,
    /// The primary private (underlay) address of that interface (flood = evpn: where the
    /// nodes' BGP speakers reach the route reflector).
    pub private_ip: String,
    pub az: String,
    pub subnet: String,
    /// Source/destination check on.
    pub sdc: bool,
}

/// Everything read about the environment the operator gave us.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub facts: Facts,
    /// The CIDR of each overlay subnet that exists ([`crate::config::Cluster::subnets`] order).
    pub subnet_cidrs: Vec<String>,
    /// The routers that exist, in [`crate::config::Cluster::routers`] order.
    pub routers: Vec<RouterEnv>,
    pub vpc_cidrs: Vec<String>,
}

impl Env {
    /// The first router's primary interface (where new routes point), empty when unknown.
    pub fn router_eni(&self) -> String {
        self.routers
            .first()
            .map(|r| r.eni.clone())
            .unwrap_or_default()
    }
    /// The first router's availability zone (the database's).
    pub fn router_az(&self) -> String {
        self.routers
            .first()
            .map(|r| r.az.clone())
            .unwrap_or_default()
    }
    /// The primary private (underlay) addresses of every router (flood = evpn: the route
    /// reflectors).
    pub fn router_ips(&self) -> Vec<String> {
        self.routers
            .iter()
            .filter(|r| !r.private_ip.is_empty())
            .map(|r| r.private_ip.clone())
            .collect()
    }
    /// The primary interfaces of every router.
    pub fn router_enis(&self) -> Vec<String> {
        self.routers
            .iter()
            .filter(|r| !r.eni.is_empty())
            .map(|r| r.eni.clone())
            .collect()
    }
}

async fn describe_subnet(ctx: &Ctx, id: &str) -> Result<Option<SubnetFact>> {
    match ctx
        .clients
        .ec2
        .describe_subnets()
        .subnet_ids(id)
        .send()
        .await
    {
        Ok(out) => Ok(out.subnets().first().map(|s| {
            (
                id.to_string(),
                s.vpc_id().unwrap_or_default().to_string(),
                s.availability_zone().unwrap_or_default().to_string(),
                s.cidr_block()
                    .unwrap_or_default()
                    .parse()
                    .unwrap_or_else(|_| "0.0.0.0/32".parse().unwrap()),
            )
        })),
        Err(e) if not_found(code(&e)) => Ok(None),
        Err(e) => Err(err("DescribeSubnets", e)),
    }
}

async fn describe_router(ctx: &Ctx, id: &str) -> Result<Option<(RouterEnv, String)>> {
    match ctx
        .clients
        .ec2
        .describe_instances()
        .instance_ids(id)
        .send()
        .await
    {
        Ok(out) => Ok(out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .next()
            .map(|i| {
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
                let r = RouterEnv {
                    id: id.to_string(),
                    eni: primary
                        .and_then(|n| n.network_interface_id())
                        .unwrap_or_default()
                        .to_string(),
                    private_ip: primary
                        .and_then(|n| n.private_ip_address())
                        .or(i.private_ip_address())
                        .unwrap_or_default()
                        .to_string(),
                    az: i
                        .placement()
                        .and_then(|p| p.availability_zone())
                        .unwrap_or_default()
                        .to_string(),
                    subnet,
                    sdc: i.source_dest_check().unwrap_or(true),
                };
                (r, i.vpc_id().unwrap_or_default().to_string())
            })),
        Err(e) if not_found(code(&e)) => Ok(None),
        Err(e) => Err(err("DescribeInstances", e)),
    }
}

pub async fn gather(ctx: &Ctx) -> Result<Env> {
    let ec2 = &ctx.clients.ec2;
    let cluster = &ctx.cluster;
    let cfg = &cluster.cfg;
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
    for id in &cluster.subnets {
        let fact = describe_subnet(ctx, id).await?;
        if let Some(f) = &fact {
            env.subnet_cidrs.push(f.3.to_string());
        }
        env.facts.subnets.push(fact);
    }
    if let Some(second) = &cfg.second_subnet_id {
        env.facts.second_subnet = describe_subnet(ctx, second).await?;
    }
    for id in &cluster.routers {
        match describe_router(ctx, id).await? {
            Some((r, vpc)) => {
                env.facts.routers.push(Some((r.subnet.clone(), vpc)));
                env.routers.push(r);
            }
            None => env.facts.routers.push(None),
        }
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
