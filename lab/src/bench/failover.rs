//! 6. Router failover: the HA pair of a two-AZ lab (`up --daemon --routers 2 --azs 2`) with
//!    moto behind the shim for the route takeover; the active router is failed N times per
//!    mode (its VPC link cut; `kill -9` of every process in it; both: the instance gone) while
//!    100 ms probes run VM → VPC client, VPC client → management server, host ↔ host and
//!    VM ↔ VM (overlay-internal), and one TCP flow VM → VPC client (iperf3) runs across it.
//!    Outages are lab figures: the VPC route follows moto after `--vpc-route-delay-ms`.

use super::*;

/// moto seed: VPC 10.0.0.0/16, one subnet per AZ (the lab's), the two routers' instances at
/// the lab's addresses, a route table tagged with the cluster and its overlay route at
/// router's ENI. Prints {"table": ..., "eni": {"router": ..., "router2": ...}}.
const SEED: &str = r#"
import json, sys, boto3
url, cluster = sys.argv[1], sys.argv[2]
e = boto3.client("ec2", endpoint_url=url, region_name="eu-west-1",
                 aws_access_key_id="seeding", aws_secret_access_key="seeding")
vpc = e.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
subnets = {}
for az, cidr in [("eu-west-1a", "10.0.0.0/22"), ("eu-west-1b", "10.0.4.0/22")]:
    subnets[az] = e.create_subnet(VpcId=vpc, CidrBlock=cidr, AvailabilityZone=az)["Subnet"]["SubnetId"]
eni = {}
for name, ip, az in [("router", "10.0.0.4", "eu-west-1a"), ("router2", "10.0.4.6", "eu-west-1b")]:
    tags = [{"ResourceType": "instance", "Tags": [
        {"Key": "overlay:cluster", "Value": cluster}, {"Key": "overlay:role", "Value": "router"}]}]
    r = e.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, InstanceType="c5.large",
                        SubnetId=subnets[az], PrivateIpAddress=ip, TagSpecifications=tags,
                        MetadataOptions={"HttpTokens": "required", "InstanceMetadataTags": "enabled"})
    eni[name] = r["Instances"][0]["NetworkInterfaces"][0]["NetworkInterfaceId"]
table = e.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
e.create_tags(Resources=[table], Tags=[{"Key": "overlay:cluster", "Value": cluster}])
e.create_route(RouteTableId=table, DestinationCidrBlock="10.101.0.0/16", NetworkInterfaceId=eni["router"])
print(json.dumps({"table": table, "eni": eni}))
"#;

const ROUTERS: [(&str, &str); 2] = [("router", "10.0.0.4"), ("router2", "10.0.4.6")];
const MODES: [&str; 3] = ["link-cut", "kill-9", "power-off"];
/// Probe interval and the window each failover is watched for.
const PROBE_S: f64 = 0.1;
const PROBES: usize = 90;
const FAULT_AFTER: Duration = Duration::from_millis(1500);

fn sh(cmd: &str) -> String {
    Command::new("sh")
        .args(["-c", cmd])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn ns_out(ns: &str, cmd: &str) -> String {
    sh(&format!("ip netns exec {ns} {cmd}"))
}

fn holds_vip(p: &str, r: &str) -> bool {
    ns_out(&format!("{p}-{r}"), "ip -br addr show cloudbr0").contains("10.101.0.1/")
}

fn vpc_route(p: &str) -> String {
    ns_out(&format!("{p}-vpc"), "ip route show 10.101.0.0/16")
}

fn other(r: &str) -> &'static str {
    if r == "router" {
        "router2"
    } else {
        "router"
    }
}

fn ip_of(r: &str) -> &'static str {
    ROUTERS.iter().find(|(n, _)| *n == r).map(|x| x.1).unwrap()
}

/// moto's overlay route target (ENI), through the shim.
fn moto_target(url: &str) -> Option<String> {
    let body = crate::imds::http_to_moto(
        url,
        "GET",
        "/_shim/routes?region=eu-west-1&cidr=10.101.0.0/16",
    )
    .ok()?;
    let v: Value = serde_json::from_str(&body).ok()?;
    v["routes"][0]["target"].as_str().map(str::to_string)
}

fn wait_until(limit: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    ok()
}

/// A ping stream: `PROBES` echoes every 100 ms from namespace `ns` to `dst`.
fn ping(ns: &str, dst: &str) -> Result<std::process::Child> {
    let c = Command::new("ip")
        .args([
            "netns", "exec", ns, "ping", "-q", "-n", "-i", "0.1", "-W", "1",
        ])
        .args(["-c", &PROBES.to_string(), dst])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("ping in {ns}"))?;
    track(c.id());
    Ok(c)
}

/// Echoes lost by a finished ping stream.
fn lost(c: std::process::Child) -> Result<usize> {
    let pid = c.id();
    let out = c.wait_with_output()?;
    untrack(pid);
    let s = String::from_utf8_lossy(&out.stdout);
    let received = s
        .split(',')
        .find(|x| x.contains("received"))
        .and_then(|x| x.split_whitespace().next())
        .and_then(|n| n.parse::<usize>().ok())
        .ok_or_else(|| anyhow!("no ping summary: {s}"))?;
    Ok(PROBES.saturating_sub(received))
}

/// iperf3 -J: (longest run of empty 100 ms intervals in seconds, whether the flow lasted to
/// its end).
fn tcp_stall(out: &Output) -> (f64, bool) {
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let (mut run, mut worst) = (0.0f64, 0.0f64);
    for i in v["intervals"].as_array().into_iter().flatten() {
        let s = &i["sum"];
        let len = s["seconds"].as_f64().unwrap_or(PROBE_S);
        if s["bytes"].as_u64().unwrap_or(0) == 0 {
            run += len;
            worst = worst.max(run);
        } else {
            run = 0.0;
        }
    }
    let ok = out.status.success() && v.get("error").is_none();
    (worst, ok)
}

struct Run {
    mode: &'static str,
    failed: String,
    vm_client_s: f64,
    client_mgmt_s: f64,
    internal_lost: usize,
    tcp_stall_s: f64,
    tcp_survived: bool,
    route_moved: bool,
    stayed_backup: bool,
}

pub(super) fn failover(ctx: &Ctx, sec: &mut Section) -> Result<()> {
    let p = format!("{}h", ctx.prefix);
    for tool in ["keepalived", "iperf3", "python3"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .map(|s| !s.success())
            .unwrap_or(true)
        {
            bail!("{tool} is not installed (the failover benchmark needs it)");
        }
    }
    // moto behind the shim, on a free loopback port
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let emu_path = ctx.a.aws_emulator.clone();
    let emu = Command::new(&emu_path)
        .args([&port.to_string(), "--exit-with-parent"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", emu_path.display()))?;
    track(emu.id());
    let url = format!("http://127.0.0.1:{port}");
    if !wait_until(Duration::from_secs(60), || {
        crate::imds::http_to_moto(&url, "GET", "/_shim/calls").is_ok()
    }) {
        bail!("{} did not answer on {url} within 60 s", emu_path.display());
    }
    let seed = run_tracked(Command::new("python3").args(["-c", SEED, &url, &p]), None)?;
    if !seed.status.success() {
        bail!(
            "seeding moto failed: {}",
            String::from_utf8_lossy(&seed.stderr).trim()
        );
    }
    let seeded: Value = serde_json::from_slice(&seed.stdout)?;
    let eni = |r: &str| seeded["eni"][r].as_str().unwrap_or("").to_string();

    let delay = ctx.a.vpc_route_delay_ms;
    let mut c = Command::new(&ctx.me);
    c.args(["up", "--json", "--daemon", "--prefix", &p, "--replace"])
        .args(["--routers", "2", "--azs", "2", "--hosts", "2"])
        .args(["--vms-per-host", "1", "--aws-endpoint", &url])
        .args(["--vpc-route-delay-ms", &delay.to_string()])
        .arg("--overlayd")
        .arg(&ctx.overlayd);
    let up = run_tracked(&mut c, None)?;
    if !up.status.success() {
        bail!(
            "overlay-lab up (router pair, two AZs) failed: {}",
            String::from_utf8_lossy(&up.stderr).trim()
        );
    }
    let t = lab::topology_of(&p)?;
    // why router `a` is not the settled active one (None: it is)
    let unsettled = |a: &str| -> Option<String> {
        if !holds_vip(&p, a) {
            return Some(format!("{a} does not hold the VIP"));
        }
        if holds_vip(&p, other(a)) {
            return Some(format!("{} holds the VIP too", other(a)));
        }
        let m = moto_target(&url);
        if m.as_deref() != Some(eni(a).as_str()) {
            return Some(format!("moto's route at {m:?}, not {a}'s {}", eni(a)));
        }
        let v = vpc_route(&p);
        if !v.contains(ip_of(a)) {
            return Some(format!("the lab VPC route is {:?}", v.trim()));
        }
        None
    };
    let settled = |a: &str| unsettled(a).is_none();
    let active = || {
        ROUTERS
            .iter()
            .map(|x| x.0)
            .find(|r| holds_vip(&p, r))
            .map(str::to_string)
    };
    if !wait_until(Duration::from_secs(20), || {
        active().is_some_and(|a| settled(&a))
    }) {
        bail!("the router pair did not settle (one VIP holder, the VPC route at its ENI)");
    }

    let mut runs: Vec<Run> = Vec::new();
    let modes: Vec<&'static str> = MODES
        .into_iter()
        .filter(|m| ctx.a.failover_modes.iter().any(|x| x == m))
        .collect();
    for &mode in &modes {
        for k in 0..ctx.a.failovers {
            let a = active().ok_or_else(|| anyhow!("no router holds the VIP"))?;
            let b = other(&a);
            // probes and the TCP flow
            let srv = Command::new("ip")
                .args(["netns", "exec", &format!("{p}-client")])
                .args(["iperf3", "-s", "-1", "-p", "5201"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            track(srv.id());
            std::thread::sleep(Duration::from_millis(300));
            let window = (PROBES as f64 * PROBE_S).to_string();
            let tcp = Command::new("ip")
                .args(["netns", "exec", &format!("{p}-h1-vm1")])
                .args(["iperf3", "-c", "10.0.8.10", "-p", "5201", "-J"])
                .args(["-t", &window, "-i", "0.1", "-b", "20M"])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()?;
            track(tcp.id());
            let probes = [
                ping(&format!("{p}-h1-vm1"), "10.0.8.10")?,
                ping(&format!("{p}-client"), "10.101.0.2")?,
                ping(&format!("{p}-h1"), "10.101.0.11")?,
                ping(&format!("{p}-h2-vm1"), "10.101.128.10")?,
            ];
            std::thread::sleep(FAULT_AFTER);
            let vpc = format!("{p}-vpc");
            let cut = || ns_out(&vpc, &format!("ip link set u-{a} down"));
            let kill = || {
                for pid in sh(&format!("ip netns pids {p}-{a}")).split_whitespace() {
                    if let Ok(pid) = pid.parse::<i32>() {
                        // SAFETY: kill(2) of a process in the lab's own namespace.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
            };
            match mode {
                "link-cut" => {
                    cut();
                }
                "kill-9" => kill(),
                _ => {
                    kill();
                    cut();
                }
            }
            let mut it = probes.into_iter();
            let vm_client = lost(it.next().unwrap())?;
            let client_mgmt = lost(it.next().unwrap())?;
            let internal = lost(it.next().unwrap())? + lost(it.next().unwrap())?;
            let tcp_pid = tcp.id();
            let tcp_out = tcp.wait_with_output()?;
            untrack(tcp_pid);
            let (stall, survived) = tcp_stall(&tcp_out);
            let _ = sh(&format!("kill {} 2>/dev/null", srv.id()));
            untrack(srv.id());
            let route_moved = wait_until(Duration::from_secs(10), || {
                holds_vip(&p, b)
                    && moto_target(&url).as_deref() == Some(eni(b).as_str())
                    && vpc_route(&p).contains(ip_of(b))
            });
            // back: the link, and (as systemd's Restart= would) the daemon
            if mode != "kill-9" {
                ns_out(&vpc, &format!("ip link set u-{a} up"));
            }
            if mode != "link-cut" {
                let n = t
                    .nodes
                    .iter()
                    .find(|n| n.name == a)
                    .ok_or_else(|| anyhow!("{a} not in the lab"))?;
                let child = bench_daemon::spawn_one(&ctx.overlayd, &t, n, true)?;
                std::mem::forget(child); // the lab's teardown stops it
                let sock = node_cmd::node_dir(&p, &a).join(bench_daemon::SOCKET);
                wait_until(Duration::from_secs(20), || {
                    bench_daemon::control(&sock, "status")
                        .map(|v| v["converged"] == true)
                        .unwrap_or(false)
                });
            }
            std::thread::sleep(Duration::from_secs(4));
            let why = unsettled(b);
            let stayed_backup = why.is_none();
            if let Some(w) = &why {
                eprintln!("overlay-lab bench: after restoring {a}: {w}");
            }
            let r = Run {
                mode,
                failed: a.clone(),
                vm_client_s: vm_client as f64 * PROBE_S,
                client_mgmt_s: client_mgmt as f64 * PROBE_S,
                internal_lost: internal,
                tcp_stall_s: stall,
                tcp_survived: survived,
                route_moved,
                stayed_backup,
            };
            eprintln!(
                "overlay-lab bench: failover {mode} {}/{} of {a}: VM→client {:.1} s, \
                 client→mgmt {:.1} s, overlay-internal lost {internal}, TCP stall {stall:.1} s \
                 ({}), route moved {route_moved}, no preemption {stayed_backup}",
                k + 1,
                ctx.a.failovers,
                r.vm_client_s,
                r.client_mgmt_s,
                if survived { "survived" } else { "BROKEN" },
            );
            runs.push(r);
            if !stayed_backup {
                // the next round needs one settled active router
                if !wait_until(Duration::from_secs(20), || {
                    active().is_some_and(|x| settled(&x))
                }) {
                    bail!("the pair did not settle after failover {} ({mode})", k + 1);
                }
            }
        }
    }

    let mut tbl = Table::new(&[
        "mode",
        "failovers",
        "VM→client min/median/max s",
        "client→mgmt min/median/max s",
        "overlay-internal lost",
        "TCP stall median/max s",
        "TCP survived",
        "route moved",
        "no preemption",
    ]);
    let mmm = |v: &[f64]| {
        let s = summarize(v);
        format!("{:.1} / {:.1} / {:.1}", s.min, s.p50, s.max)
    };
    let mut worst: f64 = 0.0;
    let mut internal_total = 0;
    let mut all_moved = true;
    for &mode in &modes {
        let rs: Vec<&Run> = runs.iter().filter(|r| r.mode == mode).collect();
        let vc: Vec<f64> = rs.iter().map(|r| r.vm_client_s).collect();
        let cm: Vec<f64> = rs.iter().map(|r| r.client_mgmt_s).collect();
        let st: Vec<f64> = rs.iter().map(|r| r.tcp_stall_s).collect();
        worst = vc.iter().chain(&cm).copied().fold(worst, f64::max);
        let internal: usize = rs.iter().map(|r| r.internal_lost).sum();
        internal_total += internal;
        all_moved &= rs.iter().all(|r| r.route_moved && r.stayed_backup);
        let s = summarize(&st);
        tbl.row(vec![
            mode.into(),
            rs.len().to_string(),
            mmm(&vc),
            mmm(&cm),
            internal.to_string(),
            format!("{:.1} / {:.1}", s.p50, s.max),
            format!(
                "{}/{}",
                rs.iter().filter(|r| r.tcp_survived).count(),
                rs.len()
            ),
            format!(
                "{}/{}",
                rs.iter().filter(|r| r.route_moved).count(),
                rs.len()
            ),
            format!(
                "{}/{}",
                rs.iter().filter(|r| r.stayed_backup).count(),
                rs.len()
            ),
        ]);
    }
    sec.tables.push(tbl);
    sec.check(
        "outage ≤ 3 s (VM→VPC client and VPC client→mgmt, max over every failover)",
        format!("{worst:.1} s"),
        worst <= 3.0,
        None,
    );
    sec.check(
        "overlay-internal traffic (host↔host, VM↔VM) loses nothing",
        format!("{internal_total} echoes lost"),
        internal_total == 0,
        None,
    );
    sec.check(
        "route at the new active router's ENI; the recovered router stays backup",
        if all_moved {
            "every failover"
        } else {
            "not every failover"
        }
        .into(),
        all_moved,
        None,
    );
    sec.notes.push(format!(
        "lab figures: 100 ms probes, VPC route propagation delay {delay} ms (AWS applies a \
         replaced route after a delay of its own); outage = echoes lost × 100 ms; routers in \
         two AZ subnets (10.0.0.4, 10.0.4.6); TCP: one iperf3 flow VM → VPC client (20 Mbit/s, \
         routed, no NAT), stall = longest run of empty 100 ms intervals"
    ));
    sec.data = json!({
        "vpc_route_delay_ms": delay,
        "runs": runs.iter().map(|r| json!({
            "mode": r.mode, "failed": r.failed, "vm_client_s": r.vm_client_s,
            "client_mgmt_s": r.client_mgmt_s, "internal_lost": r.internal_lost,
            "tcp_stall_s": r.tcp_stall_s, "tcp_survived": r.tcp_survived,
            "route_moved": r.route_moved, "stayed_backup": r.stayed_backup,
        })).collect::<Vec<_>>(),
    });
    Ok(())
}
