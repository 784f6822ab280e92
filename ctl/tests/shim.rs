//! The emulator's transit-gateway multicast API, exercised with the real Rust SDK: request and
//! response shapes parse, and AWS's state rules hold.

mod common;

use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types::{
    CreateTransitGatewayMulticastDomainRequestOptions as DomOpts, Filter, Igmpv2SupportValue,
    MulticastSupportValue, StaticSourcesSupportValue, TransitGatewayRequestOptions,
};
use common::*;

fn code<E: ProvideErrorMetadata, R>(
    r: Result<impl std::fmt::Debug, aws_sdk_ec2::error::SdkError<E, R>>,
) -> String {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e
            .as_service_error()
            .and_then(|s| s.code())
            .unwrap_or("?")
            .to_string(),
    }
}

#[tokio::test]
async fn multicast_domain_api_and_state_rules() {
    let Some(emu) = Emulator::start() else { return };
    let sdk = sdk(&emu).await;
    let ec2 = &sdk.ec2;
    let seed = seed(&sdk).await;

    // TGW without multicast cannot host a domain; unknown TGW is NotFound.
    let plain = ec2.create_transit_gateway().send().await.unwrap();
    let plain = plain
        .transit_gateway()
        .unwrap()
        .transit_gateway_id()
        .unwrap()
        .to_string();
    let e = code(
        ec2.create_transit_gateway_multicast_domain()
            .transit_gateway_id(&plain)
            .send()
            .await,
    );
    assert_eq!(e, "InvalidParameterValue");
    let e = code(
        ec2.create_transit_gateway_multicast_domain()
            .transit_gateway_id("tgw-0123456789abcdef0")
            .send()
            .await,
    );
    assert_eq!(e, "InvalidTransitGatewayID.NotFound");

    let tgw = ec2
        .create_transit_gateway()
        .options(
            TransitGatewayRequestOptions::builder()
                .multicast_support(MulticastSupportValue::Enable)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let tgw = tgw
        .transit_gateway()
        .unwrap()
        .transit_gateway_id()
        .unwrap()
        .to_string();
    let att = ec2
        .create_transit_gateway_vpc_attachment()
        .transit_gateway_id(&tgw)
        .vpc_id(&seed.vpc)
        .subnet_ids(&seed.subnet)
        .send()
        .await
        .unwrap();
    let att = att
        .transit_gateway_vpc_attachment()
        .unwrap()
        .transit_gateway_attachment_id()
        .unwrap()
        .to_string();

    let d = ec2
        .create_transit_gateway_multicast_domain()
        .transit_gateway_id(&tgw)
        .options(
            DomOpts::builder()
                .igmpv2_support(Igmpv2SupportValue::Enable)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let d = d.transit_gateway_multicast_domain().unwrap();
    assert_eq!(d.state().unwrap().as_str(), "pending");
    assert!(d
        .transit_gateway_multicast_domain_arn()
        .unwrap()
        .starts_with("arn:aws:ec2:"));
    let dom = d.transit_gateway_multicast_domain_id().unwrap().to_string();
    // pending domains refuse associations; a describe later it is available
    let e = code(
        ec2.associate_transit_gateway_multicast_domain()
            .transit_gateway_multicast_domain_id(&dom)
            .transit_gateway_attachment_id(&att)
            .subnet_ids(&seed.subnet)
            .send()
            .await,
    );
    assert_eq!(e, "IncorrectState");
    let desc = ec2
        .describe_transit_gateway_multicast_domains()
        .filters(
            Filter::builder()
                .name("transit-gateway-id")
                .values(&tgw)
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        desc.transit_gateway_multicast_domains()[0]
            .state()
            .unwrap()
            .as_str(),
        "available"
    );

    // subnet must be part of the attachment
    let e = code(
        ec2.associate_transit_gateway_multicast_domain()
            .transit_gateway_multicast_domain_id(&dom)
            .transit_gateway_attachment_id(&att)
            .subnet_ids(&seed.subnet2)
            .send()
            .await,
    );
    assert_eq!(e, "InvalidParameterValue");
    let a = ec2
        .associate_transit_gateway_multicast_domain()
        .transit_gateway_multicast_domain_id(&dom)
        .transit_gateway_attachment_id(&att)
        .subnet_ids(&seed.subnet)
        .send()
        .await
        .unwrap();
    let a = a.associations().unwrap();
    assert_eq!(a.resource_id(), Some(seed.vpc.as_str()));
    assert_eq!(a.subnets()[0].state().unwrap().as_str(), "associating");

    // one domain per subnet
    let d2 = ec2
        .create_transit_gateway_multicast_domain()
        .transit_gateway_id(&tgw)
        .options(
            DomOpts::builder()
                .igmpv2_support(Igmpv2SupportValue::Disable)
                .static_sources_support(StaticSourcesSupportValue::Enable)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let dom2 = d2
        .transit_gateway_multicast_domain()
        .unwrap()
        .transit_gateway_multicast_domain_id()
        .unwrap()
        .to_string();
    ec2.describe_transit_gateway_multicast_domains()
        .send()
        .await
        .unwrap();
    let e = code(
        ec2.associate_transit_gateway_multicast_domain()
            .transit_gateway_multicast_domain_id(&dom2)
            .transit_gateway_attachment_id(&att)
            .subnet_ids(&seed.subnet)
            .send()
            .await,
    );
    assert_eq!(e, "InvalidParameterValue");

    let assoc = ec2
        .get_transit_gateway_multicast_domain_associations()
        .transit_gateway_multicast_domain_id(&dom)
        .send()
        .await
        .unwrap();
    assert_eq!(
        assoc.multicast_domain_associations()[0]
            .subnet()
            .unwrap()
            .state()
            .unwrap()
            .as_str(),
        "associated"
    );

    // members and sources
    let eni = ec2
        .create_network_interface()
        .subnet_id(&seed.subnet)
        .send()
        .await
        .unwrap();
    let eni = eni
        .network_interface()
        .unwrap()
        .network_interface_id()
        .unwrap()
        .to_string();
    let r = ec2
        .register_transit_gateway_multicast_group_members()
        .transit_gateway_multicast_domain_id(&dom)
        .group_ip_address("239.1.1.1")
        .network_interface_ids(&eni)
        .send()
        .await
        .unwrap();
    let r = r.registered_multicast_group_members().unwrap();
    assert_eq!(
        r.registered_network_interface_ids(),
        std::slice::from_ref(&eni)
    );
    let e = code(
        ec2.register_transit_gateway_multicast_group_members()
            .transit_gateway_multicast_domain_id(&dom)
            .group_ip_address("10.1.1.1")
            .network_interface_ids(&eni)
            .send()
            .await,
    );
    assert_eq!(e, "InvalidParameterValue");
    let e = code(
        ec2.register_transit_gateway_multicast_group_sources()
            .transit_gateway_multicast_domain_id(&dom)
            .group_ip_address("239.1.1.1")
            .network_interface_ids(&eni)
            .send()
            .await,
    );
    assert_eq!(
        e, "InvalidParameterValue",
        "static sources are off in an IGMP domain"
    );
    let s = ec2
        .search_transit_gateway_multicast_groups()
        .transit_gateway_multicast_domain_id(&dom)
        .filters(
            Filter::builder()
                .name("is-group-member")
                .values("true")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let g = &s.multicast_groups()[0];
    assert_eq!(g.group_ip_address(), Some("239.1.1.1"));
    assert_eq!(g.network_interface_id(), Some(eni.as_str()));
    assert_eq!(g.subnet_id(), Some(seed.subnet.as_str()));
    assert_eq!(g.group_member(), Some(true));
    assert_eq!(g.member_type().unwrap().as_str(), "static");
    let d = ec2
        .deregister_transit_gateway_multicast_group_members()
        .transit_gateway_multicast_domain_id(&dom)
        .group_ip_address("239.1.1.1")
        .network_interface_ids(&eni)
        .send()
        .await
        .unwrap();
    assert_eq!(
        d.deregistered_multicast_group_members()
            .unwrap()
            .deregistered_network_interface_ids(),
        std::slice::from_ref(&eni)
    );
    let s = ec2
        .search_transit_gateway_multicast_groups()
        .transit_gateway_multicast_domain_id(&dom)
        .send()
        .await
        .unwrap();
    assert!(s.multicast_groups().is_empty());

    // deletion order is enforced
    let e = code(
        ec2.delete_transit_gateway()
            .transit_gateway_id(&tgw)
            .send()
            .await,
    );
    assert_eq!(e, "IncorrectState");
    let e = code(
        ec2.delete_transit_gateway_vpc_attachment()
            .transit_gateway_attachment_id(&att)
            .send()
            .await,
    );
    assert_eq!(e, "IncorrectState");
    let e = code(
        ec2.delete_transit_gateway_multicast_domain()
            .transit_gateway_multicast_domain_id(&dom)
            .send()
            .await,
    );
    assert_eq!(e, "IncorrectState");
    ec2.disassociate_transit_gateway_multicast_domain()
        .transit_gateway_multicast_domain_id(&dom)
        .transit_gateway_attachment_id(&att)
        .subnet_ids(&seed.subnet)
        .send()
        .await
        .unwrap();
    let left = ec2
        .get_transit_gateway_multicast_domain_associations()
        .transit_gateway_multicast_domain_id(&dom)
        .send()
        .await
        .unwrap();
    assert!(left.multicast_domain_associations().is_empty());
    for d in [&dom, &dom2] {
        let out = ec2
            .delete_transit_gateway_multicast_domain()
            .transit_gateway_multicast_domain_id(d)
            .send()
            .await
            .unwrap();
        assert_eq!(
            out.transit_gateway_multicast_domain()
                .unwrap()
                .state()
                .unwrap()
                .as_str(),
            "deleting"
        );
    }
    let desc = ec2
        .describe_transit_gateway_multicast_domains()
        .transit_gateway_multicast_domain_ids(&dom)
        .send()
        .await
        .unwrap();
    assert_eq!(
        desc.transit_gateway_multicast_domains()[0]
            .state()
            .unwrap()
            .as_str(),
        "deleted"
    );
    let e = code(
        ec2.associate_transit_gateway_multicast_domain()
            .transit_gateway_multicast_domain_id(&dom)
            .transit_gateway_attachment_id(&att)
            .subnet_ids(&seed.subnet)
            .send()
            .await,
    );
    assert_eq!(e, "InvalidTransitGatewayMulticastDomainId.NotFound");
    ec2.delete_transit_gateway_vpc_attachment()
        .transit_gateway_attachment_id(&att)
        .send()
        .await
        .unwrap();
    ec2.delete_transit_gateway()
        .transit_gateway_id(&tgw)
        .send()
        .await
        .unwrap();

    // fault injection and counting
    emu.fail_next("DescribeTransitGatewayMulticastDomains", "before");
    let e = code(
        ec2.describe_transit_gateway_multicast_domains()
            .send()
            .await,
    );
    assert_eq!(e, "InternalError");
    ec2.describe_transit_gateway_multicast_domains()
        .send()
        .await
        .unwrap();
}
