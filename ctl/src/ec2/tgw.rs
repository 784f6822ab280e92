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
    /// The attachment exists but not on the overlay subnet.
    AddSubnet {
        id: String,
        state: String,
    },
    CreateAttachment,
    KeepDomain {
        id: String,
        state: String,
    },
    CreateDomain,
    KeepAssociation {
        state: String,
    },
    Associate,
    /// Plan mode: the attachment or the domain is still to be created, and the association with it.
    AssociateAfterCreation,
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

/// The VPC attachment: keep, add the overlay subnet to it, or create it.
pub fn plan_attachment(found: Option<&FoundAttachment>, subnet: &str) -> Op {
    match found {
        None => Op::CreateAttachment,
        Some(a) if a.subnets.iter().any(|s| s == subnet) => Op::KeepAttachment {
            id: a.id.clone(),
            state: a.state.clone(),
        },
        Some(a) => Op::AddSubnet {
            id: a.id.clone(),
            state: a.state.clone(),
        },
    }
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

/// The association of our subnet through our attachment: one that is live (not going away or
/// refused) is kept, else the subnet is associated.
pub fn plan_association(have: &[Association], attachment: &str, subnet: &str) -> Op {
    let live = have.iter().find(|a| {
        a.attachment == attachment
            && a.subnet == subnet
            && !matches!(
                a.state.as_str(),
                "disassociated" | "disassociating" | "failed" | "rejected"
            )
    });
    match live {
        Some(a) => Op::KeepAssociation {
            state: a.state.clone(),
        },
        None => Op::Associate,
    }
}

impl Op {
    /// The report line of this step; `subnet` is the overlay subnet, `domain` the domain's id
    /// where known.
    pub fn item(&self, subnet: &str, domain: Option<&str>) -> Item {
        let domain = domain.unwrap_or("-");
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
                Item::new("tgw-attachment", Some(id), state, Action::Keep, subnet)
            }
            Op::AddSubnet { id, state } => Item::new(
                "tgw-attachment",
                Some(id),
                state,
                Action::Change,
                &format!("add {subnet}"),
            ),
            Op::CreateAttachment => {
                Item::new("tgw-attachment", None, "absent", Action::Create, subnet)
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
            Op::KeepAssociation { state } => Item::new(
                "multicast-association",
                Some(subnet),
                state,
                Action::Keep,
                domain,
            ),
            Op::Associate => Item::new(
                "multicast-association",
                Some(subnet),
                "absent",
                Action::Create,
                domain,
            ),
            Op::AssociateAfterCreation => Item::new(
                "multicast-association",
                None,
                "absent",
                Action::Create,
                subnet,
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
    let subnet = ctx.cluster.cfg.subnet_id.clone();
    let mut ids = TgwIds::default();

    let op = plan_tgw(find_tgw(ctx).await?.as_ref(), ctx.name())?;
    ids.tgw = execute(ctx, &ids, &op).await?;
    let Some(tgw) = ids.tgw.clone() else {
        for op in [
            Op::CreateAttachment,
            Op::CreateDomain,
            Op::AssociateAfterCreation,
        ] {
            execute(ctx, &ids, &op).await?;
        }
        return Ok(ids);
    };
    ctx.settle(&format!("transit gateway {tgw}"), || async {
        let s = tgw_state(ctx, &tgw).await?;
        Ok(if s == "available" { Ok(()) } else { Err(s) })
    })
    .await?;

    let op = plan_attachment(find_attachment(ctx, &tgw).await?.as_ref(), &subnet);
    ids.attachment = execute(ctx, &ids, &op).await?;

    let op = plan_domain(find_domain(ctx, &tgw).await?.as_ref())?;
    ids.domain = execute(ctx, &ids, &op).await?;

    let (Some(att), Some(domain)) = (ids.attachment.clone(), ids.domain.clone()) else {
        execute(ctx, &ids, &Op::AssociateAfterCreation).await?;
        return Ok(ids);
    };
    let op = plan_association(&associations(ctx, &domain).await?, &att, &subnet);
    execute(ctx, &ids, &op).await?;
    ctx.settle(
        &format!("association of {subnet} with {domain}"),
        || async {
            let st = associations(ctx, &domain)
                .await?
                .into_iter()
                .find(|a| a.subnet == subnet)
                .map(|a| a.state)
                .unwrap_or_else(|| "missing".into());
            Ok(if st == "associated" { Ok(()) } else { Err(st) })
        },
    )
    .await?;
    Ok(ids)
}

/// Records one step and carries it out in apply mode. Returns the id of the link the step is
/// about where known (for the association: the subnet).
async fn execute(ctx: &Ctx, ids: &TgwIds, op: &Op) -> Result<Option<String>> {
    let ec2 = &ctx.clients.ec2;
    let cfg = &ctx.cluster.cfg;
    let item = op.item(&cfg.subnet_id, ids.domain.as_deref());
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
            | Op::AssociateAfterCreation => Done::nothing(),
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
            Op::AddSubnet { id, .. } => {
                ec2.modify_transit_gateway_vpc_attachment()
                    .transit_gateway_attachment_id(id)
                    .add_subnet_ids(&cfg.subnet_id)
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
            Op::Associate => {
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
                    .subnet_ids(&cfg.subnet_id)
                    .send()
                    .await
                    .map_err(|e| err("AssociateTransitGatewayMulticastDomain", e))?;
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

    #[test]
    fn attachment_gains_the_overlay_subnet_when_it_lacks_it() {
        let att = |subnets: &[&str]| FoundAttachment {
            id: "tgw-attach-1".into(),
            state: "available".into(),
            subnets: subnets.iter().map(|s| s.to_string()).collect(),
        };
        assert_eq!(plan_attachment(None, "subnet-1"), Op::CreateAttachment);
        assert!(matches!(
            plan_attachment(Some(&att(&["subnet-2", "subnet-1"])), "subnet-1"),
            Op::KeepAttachment { .. }
        ));
        let op = plan_attachment(Some(&att(&["subnet-2"])), "subnet-1");
        assert!(matches!(op, Op::AddSubnet { .. }));
        assert_eq!(op.item("subnet-1", None).detail, "add subnet-1");
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
        assert_eq!(plan_association(&[], "att-1", "subnet-1"), Op::Associate);
        assert_eq!(
            plan_association(
                &[a("att-1", "subnet-1", "associating")],
                "att-1",
                "subnet-1"
            ),
            Op::KeepAssociation {
                state: "associating".into()
            }
        );
        for gone in ["disassociated", "disassociating", "failed", "rejected"] {
            assert_eq!(
                plan_association(&[a("att-1", "subnet-1", gone)], "att-1", "subnet-1"),
                Op::Associate,
                "{gone}"
            );
        }
        assert_eq!(
            plan_association(&[a("att-2", "subnet-1", "associated")], "att-1", "subnet-1"),
            Op::Associate
        );
        // the report: known association by subnet with the domain as detail
        let it = Op::Associate.item("subnet-1", Some("dom-1"));
        assert_eq!(
            (it.id.as_deref(), it.detail.as_str()),
            (Some("subnet-1"), "dom-1")
        );
        let it = Op::AssociateAfterCreation.item("subnet-1", None);
        assert_eq!((it.id, it.detail.as_str()), (None, "subnet-1"));
    }
}
