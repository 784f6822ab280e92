//! flood = "unicast": bad flood settings exit 2 before any call that changes something; plan
//! shows no transit gateway step and says why; bootstrap creates everything but the transit
//! gateway chain (no IGMP rule); a re-run makes zero mutating calls; status reports no missing
//! TGW piece; teardown leaves nothing. Then a cluster switched multicast → unicast: bootstrap
//! leaves the old chain alone and names it, teardown removes it. The agent's IAM policy follows
//! the cluster file. One emulator for the whole file.

mod common;

use std::collections::BTreeSet;

use common::*;

/// The seed's cluster file with flood = "unicast" and no multicast_group (not needed then).
fn unicast_text(seed: &Seed) -> String {
    let text: String = config_text(seed)
        .lines()
        .filter(|l| !l.starts_with("multicast_group"))
        .map(|l| format!("{l}\n"))
        .collect();
    format!("{text}flood = \"unicast\"\n")
}

fn json(r: &Run) -> serde_json::Value {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.all()))
}

fn is_tgw_resource(resource: &str) -> bool {
    ["transit-gateway", "tgw-", "multicast-"]
        .iter()
        .any(|p| resource.starts_with(p))
}

/// Items of a plan / status / bootstrap JSON report that are about the transit gateway chain.
fn tgw_items(items: &serde_json::Value) -> Vec<String> {
    items
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| is_tgw_resource(i["resource"].as_str().unwrap()))
        .map(|i| i.to_string())
        .collect()
}

fn notes(v: &serde_json::Value) -> String {
    v["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

async fn tgw_ids(sdk: &Sdk) -> Vec<(String, String)> {
    let t = sdk.ec2.describe_transit_gateways().send().await.unwrap();
    t.transit_gateways()
        .iter()
        .map(|t| {
            (
                t.transit_gateway_id().unwrap().to_string(),
                t.state().unwrap().as_str().to_string(),
            )
        })
        .collect()
}

/// Nothing at all was created: no transit gateway, no security group of the cluster, no EFS,
/// no DB instance, no secret.
async fn nothing_created(sdk: &Sdk) {
    assert_eq!(tgw_ids(sdk).await, vec![]);
    let g = sdk
        .ec2
        .describe_security_groups()
        .filters(tag_filter())
        .send()
        .await
        .unwrap();
    assert!(g.security_groups().is_empty());
    let f = sdk.efs.describe_file_systems().send().await.unwrap();
    assert!(f.file_systems().is_empty());
    let dbs = sdk.rds.describe_db_instances().send().await.unwrap();
    assert!(dbs.db_instances().is_empty());
    let secrets = sdk.sm.list_secrets().send().await.unwrap();
    assert!(secrets.secret_list().is_empty());
}

fn policy_actions(r: &Run) -> BTreeSet<String> {
    assert_eq!(r.code, 0, "{}", r.all());
    json(r)["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["Action"].as_array().unwrap().clone())
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn unicast_flooding_lifecycle_and_switch_from_multicast() {
    let Some(emu) = Emulator::start() else { return };
    let sdk = sdk(&emu).await;
    let seed = seed(&sdk).await;
    let unicast = write_config(&emu, "unicast.toml", &unicast_text(&seed));
    let multicast = write_config(&emu, "multicast.toml", &config_text(&seed));
    emu.reset_calls();

    // --- bad flood settings: exit 2 naming field and value, nothing changed
    let with_flood = |v: &str| {
        config_text(&seed)
            .lines()
            .map(|l| {
                if l.starts_with("multicast_group") {
                    format!("{l}\nflood = {v}\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect::<String>()
    };
    let cases = [
        (with_flood("\"broadcast\""), "flood = \"broadcast\""),
        (with_flood("\"Unicast\""), "flood = \"Unicast\""),
        (with_flood("1"), "flood = \"1\""),
        (
            format!("{}peer_discovery = \"dns\"\n", unicast_text(&seed)),
            "peer_discovery = \"dns\"",
        ),
        (
            format!("{}peer_discovery = \"ec2\"\n", config_text(&seed)),
            "peer_discovery = \"ec2\"",
        ),
        (
            unicast_text(&seed).replace("\"unicast\"", "\"multicast\""),
            "multicast_group",
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let cfg = write_config(&emu, &format!("bad-flood{i}.toml"), text);
        for cmd in ["bootstrap", "plan", "status"] {
            let r = overlayctl(&emu, &[cmd, "--config", &cfg]);
            assert_eq!(r.code, 2, "case {i} {cmd}: {}", r.all());
            assert!(
                r.stderr.contains("bad input") && r.stderr.contains(want),
                "case {i} {cmd}: error must name {want}: {}",
                r.stderr
            );
        }
    }
    assert_eq!(
        emu.mutating_calls(),
        vec![],
        "bad input must change nothing"
    );
    nothing_created(&sdk).await;

    // --- plan: no transit gateway step, and why
    let plan = overlayctl(&emu, &["plan", "--config", &unicast, "-o", "json"]);
    assert_eq!(plan.code, 0, "{}", plan.all());
    let v = json(&plan);
    assert_eq!(tgw_items(&v["plan"]), Vec::<String>::new());
    assert!(v["plan"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["action"] == "create"));
    assert!(
        notes(&v).contains("transit gateway: not used (flood = unicast)"),
        "{}",
        plan.stdout
    );
    // the vtep group will have the VXLAN rule only
    let vtep = v["plan"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["resource"] == "security-group/vtep/ingress")
        .unwrap();
    assert_eq!(vtep["detail"], "udp/4789 from 10.0.1.0/24", "{vtep}");
    let text = overlayctl(&emu, &["plan", "--config", &unicast]);
    assert_eq!(text.code, 0, "{}", text.all());
    assert!(
        text.stdout
            .contains("transit gateway: not used (flood = unicast)"),
        "{}",
        text.stdout
    );
    assert!(
        !text.stdout.contains("transit-gateway") && !text.stdout.contains("multicast-"),
        "{}",
        text.stdout
    );
    assert_eq!(emu.mutating_calls(), vec![], "plan mutated");

    // --- bootstrap: everything but the TGW chain
    let run = overlayctl(&emu, &["bootstrap", "--config", &unicast]);
    assert_eq!(run.code, 0, "{}", run.all());
    for want in [
        "not used (flood = unicast)",
        "peer discovery ec2",
        "peer_discovery = ec2",
        "flood = unicast",
        "overlayd [host]",
        "RDS endpoint",
    ] {
        assert!(run.stdout.contains(want), "lacks {want}: {}", run.stdout);
    }
    for unwanted in ["tgw-", "force_igmp_version", "multicast_group"] {
        assert!(!run.stdout.contains(unwanted), "{unwanted}: {}", run.stdout);
    }
    let calls = emu.calls(true);
    let tgw_calls: Vec<_> = emu
        .mutating_calls()
        .into_iter()
        .filter(|(_, a, _)| a.contains("TransitGateway"))
        .collect();
    assert_eq!(tgw_calls, vec![]);
    verify_converged_unicast(&sdk, &seed).await;

    // --- re-run: zero mutating calls, every step kept, no TGW in the outputs
    emu.reset_calls();
    let again = overlayctl(&emu, &["bootstrap", "--config", &unicast, "-o", "json"]);
    assert_eq!(again.code, 0, "{}", again.all());
    assert_eq!(
        emu.mutating_calls(),
        vec![],
        "converged re-run must not mutate"
    );
    let v = json(&again);
    let items = v["items"].as_array().unwrap();
    assert!(!items.is_empty());
    assert!(
        items.iter().all(|i| i["action"] == "keep"),
        "{}",
        again.stdout
    );
    assert_eq!(tgw_items(&v["items"]), Vec::<String>::new());
    assert_eq!(v["outputs"]["flood"], "unicast");
    assert_eq!(v["outputs"]["peer_discovery"], "ec2");
    assert!(v["outputs"]["transit_gateway_id"].is_null());
    assert!(v["outputs"]["multicast_domain_id"].is_null());
    assert_eq!(v["outputs"]["overlayd"]["host"]["flood"], "unicast");
    assert!(notes(&v).contains("not used (flood = unicast)"));

    // --- plan and status on the converged cluster: nothing to do, no missing TGW piece
    let plan = overlayctl(&emu, &["plan", "--config", &unicast]);
    assert_eq!(plan.code, 0, "{}", plan.all());
    assert!(
        !plan.stdout.contains("create ") && !plan.stdout.contains("change "),
        "{}",
        plan.stdout
    );
    let status = overlayctl(&emu, &["status", "--config", &unicast, "-o", "json"]);
    assert_eq!(status.code, 0, "{}", status.all());
    let v = json(&status);
    assert_eq!(v["errors"], serde_json::json!([]));
    assert_eq!(tgw_items(&v["resources"]), Vec::<String>::new());
    let res = v["resources"].as_array().unwrap();
    assert!(
        res.iter()
            .all(|i| i["action"] == "keep" && i["state"] != "absent"),
        "{}",
        status.stdout
    );
    assert!(notes(&v).contains("not used (flood = unicast)"));
    assert_eq!(emu.mutating_calls(), vec![]);
    let calls = [calls, emu.calls(true)].concat();

    // --- teardown: nothing left
    let down = overlayctl(&emu, &["teardown", "--config", &unicast, "--yes"]);
    assert_eq!(down.code, 0, "{}", down.all());
    nothing_tagged_left(&sdk).await;
    assert_eq!(tgw_ids(&sdk).await, vec![]);

    // --- switched multicast → unicast: the old chain is named and left; teardown removes it
    let run = overlayctl(&emu, &["bootstrap", "--config", &multicast, "-q"]);
    assert_eq!(run.code, 0, "{}", run.all());
    verify_converged(&sdk, &seed).await;
    let tgw = tgw_ids(&sdk).await[0].0.clone();
    emu.reset_calls();
    let plan = overlayctl(&emu, &["plan", "--config", &unicast, "-o", "json"]);
    assert_eq!(plan.code, 0, "{}", plan.all());
    let v = json(&plan);
    assert_eq!(tgw_items(&v["plan"]), Vec::<String>::new());
    let n = notes(&v);
    assert!(
        n.contains(&tgw) && n.contains("teardown deletes it"),
        "{}",
        plan.stdout
    );
    let vtep = v["plan"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["resource"] == "security-group/vtep/ingress")
        .unwrap();
    assert_eq!(
        (vtep["action"].as_str(), vtep["detail"].as_str()),
        (Some("change"), Some("-igmp from 0.0.0.0/32")),
        "{vtep}"
    );
    let run = overlayctl(&emu, &["bootstrap", "--config", &unicast, "-q"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let mutated: Vec<String> = emu.mutating_calls().into_iter().map(|c| c.1).collect();
    assert_eq!(mutated, vec!["RevokeSecurityGroupIngress"]);
    assert!(run.stdout.contains(&tgw), "{}", run.stdout);
    assert_eq!(tgw_ids(&sdk).await, vec![(tgw.clone(), "available".into())]);
    verify_all_but_tgw(&sdk, &seed, false).await;
    let calls = [calls, emu.calls(true)].concat();
    emu.reset_calls();
    let down = overlayctl(&emu, &["teardown", "--config", &unicast, "--yes"]);
    assert_eq!(down.code, 0, "{}", down.all());
    let deleted: BTreeSet<String> = emu.mutating_calls().into_iter().map(|c| c.1).collect();
    for a in [
        "DisassociateTransitGatewayMulticastDomain",
        "DeleteTransitGatewayMulticastDomain",
        "DeleteTransitGatewayVpcAttachment",
        "DeleteTransitGateway",
    ] {
        assert!(
            deleted.contains(a),
            "teardown did not call {a}: {deleted:?}"
        );
    }
    nothing_tagged_left(&sdk).await;
    assert_eq!(tgw_ids(&sdk).await, vec![]);
    emu.reset_calls();
    let down = overlayctl(&emu, &["teardown", "--config", &unicast, "--yes"]);
    assert_eq!(down.code, 0, "{}", down.all());
    assert_eq!(emu.mutating_calls(), vec![]);
    let calls = [calls, emu.calls(true)].concat();

    // --- IAM: bootstrap covers every call made here; the agent's follows the cluster file
    let pol = overlayctl(&emu, &["iam-policy", "--for", "bootstrap", "-c", &unicast]);
    let allowed = policy_actions(&pol);
    for (service, action, _) in calls {
        let a = format!("{service}:{action}");
        assert!(allowed.contains(&a), "bootstrap policy lacks {a}");
    }
    let u = policy_actions(&overlayctl(
        &emu,
        &["iam-policy", "--for", "agent", "--config", &unicast],
    ));
    assert!(u.contains("ec2:DescribeInstances") && u.contains("ec2:DescribeTags"));
    assert!(!u.iter().any(|a| a.contains("Multicast")), "{u:?}");
    let m = policy_actions(&overlayctl(
        &emu,
        &["iam-policy", "--for", "agent", "--config", &multicast],
    ));
    assert!(!m.contains("ec2:DescribeInstances") && m.contains("ec2:DescribeTags"));
    assert_eq!(
        m,
        policy_actions(&overlayctl(&emu, &["iam-policy", "--for", "agent"]))
    );
    let flags = policy_actions(&overlayctl(
        &emu,
        &["iam-policy", "--for", "agent", "--flood", "unicast"],
    ));
    assert_eq!(flags, u);
    let st = policy_actions(&overlayctl(
        &emu,
        &[
            "iam-policy",
            "--for",
            "agent",
            "--flood",
            "unicast",
            "--peer-discovery",
            "static",
        ],
    ));
    assert!(!st.contains("ec2:DescribeInstances") && st.contains("ec2:DescribeTags"));
    // the region comes from the cluster file
    let r = overlayctl(&emu, &["iam-policy", "--for", "agent", "-c", &unicast]);
    assert_eq!(
        json(&r)["Statement"][0]["Condition"]["StringEquals"]["aws:RequestedRegion"],
        REGION
    );
    for (args, want) in [
        (
            vec!["--for", "agent", "--peer-discovery", "ec2"],
            "--peer-discovery",
        ),
        (vec!["--for", "agent", "--flood", "broadcast"], "--flood"),
        (
            vec![
                "--for",
                "agent",
                "-c",
                unicast.as_str(),
                "--flood",
                "unicast",
            ],
            "--flood",
        ),
    ] {
        let r = overlayctl(&emu, &[&["iam-policy"][..], &args].concat());
        assert_eq!(r.code, 2, "{args:?}: {}", r.all());
        assert!(r.stderr.contains(want), "{args:?}: {}", r.stderr);
    }
}
