//! flood = "evpn" over two subnets in two AZs with a router pair: bad evpn settings exit 2
//! before any call that changes something; plan shows no transit gateway step (and says why) and
//! the vtep group's TCP 179 rule from each subnet; bootstrap creates everything but the transit
//! gateway chain, with BGP allowed like VXLAN (no IGMP rule); the outputs give overlayd the route
//! reflectors (the routers' underlay addresses); a re-run makes zero mutating calls; doctor is
//! all ok; teardown leaves nothing. Then the same cluster switched from multicast: one
//! authorize (BGP) and one revoke (IGMP), the old chain named and left, teardown removes it. The
//! agent's IAM policy is unicast's. One emulator for the whole file.

mod common;

use std::collections::BTreeSet;

use common::*;

/// The pair's cluster file with flood = "evpn" (and `extra` lines), no multicast_group.
fn evpn_text(s: &SeedPair, extra: &str) -> String {
    let text: String = config_text_pair(s)
        .lines()
        .filter(|l| !l.starts_with("multicast_group"))
        .map(|l| format!("{l}\n"))
        .collect();
    format!("{text}flood = \"evpn\"\n{extra}")
}

fn json(r: &Run) -> serde_json::Value {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.all()))
}

fn tgw_items(items: &serde_json::Value) -> Vec<String> {
    items
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| {
            let r = i["resource"].as_str().unwrap();
            ["transit-gateway", "tgw-", "multicast-"]
                .iter()
                .any(|p| r.starts_with(p))
        })
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

fn vtep_item(items: &serde_json::Value) -> serde_json::Value {
    items
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["resource"] == "security-group/vtep/ingress")
        .cloned()
        .unwrap()
}

async fn tgw_count(sdk: &Sdk) -> usize {
    let t = sdk.ec2.describe_transit_gateways().send().await.unwrap();
    t.transit_gateways()
        .iter()
        .filter(|t| t.state().map(|s| s.as_str()) != Some("deleted"))
        .count()
}

/// The vtep group's rules as (protocol, from port, source CIDR), and whether any names a group.
async fn vtep_rules(sdk: &Sdk) -> (BTreeSet<(String, i32, String)>, bool) {
    let sgs = sdk
        .ec2
        .describe_security_groups()
        .filters(tag_filter())
        .send()
        .await
        .unwrap();
    let vtep = sgs
        .security_groups()
        .iter()
        .find(|g| g.group_name() == Some("overlay-lab1-vtep"))
        .expect("vtep group");
    let mut out = BTreeSet::new();
    let mut refs = false;
    for p in vtep.ip_permissions() {
        refs |= !p.user_id_group_pairs().is_empty();
        for r in p.ip_ranges() {
            out.insert((
                p.ip_protocol().unwrap().to_string(),
                p.from_port().unwrap_or(-1),
                r.cidr_ip().unwrap().to_string(),
            ));
        }
    }
    (out, refs)
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

async fn private_ip(sdk: &Sdk, id: &str) -> String {
    let out = sdk
        .ec2
        .describe_instances()
        .instance_ids(id)
        .send()
        .await
        .unwrap();
    out.reservations()[0].instances()[0]
        .private_ip_address()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn evpn_flooding_lifecycle_over_two_subnets_and_switch_from_multicast() {
    let Some(emu) = Emulator::start() else { return };
    let sdk = sdk(&emu).await;
    let seed = seed_pair(&sdk).await;
    let evpn = write_config(&emu, "evpn.toml", &evpn_text(&seed, ""));
    let multicast = write_config(&emu, "multicast.toml", &config_text_pair(&seed));
    emu.reset_calls();

    // --- bad evpn settings: exit 2 naming field and value, nothing changed
    let cases = [
        (
            evpn_text(&seed, "").replace("\"evpn\"", "\"EVPN\""),
            "flood = \"EVPN\"",
        ),
        (
            evpn_text(&seed, "peer_discovery = \"dns\"\n"),
            "peer_discovery = \"dns\"",
        ),
        (
            evpn_text(&seed, "multicast_group = \"10.0.0.1\"\n"),
            "multicast_group = \"10.0.0.1\"",
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let cfg = write_config(&emu, &format!("bad-evpn{i}.toml"), text);
        for cmd in ["bootstrap", "plan", "status", "doctor"] {
            let r = overlayctl(&emu, &[cmd, "--config", &cfg]);
            assert_eq!(r.code, 2, "case {i} {cmd}: {}", r.all());
            assert!(
                r.stderr.contains("bad input") && r.stderr.contains(want),
                "case {i} {cmd}: error must name {want}: {}",
                r.stderr
            );
        }
    }
    assert_eq!(emu.mutating_calls(), vec![], "bad input changed something");

    // --- plan: no transit gateway step, the BGP rule from each subnet
    let plan = overlayctl(&emu, &["plan", "--config", &evpn, "-o", "json"]);
    assert_eq!(plan.code, 0, "{}", plan.all());
    let v = json(&plan);
    assert_eq!(tgw_items(&v["plan"]), Vec::<String>::new());
    assert!(
        notes(&v).contains("transit gateway: not used (flood = evpn)"),
        "{}",
        plan.stdout
    );
    let vtep = vtep_item(&v["plan"]);
    assert_eq!(
        vtep["detail"],
        "udp/4789 from 10.0.1.0/24, tcp/179 from 10.0.1.0/24, udp/4789 from 10.0.2.0/24, \
         tcp/179 from 10.0.2.0/24",
        "{vtep}"
    );
    let text = overlayctl(&emu, &["plan", "--config", &evpn]);
    assert!(
        text.stdout.contains("tcp/179 from 10.0.2.0/24")
            && !text.stdout.contains("transit-gateway"),
        "{}",
        text.stdout
    );
    assert_eq!(emu.mutating_calls(), vec![], "plan mutated");

    // --- bootstrap: everything but the TGW chain; BGP like VXLAN, no IGMP
    let run = overlayctl(&emu, &["bootstrap", "--config", &evpn, "-o", "json"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let tgw_calls: Vec<_> = emu
        .mutating_calls()
        .into_iter()
        .filter(|(_, a, _)| a.contains("TransitGateway"))
        .collect();
    assert_eq!(tgw_calls, vec![]);
    assert_eq!(tgw_count(&sdk).await, 0);
    let (rules, refs) = vtep_rules(&sdk).await;
    let want: BTreeSet<(String, i32, String)> = [
        ("udp", 4789, "10.0.1.0/24"),
        ("udp", 4789, "10.0.2.0/24"),
        ("tcp", 179, "10.0.1.0/24"),
        ("tcp", 179, "10.0.2.0/24"),
    ]
    .iter()
    .map(|(p, port, c)| (p.to_string(), *port, c.to_string()))
    .collect();
    assert_eq!(rules, want);
    assert!(!refs, "the vtep rules name CIDRs, not groups");
    let v = json(&run);
    let o = &v["outputs"];
    assert_eq!(o["flood"], "evpn");
    assert_eq!(o["peer_discovery"], "ec2");
    assert!(o["transit_gateway_id"].is_null() && o["multicast_domain_id"].is_null());
    let ips = [
        private_ip(&sdk, &seed.routers[0]).await,
        private_ip(&sdk, &seed.routers[1]).await,
    ];
    assert_eq!(o["router_ips"], serde_json::json!(ips));
    for role in ["router", "host", "management"] {
        let s = &o["overlayd"][role];
        assert_eq!(s["flood"], "evpn", "{role}");
        assert_eq!(s["evpn_reflectors"], ips.join(","), "{role}");
        assert!(s.get("multicast_group").is_none() && s.get("force_igmp_version").is_none());
        let listen = (role == "router").then_some("10.0.1.0/24,10.0.2.0/24");
        assert_eq!(s["evpn_listen"].as_str(), listen, "{role}");
    }
    let calls = emu.calls(true);

    // --- re-run: zero mutating calls, every step kept; the text outputs
    emu.reset_calls();
    let again = overlayctl(&emu, &["bootstrap", "--config", &evpn]);
    assert_eq!(again.code, 0, "{}", again.all());
    assert_eq!(emu.mutating_calls(), vec![], "converged re-run mutated");
    for want in [
        "flood                evpn",
        "transit gateway      not used (flood = evpn)",
        "peer discovery ec2",
        "evpn_reflectors = ",
        "evpn_listen = 10.0.1.0/24,10.0.2.0/24",
    ] {
        assert!(
            again.stdout.contains(want),
            "lacks {want}: {}",
            again.stdout
        );
    }
    let status = overlayctl(&emu, &["status", "--config", &evpn, "-o", "json"]);
    assert_eq!(status.code, 0, "{}", status.all());
    let v = json(&status);
    assert_eq!(tgw_items(&v["resources"]), Vec::<String>::new());
    assert!(v["resources"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["action"] == "keep" && i["state"] != "absent"));
    assert_eq!(vtep_item(&v["resources"])["detail"], "4 rules");

    // --- doctor: every check ok, BGP judged for both subnets
    let d = overlayctl(&emu, &["doctor", "--config", &evpn, "-o", "json"]);
    assert_eq!(d.code, 0, "{}", d.all());
    let dv = json(&d);
    for c in dv["checks"].as_array().unwrap() {
        assert_eq!(c["verdict"], "ok", "{c}");
    }
    let bgp = dv["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "sg.vtep.bgp")
        .unwrap();
    assert!(
        bgp["summary"]
            .as_str()
            .unwrap()
            .contains("from every overlay subnet (10.0.1.0/24, 10.0.2.0/24)"),
        "{bgp}"
    );
    assert_eq!(emu.mutating_calls(), vec![], "status/doctor mutated");
    let calls = [calls, emu.calls(true)].concat();

    // --- teardown: nothing left
    let down = overlayctl(&emu, &["teardown", "--config", &evpn, "--yes"]);
    assert_eq!(down.code, 0, "{}", down.all());
    nothing_tagged_left(&sdk).await;
    let calls = [calls, emu.calls(true)].concat();

    // --- switched multicast → evpn: +BGP, -IGMP; the old chain named and left, then removed
    let run = overlayctl(&emu, &["bootstrap", "--config", &multicast, "-q"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(tgw_count(&sdk).await, 1);
    emu.reset_calls();
    let plan = overlayctl(&emu, &["plan", "--config", &evpn, "-o", "json"]);
    assert_eq!(plan.code, 0, "{}", plan.all());
    let v = json(&plan);
    assert_eq!(tgw_items(&v["plan"]), Vec::<String>::new());
    assert!(notes(&v).contains("teardown deletes it"), "{}", plan.stdout);
    let vtep = vtep_item(&v["plan"]);
    assert_eq!(
        (vtep["action"].as_str(), vtep["detail"].as_str()),
        (
            Some("change"),
            Some("+tcp/179 from 10.0.1.0/24, +tcp/179 from 10.0.2.0/24, -igmp from 0.0.0.0/32")
        ),
        "{vtep}"
    );
    let run = overlayctl(&emu, &["bootstrap", "--config", &evpn, "-q"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let mutated: Vec<String> = emu.mutating_calls().into_iter().map(|c| c.1).collect();
    assert_eq!(
        mutated,
        vec![
            "AuthorizeSecurityGroupIngress",
            "RevokeSecurityGroupIngress"
        ]
    );
    assert_eq!(vtep_rules(&sdk).await.0, want);
    emu.reset_calls();
    let again = overlayctl(&emu, &["bootstrap", "--config", &evpn, "-q"]);
    assert_eq!(again.code, 0, "{}", again.all());
    assert_eq!(emu.mutating_calls(), vec![]);
    let calls = [calls, emu.calls(true)].concat();
    emu.reset_calls();
    let down = overlayctl(&emu, &["teardown", "--config", &evpn, "--yes"]);
    assert_eq!(down.code, 0, "{}", down.all());
    nothing_tagged_left(&sdk).await;
    assert_eq!(tgw_count(&sdk).await, 0);
    let calls = [calls, emu.calls(true)].concat();

    // --- IAM: bootstrap covers every call; the agent's is unicast's
    let allowed = policy_actions(&overlayctl(
        &emu,
        &["iam-policy", "--for", "bootstrap", "-c", &evpn],
    ));
    for (service, action, _) in calls {
        let a = format!("{service}:{action}");
        assert!(allowed.contains(&a), "bootstrap policy lacks {a}");
    }
    for role in ["host", "management", "router"] {
        for peer in ["ec2", "static"] {
            let e = overlayctl(
                &emu,
                &[
                    "iam-policy",
                    "--for",
                    role,
                    "--flood",
                    "evpn",
                    "--peer-discovery",
                    peer,
                ],
            );
            let u = overlayctl(
                &emu,
                &[
                    "iam-policy",
                    "--for",
                    role,
                    "--flood",
                    "unicast",
                    "--peer-discovery",
                    peer,
                ],
            );
            assert_eq!(json(&e), json(&u), "{role} {peer}");
        }
    }
    let from_file = policy_actions(&overlayctl(
        &emu,
        &["iam-policy", "--for", "host", "-c", &evpn],
    ));
    assert!(from_file.contains("ec2:DescribeInstances"), "{from_file:?}");
    assert!(!from_file.iter().any(|a| a.contains("Multicast")));
    let r = overlayctl(&emu, &["iam-policy", "--for", "host", "--flood", "EVPN"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("--flood"), "{}", r.stderr);
}
