//! Security groups: the five groups of a cluster (found by tag, one per role) and their ingress.
//!
//! observe ([`find_groups`]) → plan ([`plan_groups`], then [`plan_ingress`] once every group has
//! an id: rules name each other) → carry out ([`converge`]).

use std::collections::BTreeMap;

use anyhow::Result;
use aws_sdk_ec2::types::{IpPermission, IpRange, ResourceType, UserIdGroupPair};

use super::{filter, tag_spec, Env};
use crate::aws::err;
use crate::config::{CLUSTER_TAG, ROLE_TAG};
use crate::ctx::{Action, Ctx, Done, Item};
use crate::model::{self, Perm, RuleInputs, Source};

/// One of our security groups as AWS has it.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundGroup {
    pub id: String,
    pub ingress: Vec<Perm>,
}

/// One step for the security groups.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    KeepGroup {
        role: String,
        id: String,
    },
    CreateGroup {
        role: String,
    },
    KeepIngress {
        role: String,
        id: String,
        rules: usize,
    },
    /// Authorize what is missing, revoke what is not ours to want.
    SetIngress {
        role: String,
        id: String,
        missing: Vec<Perm>,
        extra: Vec<Perm>,
        /// The group has no rules at all yet (just created): it is being filled, not changed.
        fresh: bool,
    },
    /// The group itself is still to be created (plan mode): all its rules come with it.
    IngressWithGroup {
        role: String,
        rules: Vec<Perm>,
    },
}

/// Keep the groups that exist, create the others, in [`model::SG_ROLES`] order.
pub fn plan_groups(found: &BTreeMap<String, FoundGroup>) -> Vec<Op> {
    model::SG_ROLES
        .iter()
        .map(|role| match found.get(*role) {
            Some(g) => Op::KeepGroup {
                role: role.to_string(),
                id: g.id.clone(),
            },
            None => Op::CreateGroup {
                role: role.to_string(),
            },
        })
        .collect()
}

/// The ingress of one group: `want` against what the group has.
pub fn plan_ingress(role: &str, want: Vec<Perm>, found: Option<&FoundGroup>) -> Op {
    let Some(FoundGroup { id, ingress: have }) = found else {
        return Op::IngressWithGroup {
            role: role.to_string(),
            rules: want,
        };
    };
    let (missing, extra) = model::diff_rules(&want, have);
    if missing.is_empty() && extra.is_empty() {
        Op::KeepIngress {
            role: role.to_string(),
            id: id.clone(),
            rules: want.len(),
        }
    } else {
        Op::SetIngress {
            role: role.to_string(),
            id: id.clone(),
            fresh: have.is_empty(),
            missing,
            extra,
        }
    }
}

impl Op {
    /// The report line of this step (`name` is the cluster's name for the group's role).
    pub fn item(&self, name: &dyn Fn(&str) -> String) -> Item {
        match self {
            Op::KeepGroup { role, id } => Item::new(
                &format!("security-group/{role}"),
                Some(id),
                "ok",
                Action::Keep,
                &name(role),
            ),
            Op::CreateGroup { role } => Item::new(
                &format!("security-group/{role}"),
                None,
                "absent",
                Action::Create,
                &name(role),
            ),
            Op::KeepIngress { role, id, rules } => Item::new(
                &format!("security-group/{role}/ingress"),
                Some(id),
                "ok",
                Action::Keep,
                &format!("{rules} rules"),
            ),
            Op::SetIngress {
                role,
                id,
                missing,
                extra,
                fresh,
            } => {
                let mut d: Vec<String> = missing
                    .iter()
                    .map(|p| format!("+{}", p.describe()))
                    .collect();
                d.extend(extra.iter().map(|p| format!("-{}", p.describe())));
                let action = if *fresh {
                    Action::Create
                } else {
                    Action::Change
                };
                Item::new(
                    &format!("security-group/{role}/ingress"),
                    Some(id),
                    "drift",
                    action,
                    &d.join(", "),
                )
            }
            Op::IngressWithGroup { role, rules } => {
                let d: Vec<String> = rules.iter().map(Perm::describe).collect();
                Item::new(
                    &format!("security-group/{role}/ingress"),
                    None,
                    "absent",
                    Action::Create,
                    &d.join(", "),
                )
            }
        }
    }
}

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
pub async fn converge(ctx: &Ctx, env: &Env) -> Result<BTreeMap<String, String>> {
    let mut found = find_groups(ctx).await?;
    for op in plan_groups(&found) {
        if let Some(id) = execute(ctx, &op).await? {
            if let Op::CreateGroup { role } = &op {
                found.insert(
                    role.clone(),
                    FoundGroup {
                        id,
                        ingress: Vec::new(),
                    },
                );
            }
        }
    }
    let ids: BTreeMap<String, String> = found
        .iter()
        .map(|(r, g)| (r.clone(), g.id.clone()))
        .collect();
    let inputs = RuleInputs {
        subnet_cidr: env.subnet_cidrs.first().cloned().unwrap_or_default(),
        access_cidr: ctx.cluster.cfg.access_cidr.clone(),
        overlay_cidr: ctx.cluster.cfg.overlay_cidr.clone(),
        group_ids: ids.clone(),
        flood: ctx.cluster.flood,
    };
    for role in model::SG_ROLES {
        let want = model::desired_rules_for_subnets(role, &inputs, &env.subnet_cidrs);
        execute(ctx, &plan_ingress(role, want, found.get(role))).await?;
    }
    Ok(ids)
}

/// Records one step and carries it out in apply mode. Returns the group's id where known.
async fn execute(ctx: &Ctx, op: &Op) -> Result<Option<String>> {
    let ec2 = &ctx.clients.ec2;
    let name = |role: &str| ctx.cluster.res_name(role);
    let item = op.item(&name);
    match op {
        Op::KeepGroup { .. } | Op::KeepIngress { .. } | Op::IngressWithGroup { .. } => {
            ctx.carry_out(item, async { Ok(Done::nothing()) }).await
        }
        Op::CreateGroup { role } => {
            ctx.carry_out(item, async {
                let out = ec2
                    .create_security_group()
                    .group_name(ctx.cluster.res_name(role))
                    .description(format!("overlay {} {role}", ctx.name()))
                    .vpc_id(&ctx.cluster.cfg.vpc_id)
                    .tag_specifications(tag_spec(ctx, ResourceType::SecurityGroup, role))
                    .send()
                    .await
                    .map_err(|e| err("CreateSecurityGroup", e))?;
                Ok(Done::created(out.group_id().unwrap_or_default(), "created"))
            })
            .await
        }
        Op::SetIngress {
            id, missing, extra, ..
        } => {
            ctx.carry_out(item, async {
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
                Ok(Done::nothing())
            })
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(id: &str, ingress: Vec<Perm>) -> FoundGroup {
        FoundGroup {
            id: id.into(),
            ingress,
        }
    }

    fn rule(port: i32) -> Perm {
        Perm::new("tcp", port, port, Source::Cidr("10.0.0.0/24".into()), "")
    }

    #[test]
    fn groups_that_exist_are_kept_the_others_created_in_role_order() {
        let mut found = BTreeMap::new();
        found.insert("vtep".to_string(), group("sg-v", vec![]));
        let ops = plan_groups(&found);
        assert_eq!(ops.len(), model::SG_ROLES.len());
        for (op, role) in ops.iter().zip(model::SG_ROLES) {
            match op {
                Op::KeepGroup { role: r, id } => {
                    assert_eq!((r.as_str(), id.as_str()), ("vtep", "sg-v"))
                }
                Op::CreateGroup { role: r } => {
                    assert_eq!(r, role);
                    assert_ne!(r, "vtep")
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn ingress_is_kept_filled_or_changed() {
        let name = |r: &str| format!("c-{r}");
        // converged
        let op = plan_ingress(
            "db",
            vec![rule(3306)],
            Some(&group("sg-d", vec![rule(3306)])),
        );
        assert_eq!(op.item(&name).action, Action::Keep);
        assert_eq!(op.item(&name).detail, "1 rules");
        // a new group: every rule missing, none extra -> create
        let op = plan_ingress("db", vec![rule(3306)], Some(&group("sg-d", vec![])));
        let it = op.item(&name);
        assert_eq!((it.action, it.state.as_str()), (Action::Create, "drift"));
        assert_eq!(it.detail, format!("+{}", rule(3306).describe()));
        // only missing rules on a group that has some -> change
        let op = plan_ingress(
            "db",
            vec![rule(3306), rule(22)],
            Some(&group("sg-d", vec![rule(22)])),
        );
        assert_eq!(op.item(&name).action, Action::Change);
        // drift both ways -> change, additions listed before removals
        let op = plan_ingress("db", vec![rule(3306)], Some(&group("sg-d", vec![rule(22)])));
        let Op::SetIngress { missing, extra, .. } = &op else {
            panic!("{op:?}")
        };
        assert_eq!((missing.len(), extra.len()), (1, 1));
        let it = op.item(&name);
        assert_eq!(it.action, Action::Change);
        assert!(
            it.detail.starts_with('+') && it.detail.contains(", -"),
            "{}",
            it.detail
        );
        // plan mode before the group exists: rules come with the group
        let op = plan_ingress("db", vec![rule(3306)], None);
        let it = op.item(&name);
        assert_eq!(
            (it.action, it.state.as_str(), it.id),
            (Action::Create, "absent", None)
        );
    }
}
