//! The routers' AWS side: source/destination check off on every router, and in every chosen VPC
//! route table a route for the overlay CIDR to a router's primary interface (created for the
//! first router; one pointing at either router of an HA pair is left alone) and the tag
//! `overlay:cluster=<name>` (it scopes the routers' route takeover permission).
//!
//! observe ([`observe_routes`]) → plan ([`plan`], pure) → carry out ([`converge`]).

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use aws_sdk_ec2::types::AttributeBooleanValue;

use super::{filter, Env};
use crate::aws::err;
use crate::config::CLUSTER_TAG;
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
    /// (instance, primary interface) of each router; new routes point at the first.
    pub routers: Vec<(String, String)>,
    pub overlay_cidr: String,
    pub tables: Vec<String>,
    /// The cluster's name: the value of the `overlay:cluster` tag on every managed table.
    pub cluster: String,
}

impl Want {
    /// Where new (or replaced) routes point: the first router's interface.
    pub fn eni(&self) -> &str {
        self.routers.first().map(|r| r.1.as_str()).unwrap_or("")
    }
}

/// One route table as AWS has it: the overlay CIDR's route and its `overlay:cluster` tag.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ObservedTable {
    pub route: Option<RouteTarget>,
    pub cluster_tag: Option<String>,
}

/// What AWS has: each router's check (by instance) and, per route table of the VPC, the overlay
/// CIDR's route and the cluster tag.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Observed {
    pub source_dest_check: BTreeMap<String, bool>,
    pub tables: BTreeMap<String, ObservedTable>,
}

/// One step for the router.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    KeepCheckOff {
        instance: String,
    },
    DisableCheck {
        instance: String,
    },
    /// The route points at one of the routers (`instance`): kept, also when it is the standby
    /// after a failover.
    KeepRoute {
        table: String,
        eni: String,
        instance: String,
    },
    CreateRoute {
        table: String,
    },
    ReplaceRoute {
        table: String,
        old: String,
    },
    KeepTag {
        table: String,
    },
    TagTable {
        table: String,
    },
    /// The table carries another cluster's tag: left alone (this cluster's router cannot take
    /// it over).
    ForeignTag {
        table: String,
        other: String,
    },
}

/// Each router's check first, then per table in the order given its route and its tag. A
/// table that is not in the VPC (any more) is an error: it was checked before anything changed.
///
/// A route that points at any router of the pair is kept: the standby moves the routes to
/// itself with ReplaceRoute on failover, and a bootstrap re-run must not undo that. Only a
/// missing route is created and one pointing elsewhere (or a blackhole) replaced, both to the
/// first router.
pub fn plan(want: &Want, have: &Observed) -> Result<Vec<Op>> {
    let mut ops: Vec<Op> = want
        .routers
        .iter()
        .map(|(instance, _)| {
            let instance = instance.clone();
            if have
                .source_dest_check
                .get(&instance)
                .copied()
                .unwrap_or(true)
            {
                Op::DisableCheck { instance }
            } else {
                Op::KeepCheckOff { instance }
            }
        })
        .collect();
    for table in &want.tables {
        let Some(existing) = have.tables.get(table) else {
            bail!("route table {table} disappeared");
        };
        let table = table.clone();
        let enis: Vec<&str> = want.routers.iter().map(|r| r.1.as_str()).collect();
        ops.push(match model::route_action(existing.route.as_ref(), &enis) {
            RouteAction::Keep(n) => Op::KeepRoute {
                table: table.clone(),
                eni: want.routers[n].1.clone(),
                instance: want.routers[n].0.clone(),
            },
            RouteAction::Create => Op::CreateRoute {
                table: table.clone(),
            },
            RouteAction::Replace(old) => Op::ReplaceRoute {
                table: table.clone(),
                old,
            },
        });
        ops.push(match existing.cluster_tag.as_deref() {
            Some(t) if t == want.cluster => Op::KeepTag { table },
            Some(other) => Op::ForeignTag {
                table,
                other: other.to_string(),
            },
            None => Op::TagTable { table },
        });
    }
    Ok(ops)
}

impl Op {
    pub fn item(&self, want: &Want) -> Item {
        let detail = format!("{} -> {}", want.overlay_cidr, want.eni());
        let tag = format!("{CLUSTER_TAG}={}", want.cluster);
        match self {
            Op::KeepCheckOff { instance } => Item::new(
                &router_resource(want, instance),
                Some(instance),
                "disabled",
                Action::Keep,
                "",
            ),
            Op::DisableCheck { instance } => Item::new(
                &router_resource(want, instance),
                Some(instance),
                "enabled",
                Action::Change,
                "disable",
            ),
            Op::KeepRoute {
                table,
                eni,
                instance,
            } => {
                let standby = want.routers.first().map(|r| &r.0) != Some(instance);
                Item::new(
                    &format!("route/{table}"),
                    Some(table),
                    "ok",
                    Action::Keep,
                    &format!(
                        "{} -> {eni}{}",
                        want.overlay_cidr,
                        if standby {
                            format!(" ({instance}, after a failover: left alone)")
                        } else {
                            String::new()
                        }
                    ),
                )
            }
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
            Op::KeepTag { table } => Item::new(
                &format!("route/{table}/tag"),
                Some(table),
                "ok",
                Action::Keep,
                &tag,
            ),
            Op::TagTable { table } => Item::new(
                &format!("route/{table}/tag"),
                Some(table),
                "absent",
                Action::Create,
                &tag,
            ),
            Op::ForeignTag { table, other } => Item::new(
                &format!("route/{table}/tag"),
                Some(table),
                &format!("{CLUSTER_TAG}={other}"),
                Action::Keep,
                &format!(
                    "tagged for cluster {other}: left alone, the routers of {} cannot take this table over",
                    want.cluster
                ),
            ),
        }
    }
}

/// `router/source-dest-check` for one router; `router/<instance>/source-dest-check` for each
/// of a pair.
fn router_resource(want: &Want, instance: &str) -> String {
    if want.routers.len() > 1 {
        format!("router/{instance}/source-dest-check")
    } else {
        "router/source-dest-check".to_string()
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

/// The overlay CIDR's route and the cluster tag of every route table of the VPC.
pub async fn observe_tables(
    ctx: &Ctx,
    overlay_cidr: &str,
) -> Result<BTreeMap<String, ObservedTable>> {
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
            let route = rt
                .routes()
                .iter()
                .find(|r| r.destination_cidr_block() == Some(overlay_cidr))
                .map(route_target);
            let cluster_tag = rt
                .tags()
                .iter()
                .find(|t| t.key() == Some(CLUSTER_TAG))
                .and_then(|t| t.value())
                .map(str::to_string);
            Some((
                rt.route_table_id()?.to_string(),
                ObservedTable { route, cluster_tag },
            ))
        })
        .collect())
}

pub async fn converge(ctx: &Ctx, env: &Env) -> Result<()> {
    let cfg = &ctx.cluster.cfg;
    let want = Want {
        routers: env
            .routers
            .iter()
            .map(|r| (r.id.clone(), r.eni.clone()))
            .collect(),
        overlay_cidr: cfg.overlay_cidr.clone(),
        tables: route_tables(ctx, env).await,
        cluster: ctx.name().to_string(),
    };
    let have = Observed {
        source_dest_check: env.routers.iter().map(|r| (r.id.clone(), r.sdc)).collect(),
        tables: observe_tables(ctx, &want.overlay_cidr).await?,
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
            Op::KeepCheckOff { .. }
            | Op::KeepRoute { .. }
            | Op::KeepTag { .. }
            | Op::ForeignTag { .. } => {}
            Op::DisableCheck { instance } => {
                ec2.modify_instance_attribute()
                    .instance_id(instance)
                    .source_dest_check(AttributeBooleanValue::builder().value(false).build())
                    .send()
                    .await
                    .map_err(|e| err("ModifyInstanceAttribute", e))?;
            }
            Op::CreateRoute { table } => {
                ec2.create_route()
                    .route_table_id(table)
                    .destination_cidr_block(&want.overlay_cidr)
                    .network_interface_id(want.eni())
                    .send()
                    .await
                    .map_err(|e| err("CreateRoute", e))?;
            }
            Op::ReplaceRoute { table, .. } => {
                ec2.replace_route()
                    .route_table_id(table)
                    .destination_cidr_block(&want.overlay_cidr)
                    .network_interface_id(want.eni())
                    .send()
                    .await
                    .map_err(|e| err("ReplaceRoute", e))?;
            }
            Op::TagTable { table } => {
                ec2.create_tags()
                    .resources(table)
                    .tags(
                        aws_sdk_ec2::types::Tag::builder()
                            .key(CLUSTER_TAG)
                            .value(&want.cluster)
                            .build(),
                    )
                    .send()
                    .await
                    .map_err(|e| err("CreateTags", e))?;
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
            routers: vec![("i-r".into(), "eni-r".into())],
            overlay_cidr: "10.100.0.0/16".into(),
            tables: tables.iter().map(|t| t.to_string()).collect(),
            cluster: "lab1".into(),
        }
    }

    fn pair(tables: &[&str]) -> Want {
        Want {
            routers: vec![
                ("i-a".into(), "eni-a".into()),
                ("i-b".into(), "eni-b".into()),
            ],
            ..want(tables)
        }
    }

    fn table(eni: Option<&str>, other: Option<&str>, tag: Option<&str>) -> ObservedTable {
        ObservedTable {
            route: (eni.is_some() || other.is_some() || tag == Some("blackhole")).then(|| {
                RouteTarget {
                    eni: eni.map(str::to_string),
                    other: other.map(str::to_string),
                }
            }),
            cluster_tag: tag.filter(|t| *t != "blackhole").map(str::to_string),
        }
    }

    /// The route steps alone.
    fn routes(ops: &[Op]) -> Vec<Op> {
        ops.iter()
            .filter(|o| {
                matches!(
                    o,
                    Op::KeepRoute { .. } | Op::CreateRoute { .. } | Op::ReplaceRoute { .. }
                )
            })
            .cloned()
            .collect()
    }

    #[test]
    fn check_then_one_route_and_one_tag_per_table_in_order() {
        let mut have = Observed::default();
        have.source_dest_check.insert("i-r".into(), true);
        have.tables.insert("rtb-a".into(), table(None, None, None));
        have.tables
            .insert("rtb-b".into(), table(Some("eni-r"), None, Some("lab1")));
        have.tables
            .insert("rtb-c".into(), table(None, Some("tgw-1"), None));
        have.tables
            .insert("rtb-d".into(), table(None, None, Some("blackhole")));
        let ops = plan(&want(&["rtb-c", "rtb-a", "rtb-b", "rtb-d"]), &have).unwrap();
        assert_eq!(
            ops,
            vec![
                Op::DisableCheck {
                    instance: "i-r".into()
                },
                Op::ReplaceRoute {
                    table: "rtb-c".into(),
                    old: "tgw-1".into()
                },
                Op::TagTable {
                    table: "rtb-c".into()
                },
                Op::CreateRoute {
                    table: "rtb-a".into()
                },
                Op::TagTable {
                    table: "rtb-a".into()
                },
                Op::KeepRoute {
                    table: "rtb-b".into(),
                    eni: "eni-r".into(),
                    instance: "i-r".into()
                },
                Op::KeepTag {
                    table: "rtb-b".into()
                },
                Op::ReplaceRoute {
                    table: "rtb-d".into(),
                    old: "blackhole".into()
                },
                Op::TagTable {
                    table: "rtb-d".into()
                },
            ]
        );
        let it = ops[1].item(&want(&[]));
        assert_eq!(it.state, "points at tgw-1");
        assert_eq!(it.detail, "10.100.0.0/16 -> eni-r (replaces tgw-1)");
        let it = ops[2].item(&want(&[]));
        assert_eq!(
            (it.action, it.detail.as_str()),
            (Action::Create, "overlay:cluster=lab1")
        );
        assert_eq!(ops[0].item(&want(&[])).resource, "router/source-dest-check");
    }

    #[test]
    fn converged_router_is_all_keep_and_a_vanished_table_is_an_error() {
        let mut have = Observed::default();
        have.source_dest_check.insert("i-r".into(), false);
        have.tables
            .insert("rtb-a".into(), table(Some("eni-r"), None, Some("lab1")));
        let ops = plan(&want(&["rtb-a"]), &have).unwrap();
        assert!(ops
            .iter()
            .all(|o| o.item(&want(&[])).action == Action::Keep));
        let e = plan(&want(&["rtb-gone"]), &have).unwrap_err();
        assert_eq!(e.to_string(), "route table rtb-gone disappeared");
    }

    #[test]
    fn a_pair_keeps_routes_to_either_router_and_replaces_others_with_the_first() {
        let mut have = Observed::default();
        have.source_dest_check.insert("i-a".into(), false);
        have.source_dest_check.insert("i-b".into(), true);
        // after a failover: the standby holds the route
        have.tables
            .insert("rtb-1".into(), table(Some("eni-b"), None, Some("lab1")));
        have.tables
            .insert("rtb-2".into(), table(Some("eni-a"), None, Some("lab1")));
        have.tables
            .insert("rtb-3".into(), table(Some("eni-x"), None, Some("lab1")));
        have.tables
            .insert("rtb-4".into(), table(None, None, Some("blackhole")));
        have.tables.insert("rtb-5".into(), table(None, None, None));
        let w = pair(&["rtb-1", "rtb-2", "rtb-3", "rtb-4", "rtb-5"]);
        let ops = plan(&w, &have).unwrap();
        // the check on every router
        assert_eq!(
            &ops[..2],
            &[
                Op::KeepCheckOff {
                    instance: "i-a".into()
                },
                Op::DisableCheck {
                    instance: "i-b".into()
                }
            ]
        );
        assert_eq!(ops[1].item(&w).resource, "router/i-b/source-dest-check");
        assert_eq!(
            routes(&ops),
            vec![
                Op::KeepRoute {
                    table: "rtb-1".into(),
                    eni: "eni-b".into(),
                    instance: "i-b".into()
                },
                Op::KeepRoute {
                    table: "rtb-2".into(),
                    eni: "eni-a".into(),
                    instance: "i-a".into()
                },
                Op::ReplaceRoute {
                    table: "rtb-3".into(),
                    old: "eni-x".into()
                },
                Op::ReplaceRoute {
                    table: "rtb-4".into(),
                    old: "blackhole".into()
                },
                Op::CreateRoute {
                    table: "rtb-5".into()
                },
            ]
        );
        // replaced and created routes go to the first router
        let it = routes(&ops)[2].item(&w);
        assert_eq!(it.detail, "10.100.0.0/16 -> eni-a (replaces eni-x)");
        // the standby's route is reported as kept, saying why
        let it = routes(&ops)[0].item(&w);
        assert_eq!(it.action, Action::Keep);
        assert!(
            it.detail.contains("eni-b") && it.detail.contains("failover"),
            "{}",
            it.detail
        );
        // every table is tagged: the untagged one gets the tag
        let tags: Vec<&Op> = ops
            .iter()
            .filter(|o| matches!(o, Op::TagTable { .. } | Op::KeepTag { .. }))
            .collect();
        assert_eq!(tags.len(), 5);
        assert_eq!(
            tags.iter()
                .filter(|o| matches!(o, Op::TagTable { .. }))
                .count(),
            2
        );
    }

    #[test]
    fn another_clusters_tag_is_left_alone() {
        let mut have = Observed::default();
        have.source_dest_check.insert("i-r".into(), false);
        have.tables
            .insert("rtb-a".into(), table(Some("eni-r"), None, Some("lab2")));
        let ops = plan(&want(&["rtb-a"]), &have).unwrap();
        assert_eq!(
            ops.last().unwrap(),
            &Op::ForeignTag {
                table: "rtb-a".into(),
                other: "lab2".into()
            }
        );
        let it = ops.last().unwrap().item(&want(&[]));
        assert_eq!(it.action, Action::Keep);
        assert!(it.detail.contains("lab2"), "{}", it.detail);
    }
}
