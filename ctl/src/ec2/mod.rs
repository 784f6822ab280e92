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
use crate::config::Facts;
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
