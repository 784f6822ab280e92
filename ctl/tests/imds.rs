//! The lab's IMDSv2 emulator with real clients: `overlay-lab up --aws-endpoint` against moto
//! (behind our shim), then `curl` from the nodes' namespaces and the AWS SDK's own IMDS
//! credential and region providers from a thread inside a node's namespace. The credentials
//! IMDS hands out are then used against moto, which accepts them (the shim records the call
//! under their access key).
//!
//! Needs root, network namespaces, nftables, curl and the workspace's overlay-lab and overlayd
//! binaries (`cargo build --workspace --bins`).

mod common;

use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

/// curl inside namespace `ns`: (HTTP status, body).
fn curl(ns: &str, args: &[&str]) -> (u16, String) {
    let o = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "curl",
            "-sS",
            "-m",
            "3",
            "-w",
            "\n%{http_code}",
        ])
        .args(args)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", &out));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

const BASE: &str = "http://169.254.169.254";
const TTL: &str = "X-aws-ec2-metadata-token-ttl-seconds";

fn token(ns: &str) -> String {
    let (s, t) = curl(
        ns,
        &[
            "-X",
            "PUT",
            "-H",
            &format!("{TTL}: 21600"),
            &format!("{BASE}/latest/api/token"),
        ],
    );
    assert_eq!(s, 200, "token for {ns}: {t}");
    t
}

fn get(ns: &str, tok: &str, path: &str) -> (u16, String) {
    curl(
        ns,
        &[
            "-H",
            &format!("X-aws-ec2-metadata-token: {tok}"),
            &format!("{BASE}{path}"),
        ],
    )
}

fn ok(ns: &str, tok: &str, path: &str) -> String {
    let (s, b) = get(ns, tok, path);
    assert_eq!(s, 200, "{ns} GET {path}: {b}");
    b
}

fn base64(s: &str) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in s.as_bytes().chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn prefix() -> String {
    format!("im{}", std::process::id() % 100_000)
}

struct Moto {
    vpc: String,
    subnet: String,
    h1: String,
    h2: String,
}

async fn seed_instances(sdk: &Sdk) -> Moto {
    use aws_sdk_ec2::types::{
        HttpTokensState, InstanceMetadataOptionsRequest, InstanceMetadataTagsState, ResourceType,
        Tag, TagSpecification,
    };
    let (vpc, subnet) = lab_subnet(sdk, "eu-west-1b").await;
    let run = |ip: &'static str, role: &'static str, tags_in_imds: bool| {
        let subnet = subnet.clone();
        async move {
            let tags = TagSpecification::builder()
                .resource_type(ResourceType::Instance)
                .tags(
                    Tag::builder()
                        .key("overlay:cluster")
                        .value("moto-cluster")
                        .build(),
                )
                .tags(Tag::builder().key("overlay:role").value(role).build())
                .build();
            let opts = InstanceMetadataOptionsRequest::builder()
                .http_tokens(HttpTokensState::Required)
                .instance_metadata_tags(if tags_in_imds {
                    InstanceMetadataTagsState::Enabled
                } else {
                    InstanceMetadataTagsState::Disabled
                })
                .build();
            sdk.ec2
                .run_instances()
                .image_id("ami-12c6146b")
                .instance_type(aws_sdk_ec2::types::InstanceType::C5Metal)
                .min_count(1)
                .max_count(1)
                .subnet_id(subnet)
                .private_ip_address(ip)
                .user_data(base64("#cloud-config\nhostname: from-moto\n"))
                .metadata_options(opts)
                .tag_specifications(tags)
                .send()
                .await
                .unwrap()
                .instances()[0]
                .instance_id()
                .unwrap()
                .to_string()
        }
    };
    let h1 = run("10.0.0.10", "host", true).await;
    let h2 = run("10.0.0.11", "host", false).await;
    Moto {
        vpc,
        subnet,
        h1,
        h2,
    }
}

/// The SDK's IMDS providers, run on a thread inside namespace `ns` (its sockets are made
/// there): (credentials, region, instance id).
fn sdk_in(ns: &str) -> (aws_sdk_ec2::config::Credentials, String, String) {
    overlay_testkit::in_netns(ns, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            use aws_config::imds;
            use aws_sdk_ec2::config::ProvideCredentials;
            let conf = aws_config::provider_config::ProviderConfig::without_region()
                .with_http_client(aws_smithy_http_client::Builder::new().build_http());
            let client = imds::Client::builder().configure(&conf).build();
            let creds = imds::credentials::ImdsCredentialsProvider::builder()
                .configure(&conf)
                .imds_client(client.clone())
                .build()
                .provide_credentials()
                .await
                .expect("IMDS credentials through the SDK");
            let region = imds::region::ImdsRegionProvider::builder()
                .configure(&conf)
                .imds_client(client.clone())
                .build()
                .region()
                .await
                .expect("IMDS region through the SDK");
            let id = client
                .get("/latest/meta-data/instance-id")
                .await
                .expect("instance-id through the SDK");
            (creds, region.to_string(), id.as_ref().to_string())
        })
    })
}

#[test]
fn imds_serves_every_instance_its_own_metadata_to_curl_and_the_sdk() {
    if !lab_gate(
        "imds_serves_every_instance_its_own_metadata_to_curl_and_the_sdk",
        &["ip", "nft", "curl"],
        &lab_bin().with_file_name("overlayd"),
    ) {
        return;
    }
    let Some(emu) = Emulator::start() else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sdk = rt.block_on(sdk(&emu));
    let moto = rt.block_on(seed_instances(&sdk));

    let p = prefix();
    let _guard = LabGuard(p.clone());
    let up = lab(&[
        "up",
        "--prefix",
        &p,
        "--replace",
        "--hosts",
        "2",
        "--vms-per-host",
        "1",
        "--aws-endpoint",
        &emu.url,
    ]);
    assert!(up.status.success(), "overlay-lab up: {}", text(&up));
    let (h1, h2, mgmt, vm) = (
        format!("{p}-h1"),
        format!("{p}-h2"),
        format!("{p}-mgmt"),
        format!("{p}-h1-vm1"),
    );

    // the merge of moto's state happens within a refresh (1 s)
    let t0 = Instant::now();
    let tok = token(&h1);
    while get(&h1, &tok, "/latest/meta-data/instance-id").1 != moto.h1 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "moto's instance id never served"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // --- AWS's token rules
    let (s, _) = curl(&h1, &[&format!("{BASE}/latest/meta-data/instance-id")]);
    assert_eq!(s, 401, "a GET without a token (tokens required)");
    for ttl in ["0", "21601", "soon"] {
        let (s, _) = curl(
            &h1,
            &[
                "-X",
                "PUT",
                "-H",
                &format!("{TTL}: {ttl}"),
                &format!("{BASE}/latest/api/token"),
            ],
        );
        assert_eq!(s, 400, "TTL {ttl}");
    }
    let (s, _) = curl(&h1, &["-X", "PUT", &format!("{BASE}/latest/api/token")]);
    assert_eq!(s, 400, "no TTL header");
    assert_eq!(
        get(&h2, &tok, "/latest/meta-data/instance-id").0,
        401,
        "h1's token from h2"
    );
    assert_eq!(get(&h1, "AQAEAnotatoken", "/latest/meta-data/").0, 401);

    // --- h1: moto's instance, the interface the node really has
    let mac = {
        let o = Command::new("ip")
            .args(["-n", &h1, "-br", "link", "show", "eth0"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .nth(2)
            .unwrap()
            .to_string()
    };
    assert_eq!(ok(&h1, &tok, "/latest/meta-data/mac"), mac);
    assert_eq!(ok(&h1, &tok, "/latest/meta-data/local-ipv4"), "10.0.0.10");
    assert_eq!(ok(&h1, &tok, "/latest/meta-data/placement/region"), REGION);
    assert_eq!(
        ok(&h1, &tok, "/latest/meta-data/placement/availability-zone"),
        "eu-west-1b"
    );
    let eni = format!("/latest/meta-data/network/interfaces/macs/{mac}");
    assert_eq!(ok(&h1, &tok, &format!("{eni}/device-number")), "0");
    assert!(ok(&h1, &tok, &format!("{eni}/interface-id")).starts_with("eni-"));
    assert_eq!(ok(&h1, &tok, &format!("{eni}/subnet-id")), moto.subnet);
    assert_eq!(ok(&h1, &tok, &format!("{eni}/vpc-id")), moto.vpc);
    assert_eq!(
        ok(&h1, &tok, &format!("{eni}/subnet-ipv4-cidr-block")),
        "10.0.0.0/22"
    );
    assert_eq!(
        ok(&h1, &tok, &format!("{eni}/vpc-ipv4-cidr-blocks")),
        "10.0.0.0/16"
    );
    assert_eq!(ok(&h1, &tok, &format!("{eni}/local-ipv4s")), "10.0.0.10");
    assert_eq!(
        ok(&h1, &tok, "/latest/meta-data/tags/instance/overlay:cluster"),
        "moto-cluster"
    );
    assert_eq!(
        ok(&h1, &tok, "/latest/meta-data/tags/instance/"),
        "overlay:cluster\noverlay:role"
    );
    assert_eq!(
        ok(&h1, &tok, "/latest/user-data"),
        "#cloud-config\nhostname: from-moto\n"
    );
    let doc: serde_json::Value =
        serde_json::from_str(&ok(&h1, &tok, "/latest/dynamic/instance-identity/document")).unwrap();
    assert_eq!(
        (doc["instanceId"].as_str(), doc["region"].as_str()),
        (Some(moto.h1.as_str()), Some(REGION))
    );
    assert_eq!(doc["privateIp"], "10.0.0.10");

    // cloud-init's probe order and crawl: dated versions, listings one entry a line
    for v in ["2021-03-23", "2016-09-02", "2009-04-04"] {
        assert_eq!(
            ok(&h1, &tok, &format!("/{v}/meta-data/instance-id")),
            moto.h1,
            "version {v}"
        );
    }
    assert!(ok(&h1, &tok, "/").lines().any(|l| l == "2021-03-23"));
    assert_eq!(ok(&h1, &tok, "/latest/"), "dynamic\nmeta-data\nuser-data");
    let md = ok(&h1, &tok, "/latest/meta-data/");
    for e in [
        "instance-id",
        "mac",
        "local-ipv4",
        "network/",
        "placement/",
        "tags/",
        "iam/",
    ] {
        assert!(md.lines().any(|l| l == e), "{e} listed in:\n{md}");
    }
    assert_eq!(get(&h1, &tok, "/latest/meta-data/no-such-thing").0, 404);

    // --- h2: metadata tags off in moto; mgmt: not in moto, the lab's own instance
    let t2 = token(&h2);
    assert_eq!(ok(&h2, &t2, "/latest/meta-data/instance-id"), moto.h2);
    assert_eq!(
        get(&h2, &t2, "/latest/meta-data/tags/instance/overlay:role").0,
        404
    );
    let tm = token(&mgmt);
    let mid = ok(&mgmt, &tm, "/latest/meta-data/instance-id");
    assert!(
        mid.starts_with("i-0") && mid.len() == 19 && mid != moto.h1,
        "{mid}"
    );
    assert_eq!(
        ok(&mgmt, &tm, "/latest/meta-data/tags/instance/overlay:role"),
        "management"
    );

    // --- hop limit 1 (AWS: the *PUT response* hop limit): the token reply reaches the node
    //     with TTL 1, other answers with the normal TTL; a VM behind the host (forwarded by
    //     the router) never gets a token
    let rules = "table ip imdsttl {\n chain in {\n  type filter hook input priority 0;\n  \
                 ip saddr 169.254.169.254 tcp flags & (syn|fin|rst) == 0 ip ttl 1 counter\n  \
                 ip saddr 169.254.169.254 ip ttl != 1 counter\n }\n}\n";
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &h1, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), rules.as_bytes()).unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    // (data segments with TTL 1, segments with another TTL) since the last reading
    let read = || -> (u64, u64) {
        let o = Command::new("ip")
            .args([
                "netns", "exec", &h1, "nft", "-j", "list", "table", "ip", "imdsttl",
            ])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let p: Vec<u64> = v["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|i| i["rule"]["expr"].as_array())
            .filter_map(|e| e.iter().find_map(|x| x["counter"]["packets"].as_u64()))
            .collect();
        assert_eq!(p.len(), 2, "{v}");
        let z = Command::new("ip")
            .args([
                "netns", "exec", &h1, "nft", "reset", "counters", "table", "ip", "imdsttl",
            ])
            .output()
            .unwrap();
        assert!(z.status.success(), "nft reset counters");
        (p[0], p[1])
    };
    read();
    ok(&h1, &tok, "/latest/meta-data/instance-id");
    let (one, other) = read();
    assert!(
        one == 0 && other >= 2,
        "GET: TTL-1 data segments {one}, others {other}"
    );
    token(&h1);
    let (one, _) = read();
    assert!(one >= 1, "the token reply did not arrive with TTL 1");
    let (s, b) = curl(
        &vm,
        &[
            "-X",
            "PUT",
            "-H",
            &format!("{TTL}: 60"),
            &format!("{BASE}/latest/api/token"),
        ],
    );
    assert_eq!(s, 0, "a VM two hops away got an answer: {b}");

    // --- the SDK's IMDS providers inside h1; the credentials work against moto
    let (creds, region, id) = sdk_in(&h1);
    assert_eq!((region.as_str(), id.as_str()), (REGION, moto.h1.as_str()));
    assert!(creds.access_key_id().starts_with("ASIA") && creds.session_token().is_some());
    emu.reset_calls();
    let ec2 = rt.block_on(async {
        let conf = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(region.clone()))
            .endpoint_url(&emu.url)
            .credentials_provider(aws_sdk_ec2::config::SharedCredentialsProvider::new(
                creds.clone(),
            ))
            .http_client(aws_smithy_http_client::Builder::new().build_http())
            .build();
        let ec2 = aws_sdk_ec2::Client::new(&conf);
        ec2.describe_instances().instance_ids(&id).send().await
    });
    let r = ec2.expect("moto accepts the IMDS credentials");
    assert_eq!(
        r.reservations()[0].instances()[0].instance_id(),
        Some(moto.h1.as_str())
    );
    let (_, calls) = http(emu.port, "GET", "/_shim/calls?all=1").unwrap();
    assert!(
        calls.contains(creds.access_key_id()),
        "shim saw the IMDS access key: {calls}"
    );

    // --- a tag changed in moto shows up at the next refresh
    rt.block_on(
        sdk.ec2
            .create_tags()
            .resources(&moto.h1)
            .tags(
                aws_sdk_ec2::types::Tag::builder()
                    .key("overlay:flood")
                    .value("unicast")
                    .build(),
            )
            .send(),
    )
    .unwrap();
    let t0 = Instant::now();
    while get(&h1, &tok, "/latest/meta-data/tags/instance/overlay:flood").1 != "unicast" {
        assert!(t0.elapsed() < Duration::from_secs(10), "new tag not served");
        std::thread::sleep(Duration::from_millis(200));
    }

    // --- down stops the emulator (its socket would keep the vpc namespace alive)
    let d = lab(&["down", "--prefix", &p]);
    assert!(d.status.success(), "{}", text(&d));
    let ps = Command::new("pgrep")
        .args(["-f", &format!("imds-serve --catalog /run/overlay-lab/{p}/")])
        .output()
        .unwrap();
    assert!(
        !ps.status.success(),
        "imds-serve still running: {}",
        text(&ps)
    );
}
