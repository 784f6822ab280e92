//! bootstrap → verify every resource by describe calls → idempotent re-run (zero mutating calls
//! counted at the shim) → plan/status → teardown → nothing tagged left; the generated passwords
//! appear in no output or file; the IAM policy covers every call made.

mod common;

use std::collections::BTreeSet;

use common::*;

async fn secret_passwords(sdk: &Sdk) -> Vec<String> {
    let mut out = Vec::new();
    for which in ["admin", "service"] {
        let v = sdk
            .sm
            .get_secret_value()
            .secret_id(format!("overlay/lab1/db-{which}"))
            .send()
            .await
            .unwrap();
        let j: serde_json::Value = serde_json::from_str(v.secret_string().unwrap()).unwrap();
        let p = j["password"].as_str().unwrap().to_string();
        assert!(p.len() >= 32 && p.chars().all(|c| c.is_ascii_alphanumeric()));
        out.push(p);
    }
    assert_ne!(out[0], out[1]);
    out
}

fn scan_dir_for(dir: &std::path::Path, needles: &[String]) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            scan_dir_for(&p, needles);
        } else if let Ok(bytes) = std::fs::read(&p) {
            let text = String::from_utf8_lossy(&bytes);
            for n in needles {
                // The emulator's own log is not overlayctl's output, but check it too: it
                // must not contain the password either (requests are not logged with bodies).
                assert!(
                    !text.contains(n.as_str()),
                    "password found in {}",
                    p.display()
                );
            }
        }
    }
}

#[tokio::test]
async fn bootstrap_verify_rerun_teardown() {
    let Some(emu) = Emulator::start() else { return };
    let sdk = sdk(&emu).await;
    let seed = seed(&sdk).await;
    let cfg = write_config(&emu, "cluster.toml", &config_text(&seed));
    let mut outputs = Vec::new();
    emu.reset_calls();

    // plan on an empty account: everything "create", nothing mutated
    let plan = overlayctl(&emu, &["plan", "--config", &cfg, "-o", "json"]);
    assert_eq!(plan.code, 0, "{}", plan.all());
    let v: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    let actions: BTreeSet<&str> = v["plan"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains("create"));
    assert!(!actions.contains("keep") || actions.len() > 1);
    assert!(
        emu.mutating_calls().is_empty(),
        "plan mutated: {:?}",
        emu.mutating_calls()
    );
    outputs.push(plan.all());

    // bootstrap
    let run = overlayctl(&emu, &["bootstrap", "--config", &cfg]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.stdout.contains("RDS endpoint"), "{}", run.stdout);
    assert!(run.stdout.contains("efs.eu-west-1.amazonaws.com"));
    assert!(run.stdout.contains("tgw-mcast-domain-"));
    assert!(run.stdout.contains("overlayd [host]"));
    outputs.push(run.all());
    let first_calls = emu.calls(true);
    verify_converged(&sdk, &seed).await;

    // re-run: zero mutating calls
    emu.reset_calls();
    let again = overlayctl(&emu, &["bootstrap", "--config", &cfg, "-o", "json"]);
    assert_eq!(again.code, 0, "{}", again.all());
    assert_eq!(
        emu.mutating_calls(),
        vec![],
        "converged re-run must not mutate"
    );
    let v: serde_json::Value = serde_json::from_str(&again.stdout).unwrap();
    assert!(
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["action"] == "keep"),
        "{}",
        again.stdout
    );
    assert!(v["outputs"]["db_endpoint"]
        .as_str()
        .unwrap()
        .contains("overlay-lab1-db"));
    assert!(v["outputs"]["secret_arns"]["admin"]
        .as_str()
        .unwrap()
        .starts_with("arn:aws:secretsmanager:"));
    outputs.push(again.all());

    // plan and status on a converged cluster
    let plan = overlayctl(&emu, &["plan", "--config", &cfg]);
    assert_eq!(plan.code, 0);
    assert!(
        !plan.stdout.contains("create ") && !plan.stdout.contains("change "),
        "{}",
        plan.stdout
    );
    let status = overlayctl(&emu, &["status", "--config", &cfg, "-o", "json"]);
    assert_eq!(status.code, 0, "{}", status.all());
    let v: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    let res = v["resources"].as_array().unwrap();
    let state_of = |r: &str| {
        res.iter()
            .find(|i| i["resource"] == r)
            .map(|i| i["state"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("status lacks {r}"))
    };
    assert_eq!(state_of("transit-gateway"), "available");
    assert_eq!(state_of("multicast-association"), "associated");
    assert_eq!(state_of("db-instance"), "available");
    assert_eq!(state_of("efs"), "available");
    assert!(emu.mutating_calls().is_empty());
    outputs.push(plan.all());
    outputs.push(status.all());

    // drift is repaired: a revoked rule and a replaced route come back
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
        .find(|g| g.group_name().unwrap().ends_with("-vtep"))
        .unwrap();
    sdk.ec2
        .revoke_security_group_ingress()
        .group_id(vtep.group_id().unwrap())
        .ip_permissions(
            aws_sdk_ec2::types::IpPermission::builder()
                .ip_protocol("udp")
                .from_port(4789)
                .to_port(4789)
                .ip_ranges(
                    aws_sdk_ec2::types::IpRange::builder()
                        .cidr_ip("10.0.1.0/24")
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    let plan = overlayctl(&emu, &["plan", "--config", &cfg]);
    assert!(
        plan.stdout.contains("change") && plan.stdout.contains("udp/4789"),
        "{}",
        plan.stdout
    );
    emu.reset_calls();
    let fix = overlayctl(&emu, &["bootstrap", "--config", &cfg]);
    assert_eq!(fix.code, 0, "{}", fix.all());
    let calls: Vec<String> = emu.mutating_calls().into_iter().map(|c| c.1).collect();
    assert_eq!(calls, vec!["AuthorizeSecurityGroupIngress"]);
    verify_converged(&sdk, &seed).await;
    outputs.push(fix.all());

    // passwords: never in any output nor in any file in the working directory
    let passwords = secret_passwords(&sdk).await;

    // teardown, twice
    let down = overlayctl(&emu, &["teardown", "--config", &cfg, "--yes"]);
    assert_eq!(down.code, 0, "{}", down.all());
    outputs.push(down.all());
    nothing_tagged_left(&sdk).await;
    // the seed is untouched
    let inst = sdk
        .ec2
        .describe_instances()
        .instance_ids(&seed.router)
        .send()
        .await
        .unwrap();
    assert_eq!(inst.reservations().len(), 1);
    let all_calls = [first_calls, emu.calls(true)].concat();
    emu.reset_calls();
    let down2 = overlayctl(&emu, &["teardown", "--config", &cfg, "--yes"]);
    assert_eq!(down2.code, 0, "{}", down2.all());
    assert!(
        emu.mutating_calls().is_empty(),
        "{:?}",
        emu.mutating_calls()
    );
    outputs.push(down2.all());

    for out in &outputs {
        for p in &passwords {
            assert!(!out.contains(p.as_str()), "password leaked into output");
        }
    }
    scan_dir_for(emu.dir.path(), &passwords);

    // the bootstrap IAM policy allows every call overlayctl made
    let pol = overlayctl(&emu, &["iam-policy", "--for", "bootstrap"]);
    assert_eq!(pol.code, 0);
    let v: serde_json::Value = serde_json::from_str(&pol.stdout).unwrap();
    let allowed: BTreeSet<String> = v["Statement"]
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
    for (service, action, _) in all_calls {
        let a = format!("{service}:{action}");
        assert!(allowed.contains(&a), "IAM policy lacks {a}");
    }
}

#[tokio::test]
async fn teardown_without_yes_and_without_terminal_refuses() {
    let Some(emu) = Emulator::start() else { return };
    let sdk = sdk(&emu).await;
    let seed = seed(&sdk).await;
    let cfg = write_config(&emu, "cluster.toml", &config_text(&seed));
    emu.reset_calls();
    let r = overlayctl(&emu, &["teardown", "--config", &cfg]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("--yes"));
    assert!(emu.mutating_calls().is_empty());
}

#[tokio::test]
async fn existing_route_is_replaced_and_reported_and_route_table_ids_select() {
    let Some(emu) = Emulator::start() else { return };
    let sdk = sdk(&emu).await;
    let seed = seed(&sdk).await;
    let ec2 = &sdk.ec2;
    let vpc_filter = aws_sdk_ec2::types::Filter::builder()
        .name("vpc-id")
        .values(&seed.vpc)
        .build();
    let main_rt = ec2
        .describe_route_tables()
        .filters(vpc_filter.clone())
        .send()
        .await
        .unwrap();
    let main_rt = main_rt.route_tables()[0]
        .route_table_id()
        .unwrap()
        .to_string();
    let other_rt = ec2
        .create_route_table()
        .vpc_id(&seed.vpc)
        .send()
        .await
        .unwrap();
    let other_rt = other_rt
        .route_table()
        .unwrap()
        .route_table_id()
        .unwrap()
        .to_string();
    let old_eni = ec2
        .create_network_interface()
        .subnet_id(&seed.subnet2)
        .send()
        .await
        .unwrap();
    let old_eni = old_eni
        .network_interface()
        .unwrap()
        .network_interface_id()
        .unwrap()
        .to_string();
    ec2.create_route()
        .route_table_id(&other_rt)
        .destination_cidr_block("100.64.0.0/16")
        .network_interface_id(&old_eni)
        .send()
        .await
        .unwrap();
    let text = format!("{}route_table_ids = [\"{other_rt}\"]\n", config_text(&seed));
    let cfg = write_config(&emu, "cluster.toml", &text);

    let plan = overlayctl(&emu, &["plan", "--config", &cfg]);
    assert_eq!(plan.code, 0, "{}", plan.all());
    let line = plan
        .stdout
        .lines()
        .find(|l| l.contains(&format!("route/{other_rt}")))
        .expect("route line");
    assert!(
        line.starts_with("change") && line.contains(&format!("replaces {old_eni}")),
        "{line}"
    );
    assert!(
        !plan.stdout.contains(&format!("route/{main_rt}")),
        "unselected table planned"
    );

    let run = overlayctl(&emu, &["bootstrap", "--config", &cfg]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stderr.contains(&format!("replaces {old_eni}")),
        "{}",
        run.stderr
    );
    let rts = ec2
        .describe_route_tables()
        .filters(vpc_filter)
        .send()
        .await
        .unwrap();
    let inst = ec2
        .describe_instances()
        .instance_ids(&seed.router)
        .send()
        .await
        .unwrap();
    let router_eni = inst.reservations()[0].instances()[0].network_interfaces()[0]
        .network_interface_id()
        .unwrap()
        .to_string();
    for rt in rts.route_tables() {
        let r = rt
            .routes()
            .iter()
            .find(|r| r.destination_cidr_block() == Some("100.64.0.0/16"));
        if rt.route_table_id() == Some(other_rt.as_str()) {
            assert_eq!(r.unwrap().network_interface_id(), Some(router_eni.as_str()));
        } else {
            assert!(r.is_none(), "route added to an unselected table");
        }
    }
    emu.reset_calls();
    let again = overlayctl(&emu, &["bootstrap", "--config", &cfg, "-q"]);
    assert_eq!(again.code, 0);
    assert_eq!(emu.mutating_calls(), vec![]);
}
