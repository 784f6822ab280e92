//! `overlayctl iam-policy --for host|management|router` (and `agent`, an alias of host) through
//! the real binary: the document is `iam::role_policy` of the cluster file's (or the flags')
//! flooding, cluster name and region; bad `--cluster` values are bad input. No AWS call is made.

use std::process::{Command, Stdio};

use overlay_ctl::config::{Flood, PeerDiscovery};
use overlay_ctl::iam::{self, PolicyRole};
use serde_json::Value;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn overlayctl(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_overlayctl"))
        .args(args)
        .env_remove("AWS_REGION")
        .env_remove("AWS_DEFAULT_REGION")
        .env_remove("AWS_PROFILE")
        .stdin(Stdio::null())
        .output()
        .expect("run overlayctl");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}

fn policy(args: &[&str]) -> Value {
    let r = overlayctl(&[&["iam-policy"][..], args].concat());
    assert_eq!(r.code, 0, "{args:?}: {}{}", r.stdout, r.stderr);
    serde_json::from_str(&r.stdout).unwrap()
}

const CLUSTER_FILE: &str = r#"
name = "prod-a"
region = "us-east-2"
vpc_id = "vpc-0123456789abcdef0"
subnet_id = "subnet-0123456789abcdef0"
second_subnet_id = "subnet-0123456789abcdef1"
overlay_cidr = "100.64.0.0/16"
flood = "unicast"
router_instance_id = "i-0123456789abcdef0"
access_cidr = "203.0.113.0/24"
"#;

#[test]
fn instance_roles_from_the_cluster_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cluster.toml");
    std::fs::write(&file, CLUSTER_FILE).unwrap();
    let file = file.to_str().unwrap();
    let unicast = Flood::Unicast(PeerDiscovery::Ec2);
    for role in ["bootstrap", "host", "management", "router"] {
        let want = iam::role_policy(
            PolicyRole::parse(role).unwrap(),
            Some("us-east-2"),
            unicast,
            Some("prod-a"),
        );
        assert_eq!(policy(&["--for", role, "-c", file]), want, "{role}");
    }
    // agent stays an alias of host
    assert_eq!(
        policy(&["--for", "agent", "-c", file]),
        policy(&["--for", "host", "-c", file])
    );
    let m = policy(&["--for", "management", "-c", file]);
    assert_eq!(
        m["Statement"][1]["Resource"],
        "arn:aws:secretsmanager:us-east-2:*:secret:overlay/prod-a/*"
    );
    let r = policy(&["--for", "router", "-c", file]);
    assert_eq!(
        r["Statement"][2]["Condition"]["StringEquals"]["aws:ResourceTag/overlay:cluster"],
        "prod-a"
    );
}

#[test]
fn instance_roles_from_flags() {
    let m = policy(&[
        "--for",
        "management",
        "--cluster",
        "lab1",
        "--region",
        "eu-west-1",
    ]);
    assert_eq!(
        m,
        iam::role_policy(
            PolicyRole::Management,
            Some("eu-west-1"),
            Flood::Multicast,
            Some("lab1")
        )
    );
    // without --cluster: every cluster's secrets, any route table tagged for a cluster
    let m = policy(&["--for", "management"]);
    assert_eq!(
        m["Statement"][1]["Resource"],
        "arn:aws:secretsmanager:*:*:secret:overlay/*/*"
    );
    let r = policy(&["--for", "router", "--flood", "unicast"]);
    assert_eq!(
        r,
        iam::role_policy(
            PolicyRole::Router,
            None,
            Flood::Unicast(PeerDiscovery::Ec2),
            None
        )
    );
    assert_eq!(
        r["Statement"][2]["Condition"]["StringLike"]["aws:ResourceTag/overlay:cluster"],
        "*"
    );
    // CloudFormation's cfn-signal permission is the template's own statement, never ours
    for role in ["host", "management", "router"] {
        let p = policy(&["--for", role, "--cluster", "lab1"]);
        assert!(!p.to_string().contains("cloudformation:"), "{role}: {p}");
        assert!(
            !p.to_string().contains(iam::SID_STACK_SIGNAL),
            "{role}: {p}"
        );
    }
}

#[test]
fn bad_cluster_options_are_bad_input() {
    for (args, want) in [
        (
            vec!["--for", "router", "--cluster", "Bad_Name"],
            "--cluster",
        ),
        (vec!["--for", "router", "--cluster", ""], "--cluster"),
        (
            vec!["--for", "router", "--cluster", "a", "-c", "/nonexistent"],
            "--cluster",
        ),
        (vec!["--for", "hypervisor"], "--for"),
    ] {
        let r = overlayctl(&[&["iam-policy"][..], &args].concat());
        assert_eq!(r.code, 2, "{args:?}: {}{}", r.stdout, r.stderr);
        assert!(r.stderr.contains(want), "{args:?}: {}", r.stderr);
        assert!(r.stdout.is_empty(), "{args:?}: {}", r.stdout);
    }
}
