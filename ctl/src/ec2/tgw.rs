//! The transit gateway multicast chain: transit gateway (multicast on) → VPC attachment on the
//! overlay subnet → multicast domain (IGMPv2 on, static sources off) → association of the subnet.
//!
//! Each link needs the id of the one before, so the chain is observed and planned one link at a
//! time: observe (`find_*`) → plan (`plan_*`, pure) → carry out ([`converge`]). In plan mode a
//! link that does not exist yet takes the rest of the chain with it as "create".

use anyhow::{bail, Result};
use aws_sdk_ec2::types::{
    AutoAcceptSharedAssociationsValue, CreateTransitGatewayMulticastDomainRequestOptions,
    Igmpv2SupportValue, MulticastSupportValue, ResourceType, StaticSourcesSupportValue,
    TransitGatewayRequestOptions,
};

use super::{filter, tag_spec};
use crate::aws::{code, err};
use crate::config::CLUSTER_TAG;
use crate::ctx::{Action, Ctx, Done, Item};

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

/// The state of transit gateway `id` while it is still there (not deleting, deleted or gone).
pub async fn tgw_live_state(ctx: &Ctx, id: &str) -> Result<Option<String>> {
    let out = match ctx
        .clients
        .ec2
        .describe_transit_gateways()
        .transit_gateway_ids(id)
        .send()
        .await
    {
        Ok(out) => out,
        Err(e) if super::not_found(code(&e)) => return Ok(None),
        Err(e) => return Err(err("DescribeTransitGateways", e)),
    };
    Ok(out
        .transit_gateways()
        .first()
        .and_then(|t| t.state())
        .map(|s| s.as_str().to_string())
        .filter(|s| !GONE.contains(&s.as_str())))
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

/// One subnet association of a multicast domain.
#[derive(Debug, Clone, PartialEq)]
pub struct Association {
    pub attachment: String,
    pub subnet: String,
    pub state: String,
}

/// The associations of a domain.
pub async fn associations(ctx: &Ctx, domain: &str) -> Result<Vec<Association>> {
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
            Some(Association {
                attachment: a
                    .transit_gateway_attachment_id()
                    .unwrap_or_default()
                    .to_string(),
                subnet: s.subnet_id().unwrap_or_default().to_string(),
                state: s
                    .state()
                    .map(|x| x.as_str().to_string())
                    .unwrap_or_default(),
            })
        })
        .collect())
}

/// The options every multicast domain of ours has.
pub fn wanted_options() -> DomainOptions {
    DomainOptions {
        igmpv2: "enable".into(),
        static_sources: "disable".into(),
        auto_accept: "disable".into(),
    }
}

const OPTIONS_DETAIL: &str = "igmpv2 on, static sources off, auto-accept off";

/// One step of the chain.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    KeepTgw {
        id: String,
        state: String,
    },
    CreateTgw,
    KeepAttachment {
        id: String,
        state: String,
    },
    /// The attachment exists but lacks some of the overlay subnets.
    AddSubnets {
        id: String,
        state: String,
        add: Vec<String>,
    },
    CreateAttachment,
    KeepDomain {
        id: String,
        state: String,
    },
    CreateDomain,
    KeepAssociation {
        subnet: String,
        state: String,
    },
    Associate {
        subnet: String,
    },
    /// Plan mode: the attachment or the domain is still to be created, and the association with it.
    AssociateAfterCreation {
        subnet: String,
    },
    /// A subnet no longer in the cluster file: its association through our attachment goes...
    Disassociate {
        subnet: String,
        state: String,
    },
    /// ... then the subnet leaves the attachment.
    RemoveSubnets {
        id: String,
        state: String,
        remove: Vec<String>,
    },
}

/// The transit gateway: keep or create. Multicast support can only be chosen at creation, so one
/// of ours without it is an error naming the way out.
pub fn plan_tgw(found: Option<&FoundTgw>, cluster: &str) -> Result<Op> {
    Ok(match found {
        None => Op::CreateTgw,
        Some(t) if !t.multicast => bail!(
            "transit gateway {} (tagged {CLUSTER_TAG}={cluster}) has multicast support off; it can only be \
             set at creation: delete it (overlayctl teardown) and bootstrap again",
            t.id
        ),
        Some(t) => Op::KeepTgw {
            id: t.id.clone(),
            state: t.state.clone(),
        },
    })
}

/// The VPC attachment: keep, add the overlay subnets it lacks, or create it on all of them.
pub fn plan_attachment(found: Option<&FoundAttachment>, subnets: &[String]) -> Op {
    let Some(a) = found else {
        return Op::CreateAttachment;
    };
    let add: Vec<String> = subnets
        .iter()
        .filter(|s| !a.subnets.contains(s))
        .cloned()
        .collect();
    if add.is_empty() {
        Op::KeepAttachment {
            id: a.id.clone(),
            state: a.state.clone(),
        }
    } else {
        Op::AddSubnets {
            id: a.id.clone(),
            state: a.state.clone(),
            add,
        }
    }
}

/// The subnets of the attachment that are not overlay subnets (any more): removed, after their
/// associations (see [`plan_stale_associations`]).
pub fn plan_removal(found: Option<&FoundAttachment>, subnets: &[String]) -> Option<Op> {
    let a = found?;
    let remove: Vec<String> = a
        .subnets
        .iter()
        .filter(|s| !subnets.contains(s))
        .cloned()
        .collect();
    (!remove.is_empty()).then(|| Op::RemoveSubnets {
        id: a.id.clone(),
        state: a.state.clone(),
        remove,
    })
}

/// The multicast domain: keep or create. Its options cannot change in place: different ones are
/// an error naming them.
pub fn plan_domain(found: Option<&FoundDomain>) -> Result<Op> {
    let Some(d) = found else {
        return Ok(Op::CreateDomain);
    };
    if d.options != wanted_options() {
        bail!(
            "multicast domain {} has options igmpv2={} static-sources={} auto-accept={}; \
             they cannot be changed in place: run overlayctl teardown and bootstrap again",
            d.id,
            d.options.igmpv2,
            d.options.static_sources,
            d.options.auto_accept
        );
    }
    Ok(Op::KeepDomain {
        id: d.id.clone(),
        state: d.state.clone(),
    })
}

fn live_association(state: &str) -> bool {
    !matches!(
        state,
        "disassociated" | "disassociating" | "failed" | "rejected"
    )
}

/// The association of `subnet` through our attachment: one that is live (not going away or
/// refused) is kept, else the subnet is associated.
pub fn plan_association(have: &[Association], attachment: &str, subnet: &str) -> Op {
    let live = have
        .iter()
        .find(|a| a.attachment == attachment && a.subnet == subnet && live_association(&a.state));
    match live {
        Some(a) => Op::KeepAssociation {
            subnet: subnet.to_string(),
            state: a.state.clone(),
        },
        None => Op::Associate {
            subnet: subnet.to_string(),
        },
    }
}

/// Live associations through our attachment of subnets that are not overlay subnets (any more).
pub fn plan_stale_associations(
    have: &[Association],
    attachment: &str,
    subnets: &[String],
) -> Vec<Op> {
    have.iter()
        .filter(|a| {
            a.attachment == attachment
                && !subnets.contains(&a.subnet)
                && live_association(&a.state)
                && a.state != "disassociating"
        })
        .map(|a| Op::Disassociate {
            subnet: a.subnet.clone(),
            state: a.state.clone(),
        })
        .collect()
}

impl Op {
    /// The report line of this step; `subnets` are the overlay subnets, `domain` the domain's
    /// id where known.
    pub fn item(&self, subnets: &[String], domain: Option<&str>) -> Item {
        let domain = domain.unwrap_or("-");
        let all = subnets.join(", ");
        match self {
            Op::KeepTgw { id, state } => Item::new(
                "transit-gateway",
                Some(id),
                state,
                Action::Keep,
                "multicast on",
            ),
            Op::CreateTgw => Item::new(
                "transit-gateway",
                None,
                "absent",
                Action::Create,
                "multicast on",
            ),
            Op::KeepAttachment { id, state } => {
                Item::new("tgw-attachment", Some(id), state, Action::Keep, &all)
            }
            Op::AddSubnets { id, state, add } => Item::new(
                "tgw-attachment",
                Some(id),
                state,
                Action::Change,
                &format!("add {}", add.join(", ")),
            ),
            Op::RemoveSubnets { id, state, remove } => Item::new(
                "tgw-attachment",
                Some(id),
                state,
                Action::Change,
                &format!("remove {}", remove.join(", ")),
            ),
            Op::CreateAttachment => {
                Item::new("tgw-attachment", None, "absent", Action::Create, &all)
            }
            Op::KeepDomain { id, state } => Item::new(
                "multicast-domain",
                Some(id),
                state,
                Action::Keep,
                OPTIONS_DETAIL,
            ),
            Op::CreateDomain => Item::new(
                "multicast-domain",
                None,
                "absent",
                Action::Create,
                OPTIONS_DETAIL,
            ),
            Op::KeepAssociation { subnet, state } => Item::new(
                "multicast-association",
                Some(subnet),
                state,
                Action::Keep,
                domain,
            ),
            Op::Associate { subnet } => Item::new(
                "multicast-association",
                Some(subnet),
                "absent",
                Action::Create,
                domain,
            ),
            Op::AssociateAfterCreation { subnet } => Item::new(
                "multicast-association",
                None,
                "absent",
                Action::Create,
                subnet,
            ),
            Op::Disassociate { subnet, state } => Item::new(
                "multicast-association",
                Some(subnet),
                state,
                Action::Delete,
                &format!("{domain} (not an overlay subnet any more)"),
            ),
        }
    }
}

/// With flood = unicast the chain is not used: nothing of it is created, planned or reported.
/// Returns the note saying so; a transit gateway tagged for the cluster (left from
/// flood = multicast) is named in it and left alone: teardown deletes it.
pub async fn unused(ctx: &Ctx) -> Result<String> {
    let mut note = format!(
        "transit gateway: not used (flood = {})",
        ctx.cluster.flood.as_str()
    );
    if let Some(t) = find_tgw(ctx).await? {
        note.push_str(&format!(
            "; {} tagged {CLUSTER_TAG}={} is left from flood = multicast: bootstrap leaves it \
             alone, teardown deletes it",
            t.id,
            ctx.name()
        ));
    }
    Ok(note)
}

/// Converges the chain link by link. Returns the ids known at the end (in plan mode, None for
/// what does not exist yet).
pub async fn converge(ctx: &Ctx) -> Result<TgwIds> {
    let subnets = ctx.cluster.subnets.clone();
    let mut ids = TgwIds::default();

    let op = plan_tgw(find_tgw(ctx).await?.as_ref(), ctx.name())?;
    ids.tgw = execute(ctx, &ids, &op).await?;
    let after_creation = |subnets: &[String]| {
        subnets
            .iter()
            .map(|s| Op::AssociateAfterCreation { subnet: s.clone() })
            .collect::<Vec<_>>()
    };
    let Some(tgw) = ids.tgw.clone() else {
        for op in [Op::CreateAttachment, Op::CreateDomain]
            .into_iter()
            .chain(after_creation(&subnets))
        {
            execute(ctx, &ids, &op).await?;
        }
        return Ok(ids);
    };
    ctx.settle(&format!("transit gateway {tgw}"), || async {
        let s = tgw_state(ctx, &tgw).await?;
        Ok(if s == "available" { Ok(()) } else { Err(s) })
    })
    .await?;

    let found_att = find_attachment(ctx, &tgw).await?;
    let op = plan_attachment(found_att.as_ref(), &subnets);
    ids.attachment = execute(ctx, &ids, &op).await?;

    let op = plan_domain(find_domain(ctx, &tgw).await?.as_ref())?;
    ids.domain = execute(ctx, &ids, &op).await?;

    let (Some(att), Some(domain)) = (ids.attachment.clone(), ids.domain.clone()) else {
        for op in after_creation(&subnets) {
            execute(ctx, &ids, &op).await?;
        }
        return Ok(ids);
    };
    let have = associations(ctx, &domain).await?;
    for subnet in &subnets {
        let op = plan_association(&have, &att, subnet);
        execute(ctx, &ids, &op).await?;
    }
    for subnet in &subnets {
        ctx.settle(
            &format!("association of {subnet} with {domain}"),
            || async {
                let st = associations(ctx, &domain)
                    .await?
                    .into_iter()
                    .find(|a| &a.subnet == subnet && a.attachment == att)
                    .map(|a| a.state)
                    .unwrap_or_else(|| "missing".into());
                Ok(if st == "associated" { Ok(()) } else { Err(st) })
            },
        )
        .await?;
    }
    // Subnets dropped from the cluster file: disassociated, then out of the attachment.
    let stale = plan_stale_associations(&have, &att, &subnets);
    for op in &stale {
        execute(ctx, &ids, op).await?;
    }
    if let Some(op) = plan_removal(found_att.as_ref(), &subnets) {
        if !stale.is_empty() {
            ctx.settle(&format!("disassociation from {domain}"), || async {
                let left = associations(ctx, &domain)
                    .await?
                    .into_iter()
                    .filter(|a| {
                        a.attachment == att
                            && !subnets.contains(&a.subnet)
                            && a.state != "disassociated"
                    })
                    .count();
                Ok(if left == 0 {
                    Ok(())
                } else {
                    Err(format!("{left} left"))
                })
            })
            .await?;
        }
        execute(ctx, &ids, &op).await?;
    }
    Ok(ids)
}

/// Records one step and carries it out in apply mode. Returns the id of the link the step is
/// about where known (for the association: the subnet).
async fn execute(ctx: &Ctx, ids: &TgwIds, op: &Op) -> Result<Option<String>> {
    let ec2 = &ctx.clients.ec2;
    let cfg = &ctx.cluster.cfg;
    let subnets = &ctx.cluster.subnets;
    let item = op.item(subnets, ids.domain.as_deref());
    let need = |what: &str, v: &Option<String>| {
        v.clone()
            .ok_or_else(|| anyhow::anyhow!("{what} missing before {:?}", op))
    };
    let call = async {
        Ok(match op {
            Op::KeepTgw { .. }
            | Op::KeepAttachment { .. }
            | Op::KeepDomain { .. }
            | Op::KeepAssociation { .. }
            | Op::AssociateAfterCreation { .. } => Done::nothing(),
            Op::CreateTgw => {
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
                let id = out.transit_gateway().and_then(|t| t.transit_gateway_id());
                Done::created(id.unwrap_or_default(), "pending")
            }
            Op::AddSubnets { id, add, .. } => {
                ec2.modify_transit_gateway_vpc_attachment()
                    .transit_gateway_attachment_id(id)
                    .set_add_subnet_ids(Some(add.clone()))
                    .send()
                    .await
                    .map_err(|e| err("ModifyTransitGatewayVpcAttachment", e))?;
                Done::nothing()
            }
            Op::RemoveSubnets { id, remove, .. } => {
                ec2.modify_transit_gateway_vpc_attachment()
                    .transit_gateway_attachment_id(id)
                    .set_remove_subnet_ids(Some(remove.clone()))
                    .send()
                    .await
                    .map_err(|e| err("ModifyTransitGatewayVpcAttachment", e))?;
                Done::nothing()
            }
            Op::CreateAttachment => {
                let out = ec2
                    .create_transit_gateway_vpc_attachment()
                    .transit_gateway_id(need("transit gateway", &ids.tgw)?)
                    .vpc_id(&cfg.vpc_id)
                    .set_subnet_ids(Some(subnets.clone()))
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
                    .and_then(|a| a.transit_gateway_attachment_id());
                Done::created(id.unwrap_or_default(), "pending")
            }
            Op::CreateDomain => {
                let out = ec2
                    .create_transit_gateway_multicast_domain()
                    .transit_gateway_id(need("transit gateway", &ids.tgw)?)
                    .options(
                        CreateTransitGatewayMulticastDomainRequestOptions::builder()
                            .igmpv2_support(Igmpv2SupportValue::Enable)
                            .static_sources_support(StaticSourcesSupportValue::Disable)
                            .auto_accept_shared_associations(
                                AutoAcceptSharedAssociationsValue::Disable,
                            )
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
                    .and_then(|d| d.transit_gateway_multicast_domain_id());
                Done::created(id.unwrap_or_default(), "pending")
            }
            Op::Associate { subnet } => {
                let att = need("attachment", &ids.attachment)?;
                let domain = need("multicast domain", &ids.domain)?;
                // AWS refuses the association until both ends are available.
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
                    .subnet_ids(subnet)
                    .send()
                    .await
                    .map_err(|e| err("AssociateTransitGatewayMulticastDomain", e))?;
                Done::nothing()
            }
            Op::Disassociate { subnet, .. } => {
                let att = need("attachment", &ids.attachment)?;
                let domain = need("multicast domain", &ids.domain)?;
                ec2.disassociate_transit_gateway_multicast_domain()
                    .transit_gateway_multicast_domain_id(&domain)
                    .transit_gateway_attachment_id(&att)
                    .subnet_ids(subnet)
                    .send()
                    .await
                    .map_err(|e| err("DisassociateTransitGatewayMulticastDomain", e))?;
                Done::nothing()
            }
        })
    };
    ctx.carry_out(item, call).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tgw(multicast: bool) -> FoundTgw {
        FoundTgw {
            id: "tgw-1".into(),
            state: "available".into(),
            multicast,
        }
    }

    #[test]
    fn transit_gateway_is_kept_created_or_refused_without_multicast() {
        assert_eq!(plan_tgw(None, "c").unwrap(), Op::CreateTgw);
        assert!(matches!(
            plan_tgw(Some(&tgw(true)), "c").unwrap(),
            Op::KeepTgw { .. }
        ));
        let e = plan_tgw(Some(&tgw(false)), "c").unwrap_err().to_string();
        assert!(
            e.contains("tgw-1") && e.contains("multicast support off"),
            "{e}"
        );
    }

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn attachment_gains_the_overlay_subnets_it_lacks_and_loses_the_others() {
        let att = |subnets: &[&str]| FoundAttachment {
            id: "tgw-attach-1".into(),
            state: "available".into(),
            subnets: v(subnets),
        };
        assert_eq!(
            plan_attachment(None, &v(&["subnet-1"])),
            Op::CreateAttachment
        );
        assert!(matches!(
            plan_attachment(Some(&att(&["subnet-2", "subnet-1"])), &v(&["subnet-1"])),
            Op::KeepAttachment { .. }
        ));
        let op = plan_attachment(Some(&att(&["subnet-2"])), &v(&["subnet-1"]));
        assert!(matches!(op, Op::AddSubnets { .. }));
        assert_eq!(op.item(&v(&["subnet-1"]), None).detail, "add subnet-1");
        // one subnet per AZ: the attachment takes all of them
        let both = v(&["subnet-1", "subnet-2"]);
        let op = plan_attachment(Some(&att(&["subnet-1"])), &both);
        assert_eq!(
            op,
            Op::AddSubnets {
                id: "tgw-attach-1".into(),
                state: "available".into(),
                add: v(&["subnet-2"])
            }
        );
        assert_eq!(
            Op::CreateAttachment.item(&both, None).detail,
            "subnet-1, subnet-2"
        );
        // a subnet no longer listed leaves the attachment
        assert_eq!(
            plan_removal(Some(&att(&["subnet-1", "subnet-2"])), &both),
            None
        );
        assert_eq!(plan_removal(None, &both), None);
        let op = plan_removal(Some(&att(&["subnet-1", "subnet-3"])), &both).unwrap();
        assert_eq!(op.item(&both, None).detail, "remove subnet-3");
        assert_eq!(op.item(&both, None).action, Action::Change);
    }

    #[test]
    fn domain_with_other_options_is_refused_naming_them() {
        let dom = |igmpv2: &str| FoundDomain {
            id: "tgw-mcast-domain-1".into(),
            state: "available".into(),
            options: DomainOptions {
                igmpv2: igmpv2.into(),
                ..wanted_options()
            },
        };
        assert_eq!(plan_domain(None).unwrap(), Op::CreateDomain);
        assert!(matches!(
            plan_domain(Some(&dom("enable"))).unwrap(),
            Op::KeepDomain { .. }
        ));
        let e = plan_domain(Some(&dom("disable"))).unwrap_err().to_string();
        assert!(e.contains("igmpv2=disable"), "{e}");
    }

    #[test]
    fn only_a_live_association_of_our_attachment_counts() {
        let a = |att: &str, subnet: &str, state: &str| Association {
            attachment: att.into(),
            subnet: subnet.into(),
            state: state.into(),
        };
        let assoc = Op::Associate {
            subnet: "subnet-1".into(),
        };
        assert_eq!(plan_association(&[], "att-1", "subnet-1"), assoc);
        assert_eq!(
            plan_association(
                &[a("att-1", "subnet-1", "associating")],
                "att-1",
                "subnet-1"
            ),
            Op::KeepAssociation {
                subnet: "subnet-1".into(),
                state: "associating".into()
            }
        );
        for gone in ["disassociated", "disassociating", "failed", "rejected"] {
            assert_eq!(
                plan_association(&[a("att-1", "subnet-1", gone)], "att-1", "subnet-1"),
                assoc,
                "{gone}"
            );
        }
        assert_eq!(
            plan_association(&[a("att-2", "subnet-1", "associated")], "att-1", "subnet-1"),
            assoc
        );
        // the report: known association by subnet with the domain as detail
        let it = assoc.item(&v(&["subnet-1"]), Some("dom-1"));
        assert_eq!(
            (it.id.as_deref(), it.detail.as_str()),
            (Some("subnet-1"), "dom-1")
        );
        let it = Op::AssociateAfterCreation {
            subnet: "subnet-1".into(),
        }
        .item(&v(&["subnet-1"]), None);
        assert_eq!((it.id, it.detail.as_str()), (None, "subnet-1"));
    }

    #[test]
    fn associations_of_subnets_no_longer_listed_go() {
        let a = |att: &str, subnet: &str, state: &str| Association {
            attachment: att.into(),
            subnet: subnet.into(),
            state: state.into(),
        };
        let have = [
            a("att-1", "subnet-1", "associated"),
            a("att-1", "subnet-2", "associated"),
            a("att-1", "subnet-3", "associated"),
            a("att-1", "subnet-4", "disassociated"),
            a("att-2", "subnet-5", "associated"),
        ];
        let ops = plan_stale_associations(&have, "att-1", &v(&["subnet-1", "subnet-2"]));
        assert_eq!(
            ops,
            vec![Op::Disassociate {
                subnet: "subnet-3".into(),
                state: "associated".into()
            }]
        );
        assert_eq!(ops[0].item(&[], Some("d")).action, Action::Delete);
        assert!(
            plan_stale_associations(&have[..2], "att-1", &v(&["subnet-1", "subnet-2"])).is_empty()
        );
    }
}
