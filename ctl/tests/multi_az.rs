//! A cluster over two subnets in two AZs with a router pair: bootstrap → verify the TGW
//! attachment (both subnets), both multicast associations, one EFS mount target per subnet,
//! source/dest check off on both routers, the overlay routes to router a and every managed
//! route table tagged → a failover (the standby's ReplaceRoute, made here with the SDK) →
//! bootstrap again: zero mutating calls and the routes still on router b → teardown: nothing
//! tagged left, not even a route table; the bootstrap IAM policy covers every call made.

mod common;

use std::collections::BTreeSet;

use aws_sdk_ec2::types::Filter;
use common::*;

fn vpc_filter(vpc: &str) -> Filter {
    Filter::builder().name("vpc-id").values(vpc).build()
}

/// (route table, overlay route's interface, overlay:cluster tag) of every table of the VPC.
async fn tables(sdk: &Sdk, vpc: &str) -> Vec<(String, Option<String>, Option<String>)> {
    let out = sdk
        .ec2
        .describe_route_tables()
        .filters(vpc_filter(vpc))
        .send()
        .await
        .unwrap();
    out.route_tables()
        .iter()
        .map(|rt| {
            (
                rt.route_table_id().unwrap().to_string(),
                rt.routes()
                    .iter()
                    .find(|r| r.destination_cidr_block() == Some("100.64.0.0/16"))
                    .and_then(|r| r.network_interface_id().map(str::to_string)),
                rt.tags()
                    .iter()
                    .find(|t| t.key() == Some(TAG))
                    .and_then(|t| t.value().map(str::to_string)),
            )
        })
        .collect()
}

async fn verify_multi_az(sdk: &Sdk, s: &SeedPair) {
    let ec2 = &sdk.ec2;
    let want: BTreeSet<String> = s.subnets.iter().cloned().collect();
    // the attachment takes both subnets, each associated with the domain
    let atts = ec2
        .describe_transit_gateway_vpc_attachments()
        .filters(tag_filter())
        .send()
        .await
        .unwrap();
    let atts: Vec<_> = atts
        .transit_gateway_vpc_attachments()
        .iter()
        .filter(|a| a.state().map(|s| s.as_str()) == Some("available"))
        .collect();
    assert_eq!(atts.len(), 1);
    let have: BTreeSet<String> = atts[0].subnet_ids().iter().cloned().collect();
    assert_eq!(have, want, "attachment subnets");
    let att = atts[0].transit_gateway_attachment_id().unwrap();
    let domain = tagged_domain(sdk).await;
    let assoc = ec2
        .get_transit_gateway_multicast_domain_associations()
        .transit_gateway_multicast_domain_id(&domain)
        .send()
        .await
        .unwrap();
    let associated: BTreeSet<String> = assoc
        .multicast_domain_associations()
        .iter()
        .filter(|a| a.transit_gateway_attachment_id() == Some(att))
        .filter(|a| a.subnet().and_then(|s| s.state()).map(|s| s.as_str()) == Some("associated"))
        .filter_map(|a| a.subnet().and_then(|s| s.subnet_id()).map(str::to_string))
        .collect();
    assert_eq!(associated, want, "multicast associations");

    // one mount target per subnet
    let fss = sdk.efs.describe_file_systems().send().await.unwrap();
    let fs = fss.file_systems()[0].file_system_id().to_string();
    let mts = sdk
        .efs
        .describe_mount_targets()
        .file_system_id(&fs)
        .send()
        .await
        .unwrap();
    let mt_subnets: Vec<String> = mts
        .mount_targets()
        .iter()
        .map(|m| m.subnet_id().to_string())
        .collect();
    assert_eq!(mt_subnets.len(), 2, "{mt_subnets:?}");
    assert_eq!(mt_subnets.into_iter().collect::<BTreeSet<_>>(), want);

    // source/dest check off on both routers
    for r in &s.routers {
        let out = ec2
            .describe_instances()
            .instance_ids(r)
            .send()
            .await
            .unwrap();
        assert_eq!(
            out.reservations()[0].instances()[0].source_dest_check(),
            Some(false),
            "{r}"
        );
    }

    // VXLAN and the management ports from both subnets
    let sgs = ec2
        .describe_security_groups()
        .filters(tag_filter())
        .send()
        .await
        .unwrap();
    let cidrs_of = |suffix: &str, port: i32| -> BTreeSet<String> {
        let g = sgs
            .security_groups()
            .iter()
            .find(|g| g.group_name().unwrap().ends_with(suffix))
            .unwrap();
        g.ip_permissions()
            .iter()
            .filter(|p| p.from_port() == Some(port))
            .flat_map(|p| {
                p.ip_ranges()
                    .iter()
                    .map(|r| r.cidr_ip().unwrap().to_string())
            })
            .collect()
    };
    let both: BTreeSet<String> = ["10.0.1.0/24".to_string(), "10.0.2.0/24".to_string()].into();
    assert_eq!(cidrs_of("-vtep", 4789), both);
    assert_eq!(cidrs_of("-mgmt", 8080), both);

    // the database's subnet group: the two subnets (no second_subnet_id needed)
    assert_eq!(db_subnet_group_subnets(sdk).await, want);
}

#[tokio::test]
async fn two_azs_and_a_router_pair_survive_a_failover_and_a_rerun() {
    let Some(emu) = Emulator::start() else { return };
    let sdk = sdk(&emu).await;
    let s = seed_pair(&sdk).await;
    // a second route table for the subnet of router b, as a multi-AZ VPC often has
    let rt_b = sdk
        .ec2
        .create_route_table()
        .vpc_id(&s.vpc)
        .send()
        .await
        .unwrap()
        .route_table()
        .unwrap()
        .route_table_id()
        .unwrap()
        .to_string();
    sdk.ec2
        .associate_route_table()
        .route_table_id(&rt_b)
        .subnet_id(&s.subnets[1])
        .send()
        .await
        .unwrap();
    let cfg = write_config(&emu, "cluster.toml", &config_text_pair(&s));
    let eni_a = primary_eni(&sdk, &s.routers[0]).await;
    let eni_b = primary_eni(&sdk, &s.routers[1]).await;
    emu.reset_calls();

    // plan: nothing mutated; a mount target and an association per subnet planned
    let plan = overlayctl(&emu, &["plan", "--config", &cfg, "-o", "json"]);
    assert_eq!(plan.code, 0, "{}", plan.all());
    assert!(
        emu.mutating_calls().is_empty(),
        "{:?}",
        emu.mutating_calls()
    );
    let v: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    let count = |r: &str| {
        v["plan"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["resource"] == r)
            .count()
    };
    assert_eq!(count("efs-mount-target"), 2, "{}", plan.stdout);
    assert_eq!(count("multicast-association"), 2, "{}", plan.stdout);

    // bootstrap
    let run = overlayctl(&emu, &["bootstrap", "--config", &cfg]);
    assert_eq!(run.code, 0, "{}", run.all());
    let mut all_calls = emu.calls(true);
    verify_multi_az(&sdk, &s).await;
    let t = tables(&sdk, &s.vpc).await;
    assert_eq!(t.len(), 2);
    for (id, eni, tag) in &t {
        assert_eq!(
            eni.as_deref(),
            Some(eni_a.as_str()),
            "{id}: routed to router a"
        );
        assert_eq!(tag.as_deref(), Some("lab1"), "{id}: tagged");
    }

    // doctor: a healthy pair
    emu.reset_calls();
    let d = overlayctl(&emu, &["doctor", "--config", &cfg, "-o", "json"]);
    all_calls.extend(emu.calls(true));
    let dj: serde_json::Value = serde_json::from_str(&d.stdout).unwrap();
    let verdict = |id: &str| {
        dj["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .unwrap()["verdict"]
            .clone()
    };
    assert_eq!(verdict("router.pair"), "ok", "{dj}");
    assert_eq!(verdict("routes.overlay"), "ok", "{dj}");
    assert_eq!(verdict("tgw.domain"), "ok", "{dj}");
    assert_eq!(verdict("efs.mount-target"), "ok", "{dj}");
    assert_eq!(verdict("sg.vtep.vxlan"), "ok", "{dj}");
    assert_eq!(verdict("nacl"), "ok", "{dj}");

    // failover: router b takes every route over, as its overlayd does (ReplaceRoute only)
    for (id, _, _) in &t {
        sdk.ec2
            .replace_route()
            .route_table_id(id)
            .destination_cidr_block("100.64.0.0/16")
            .network_interface_id(&eni_b)
            .send()
            .await
            .unwrap();
    }

    // a bootstrap re-run does not undo it: zero mutating calls, every item keep
    emu.reset_calls();
    let again = overlayctl(&emu, &["bootstrap", "--config", &cfg, "-o", "json"]);
    assert_eq!(again.code, 0, "{}", again.all());
    assert_eq!(
        emu.mutating_calls(),
        vec![],
        "re-run after a failover must not mutate"
    );
    all_calls.extend(emu.calls(true));
    let v: serde_json::Value = serde_json::from_str(&again.stdout).unwrap();
    let items = v["items"].as_array().unwrap();
    assert!(
        items.iter().all(|i| i["action"] == "keep"),
        "{}",
        again.stdout
    );
    assert!(
        items
            .iter()
            .any(|i| i["resource"].as_str().unwrap().starts_with("route/")
                && i["detail"].as_str().unwrap().contains("failover")),
        "{}",
        again.stdout
    );
    for (id, eni, _) in tables(&sdk, &s.vpc).await {
        assert_eq!(
            eni.as_deref(),
            Some(eni_b.as_str()),
            "{id}: still on router b"
        );
    }
    verify_multi_az(&sdk, &s).await;

    // a route pointing elsewhere is put back on router a
    let stray = sdk
        .ec2
        .create_network_interface()
        .subnet_id(&s.subnets[1])
        .send()
        .await
        .unwrap()
        .network_interface()
        .unwrap()
        .network_interface_id()
        .unwrap()
        .to_string();
    sdk.ec2
        .replace_route()
        .route_table_id(&rt_b)
        .destination_cidr_block("100.64.0.0/16")
        .network_interface_id(&stray)
        .send()
        .await
        .unwrap();
    emu.reset_calls();
    let fix = overlayctl(&emu, &["bootstrap", "--config", &cfg]);
    assert_eq!(fix.code, 0, "{}", fix.all());
    let calls: Vec<String> = emu.mutating_calls().into_iter().map(|c| c.1).collect();
    assert_eq!(calls, vec!["ReplaceRoute"]);
    all_calls.extend(emu.calls(true));
    for (id, eni, _) in tables(&sdk, &s.vpc).await {
        let want = if id == rt_b { &eni_a } else { &eni_b };
        assert_eq!(eni.as_deref(), Some(want.as_str()), "{id}");
    }

    // teardown: nothing tagged left, no overlay route, no route table tagged
    emu.reset_calls();
    let down = overlayctl(&emu, &["teardown", "--config", &cfg, "--yes"]);
    assert_eq!(down.code, 0, "{}", down.all());
    all_calls.extend(emu.calls(true));
    nothing_tagged_left(&sdk).await;
    for (id, eni, tag) in tables(&sdk, &s.vpc).await {
        assert_eq!(eni, None, "{id}: overlay route left");
        assert_eq!(tag, None, "{id}: cluster tag left");
    }
    let rts = sdk
        .ec2
        .describe_route_tables()
        .filters(tag_filter())
        .send()
        .await
        .unwrap();
    assert!(rts.route_tables().is_empty());
    // the routers stay
    for r in &s.routers {
        let out = sdk
            .ec2
            .describe_instances()
            .instance_ids(r)
            .send()
            .await
            .unwrap();
        assert_eq!(out.reservations().len(), 1);
    }
    emu.reset_calls();
    let down2 = overlayctl(&emu, &["teardown", "--config", &cfg, "--yes"]);
    assert_eq!(down2.code, 0, "{}", down2.all());
    assert!(
        emu.mutating_calls().is_empty(),
        "{:?}",
        emu.mutating_calls()
    );

    // the bootstrap IAM policy allows every call made
    let pol = overlayctl(&emu, &["iam-policy", "--for", "bootstrap"]);
    let p: serde_json::Value = serde_json::from_str(&pol.stdout).unwrap();
    let allowed: BTreeSet<String> = p["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| {
            s["Action"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_string())
        })
        .collect();
    let mut made = BTreeSet::new();
    for (service, action, _) in all_calls {
        let a = format!("{service}:{action}");
        assert!(allowed.contains(&a), "IAM policy lacks {a}");
        made.insert(a);
    }
    for a in ["ec2:CreateTags", "ec2:DeleteTags"] {
        assert!(made.contains(a), "{a} not called: {made:?}");
    }
}
