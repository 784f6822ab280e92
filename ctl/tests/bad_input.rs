//! Bad input exits with status 2, names the field, and makes no mutating call.

mod common;

use common::*;

fn replace(text: &str, key: &str, value: &str) -> String {
    let mut out = String::new();
    let mut found = false;
    for line in text.lines() {
        if line.starts_with(&format!("{key} =")) {
            out.push_str(&format!("{key} = {value}\n"));
            found = true;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !found {
        out.push_str(&format!("{key} = {value}\n"));
    }
    out
}

#[tokio::test]
async fn bad_input_exits_2_naming_the_field_before_any_mutation() {
    let Some(emu) = Emulator::start() else { return };
    let sdk = sdk(&emu).await;
    let seed = seed(&sdk).await;
    let good = config_text(&seed);

    // Extra facts: a subnet of another VPC, a subnet in the same AZ, a router elsewhere.
    let other_vpc = sdk
        .ec2
        .create_vpc()
        .cidr_block("10.9.0.0/16")
        .send()
        .await
        .unwrap();
    let other_vpc = other_vpc.vpc().unwrap().vpc_id().unwrap().to_string();
    let foreign = sdk
        .ec2
        .create_subnet()
        .vpc_id(&other_vpc)
        .cidr_block("10.9.1.0/24")
        .availability_zone("eu-west-1b")
        .send()
        .await
        .unwrap()
        .subnet()
        .unwrap()
        .subnet_id()
        .unwrap()
        .to_string();
    let same_az = sdk
        .ec2
        .create_subnet()
        .vpc_id(&seed.vpc)
        .cidr_block("10.0.3.0/24")
        .availability_zone("eu-west-1a")
        .send()
        .await
        .unwrap()
        .subnet()
        .unwrap()
        .subnet_id()
        .unwrap()
        .to_string();
    let elsewhere = run_instance(&sdk, &seed.subnet2).await;
    let other_rt = sdk
        .ec2
        .create_route_table()
        .vpc_id(&other_vpc)
        .send()
        .await
        .unwrap();
    let other_rt = other_rt
        .route_table()
        .unwrap()
        .route_table_id()
        .unwrap()
        .to_string();

    let q = |s: &str| format!("\"{s}\"");
    let cases: Vec<(String, &str)> = vec![
        (replace(&good, "vpc_id", "\"vpc-12\""), "vpc_id"),
        (replace(&good, "subnet_id", "\"subnet-XYZ\""), "subnet_id"),
        (
            replace(&good, "router_instance_id", "\"i-zz\""),
            "router_instance_id",
        ),
        (
            replace(&good, "route_table_ids", "[\"rtb-1\"]"),
            "route_table_ids",
        ),
        (
            replace(&good, "overlay_cidr", "\"10.0.0.0/8\""),
            "overlay_cidr",
        ),
        (
            replace(&good, "overlay_cidr", "\"10.0.128.0/20\""),
            "overlay_cidr",
        ),
        (
            replace(&good, "multicast_group", "\"10.1.1.1\""),
            "multicast_group",
        ),
        (
            replace(&good, "access_cidr", "\"0.0.0.0/33\""),
            "access_cidr",
        ),
        (replace(&good, "subnet_id", &q(&foreign)), "subnet_id"),
        (
            replace(&good, "second_subnet_id", &q(&foreign)),
            "second_subnet_id",
        ),
        (
            replace(&good, "second_subnet_id", &q(&same_az)),
            "second_subnet_id",
        ),
        (
            replace(&good, "subnet_id", "\"subnet-0123456789abcdef0\""),
            "subnet_id",
        ),
        (
            replace(&good, "vpc_id", "\"vpc-0123456789abcdef0\""),
            "vpc_id",
        ),
        (
            replace(&good, "router_instance_id", &q(&elsewhere)),
            "router_instance_id",
        ),
        (
            replace(&good, "router_instance_id", "\"i-0123456789abcdef0\""),
            "router_instance_id",
        ),
        (
            replace(&good, "route_table_ids", &format!("[{}]", q(&other_rt))),
            "route_table_ids",
        ),
        (
            replace(&good, "db_max_storage_gib", "5"),
            "db_max_storage_gib",
        ),
        (format!("{good}\nvpcid = \"x\"\n"), "vpcid"),
        (good.replace("name = \"lab1\"\n", ""), "name"),
    ];
    emu.reset_calls();
    for (i, (text, field)) in cases.iter().enumerate() {
        let cfg = write_config(&emu, &format!("bad{i}.toml"), text);
        for cmd in ["bootstrap", "plan"] {
            let r = overlayctl(&emu, &[cmd, "--config", &cfg]);
            assert_eq!(r.code, 2, "case {i} ({field}) {cmd}: {}", r.all());
            assert!(
                r.stderr.contains(field),
                "case {i}: error must name {field}: {}",
                r.stderr
            );
        }
    }
    // wrong --region, unreadable file, bad endpoint, bad flag
    let cfg = write_config(&emu, "good.toml", &good);
    let r = overlayctl(
        &emu,
        &["--region", "us-east-1", "bootstrap", "--config", &cfg],
    );
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("--region"));
    let r = overlayctl(
        &emu,
        &["bootstrap", "--config", "/nonexistent/cluster.toml"],
    );
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("--config"));
    let r = overlayctl(
        &emu,
        &["bootstrap", "--config", &cfg, "--poll-interval", "-1"],
    );
    assert_eq!(r.code, 2, "{}", r.all());
    let r = overlayctl(&emu, &["iam-policy", "--for", "root"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert_eq!(
        emu.mutating_calls(),
        vec![],
        "bad input must change nothing"
    );

    // global options after the subcommand work too, and the good file plans fine
    let r = overlayctl(
        &emu,
        &["plan", "--config", &cfg, "--region", REGION, "-o", "json"],
    );
    assert_eq!(r.code, 0, "{}", r.all());
    serde_json::from_str::<serde_json::Value>(&r.stdout).unwrap();
}

#[test]
fn help_teaches() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_overlayctl"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for word in [
        "bootstrap",
        "plan",
        "teardown",
        "status",
        "iam-policy",
        "--endpoint-url",
        "overlay:cluster",
        "flood = \"unicast\"",
        "flood = \"evpn\"",
    ] {
        assert!(text.contains(word), "--help lacks {word}");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_overlayctl"))
        .args(["bootstrap", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for word in [
        "second_subnet_id",
        "route_table_ids",
        "efs_throughput_mibps",
        "zones",
        "flood",
        "\"unicast\"",
        "\"evpn\"",
        "peer_discovery",
        "\"static\"",
    ] {
        assert!(text.contains(word), "bootstrap --help lacks {word}");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_overlayctl"))
        .args(["iam-policy", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for word in [
        "--config",
        "--flood",
        "--peer-discovery",
        "ec2:DescribeInstances",
        "ec2:DescribeTags",
        "--cluster",
        "host",
        "management",
        "router",
        "secretsmanager:GetSecretValue",
        "ec2:ReplaceRoute",
        "overlay:cluster",
        "cloudformation:SignalResource",
        "OverlayStackSignal",
    ] {
        assert!(text.contains(word), "iam-policy --help lacks {word}");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_overlayctl"))
        .arg("frobnicate")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
