//! The router instance's AWS side: source/destination check off, and in every chosen VPC route
//! table a route for the overlay CIDR to the router's primary interface.
//!
//! observe ([`observe_routes`]) → plan ([`plan`], pure) → carry out ([`converge`]).

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use aws_sdk_ec2::types::AttributeBooleanValue;

use super::{filter, Env};
use crate::aws::err;
use crate::ctx::{Action, Ctx, Done, Item};
use crate::model::{self, RouteAction, RouteTarget};

/// The route tables to manage: the configured ones, else every table of the VPC.
pub async fn route_tables(ctx: &Ctx, env: &Env) -> Vec<String> {
    ctx.cluster
        .cfg
        .route_table_ids
        .clone()
        .unwrap_or_else(|| env.facts.vpc_route_tables.clone())
}

/// What the router part wants.
#[derive(Debug, Clone, PartialEq)]
pub struct Want {
    pub instance: String,
    pub eni: String,
    pub overlay_cidr: String,
    pub tables: Vec<String>,
}

/// What AWS has: the instance's check and, per route table of the VPC, the overlay CIDR's route.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Observed {
    pub source_dest_check: bool,
    pub routes: BTreeMap<String, Option<RouteTarget>>,
}

/// One step for the router.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    KeepCheckOff,
    DisableCheck,
    KeepRoute { table: String },
    CreateRoute { table: String },
    ReplaceRoute { table: String, old: String },
}

/// The check first, then one step per table in the order given. A table that is not in the VPC
/// (any more) is an error: it was checked before anything changed.
pub fn plan(want: &Want, have: &Observed) -> Result<Vec<Op>> {
    let mut ops = vec![if have.source_dest_check {
        Op::DisableCheck
    } else {
        Op::KeepCheckOff
    }];
    for table in &want.tables {
        let Some(existing) = have.routes.get(table) else {
            bail!("route table {table} disappeared");
        };
        let table = table.clone();
        ops.push(match model::route_action(existing.as_ref(), &want.eni) {
            RouteAction::Keep => Op::KeepRoute { table },
            RouteAction::Create => Op::CreateRoute { table },
            RouteAction::Replace(old) => Op::ReplaceRoute { table, old },
        });
    }
    Ok(ops)
}

impl Op {
    pub fn item(&self, want: &Want) -> Item {
        let detail = format!("{} -> {}", want.overlay_cidr, want.eni);
        let rid = Some(want.instance.as_str());
        match self {
            Op::KeepCheckOff => Item::new(
                "router/source-dest-check",
                rid,
                "disabled",
                Action::Keep,
                "",
            ),
            Op::DisableCheck => Item::new(
                "router/source-dest-check",
                rid,
                "enabled",
                Action::Change,
                "disable",
            ),
            Op::KeepRoute { table } => Item::new(
                &format!("route/{table}"),
                Some(table),
                "ok",
                Action::Keep,
                &detail,
            ),
            Op::CreateRoute { table } => Item::new(
                &format!("route/{table}"),
                Some(table),
                "absent",
                Action::Create,
                &detail,
            ),
            Op::ReplaceRoute { table, old } => Item::new(
                &format!("route/{table}"),
                Some(table),
                &format!("points at {old}"),
                Action::Change,
                &format!("{detail} (replaces {old})"),
            ),
        }
    }
}

/// Where a route points: the interface, else the gateway / instance / transit gateway / NAT
/// gateway / peering it names.
pub fn route_target(r: &aws_sdk_ec2::types::Route) -> RouteTarget {
    RouteTarget {
        eni: r.network_interface_id().map(str::to_string),
        other: r
            .gateway_id()
            .or(r.instance_id())
            .or(r.transit_gateway_id())
            .or(r.nat_gateway_id())
            .or(r.vpc_peering_connection_id())
            .map(str::to_string),
    }
}

/// The overlay CIDR's route in every route table of the VPC (None: the table has none).
pub async fn observe_routes(
    ctx: &Ctx,
    overlay_cidr: &str,
) -> Result<BTreeMap<String, Option<RouteTarget>>> {
    let out = ctx
        .clients
        .ec2
        .describe_route_tables()
        .filters(filter("vpc-id", &ctx.cluster.cfg.vpc_id))
        .send()
        .await
        .map_err(|e| err("DescribeRouteTables", e))?;
    Ok(out
        .route_tables()
        .iter()
        .filter_map(|rt| {
            let existing = rt
                .routes()
                .iter()
                .find(|r| r.destination_cidr_block() == Some(overlay_cidr))
                .map(route_target);
            Some((rt.route_table_id()?.to_string(), existing))
        })
        .collect())
}

pub async fn converge(ctx: &Ctx, env: &Env) -> Result<()> {
    let cfg = &ctx.cluster.cfg;
    let want = Want {
        instance: cfg.router_instance_id.clone(),
        eni: env.router_eni.clone(),
        overlay_cidr: cfg.overlay_cidr.clone(),
        tables: route_tables(ctx, env).await,
    };
    let have = Observed {
        source_dest_check: env.router_sdc,
        routes: observe_routes(ctx, &want.overlay_cidr).await?,
    };
    for op in plan(&want, &have)? {
        execute(ctx, &want, &op).await?;
    }
    Ok(())
}

async fn execute(ctx: &Ctx, want: &Want, op: &Op) -> Result<()> {
    let ec2 = &ctx.clients.ec2;
    let item = op.item(want);
    let call = async {
        match op {
            Op::KeepCheckOff | Op::KeepRoute { .. } => {}
            Op::DisableCheck => {
                ec2.modify_instance_attribute()
                    .instance_id(&want.instance)
                    .source_dest_check(AttributeBooleanValue::builder().value(false).build())
                    .send()
                    .await
                    .map_err(|e| err("ModifyInstanceAttribute", e))?;
            }
            Op::CreateRoute { table } => {
                ec2.create_route()
                    .route_table_id(table)
                    .destination_cidr_block(&want.overlay_cidr)
                    .network_interface_id(&want.eni)
                    .send()
                    .await
                    .map_err(|e| err("CreateRoute", e))?;
            }
            Op::ReplaceRoute { table, .. } => {
                ec2.replace_route()
                    .route_table_id(table)
                    .destination_cidr_block(&want.overlay_cidr)
                    .network_interface_id(&want.eni)
                    .send()
                    .await
                    .map_err(|e| err("ReplaceRoute", e))?;
            }
        }
        Ok(Done::nothing())
    };
    ctx.carry_out(item, call).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(tables: &[&str]) -> Want {
        Want {
            instance: "i-r".into(),
            eni: "eni-r".into(),
            overlay_cidr: "10.100.0.0/16".into(),
            tables: tables.iter().map(|t| t.to_string()).collect(),
        }
    }

    fn target(eni: Option<&str>, other: Option<&str>) -> Option<RouteTarget> {
        Some(RouteTarget {
            eni: eni.map(str::to_string),
            other: other.map(str::to_string),
        })
    }

    #[test]
    fn check_then_one_step_per_table_in_order() {
        let mut have = Observed {
            source_dest_check: true,
            ..Default::default()
        };
        have.routes.insert("rtb-a".into(), None);
        have.routes
            .insert("rtb-b".into(), target(Some("eni-r"), None));
        have.routes
            .insert("rtb-c".into(), target(None, Some("tgw-1")));
        have.routes.insert("rtb-d".into(), target(None, None));
        let ops = plan(&want(&["rtb-c", "rtb-a", "rtb-b", "rtb-d"]), &have).unwrap();
        assert_eq!(
            ops,
            vec![
                Op::DisableCheck,
                Op::ReplaceRoute {
                    table: "rtb-c".into(),
                    old: "tgw-1".into()
                },
                Op::CreateRoute {
                    table: "rtb-a".into()
                },
                Op::KeepRoute {
                    table: "rtb-b".into()
                },
                Op::ReplaceRoute {
                    table: "rtb-d".into(),
                    old: "blackhole".into()
                },
            ]
        );
        let it = ops[1].item(&want(&[]));
        assert_eq!(it.state, "points at tgw-1");
        assert_eq!(it.detail, "10.100.0.0/16 -> eni-r (replaces tgw-1)");
    }

    #[test]
    fn converged_router_is_all_keep_and_a_vanished_table_is_an_error() {
        let mut have = Observed::default();
        have.routes
            .insert("rtb-a".into(), target(Some("eni-r"), None));
        let ops = plan(&want(&["rtb-a"]), &have).unwrap();
        assert!(ops
            .iter()
            .all(|o| o.item(&want(&[])).action == Action::Keep));
        let e = plan(&want(&["rtb-gone"]), &have).unwrap_err();
        assert_eq!(e.to_string(), "route table rtb-gone disappeared");
    }
}
