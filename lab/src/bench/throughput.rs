//! 3. Overlay TCP throughput (iperf3) vs the underlay and a hand-made overlay.

use super::*;

// ------------------------------------------------------------------ 3. throughput

fn ip_json_mtu(ns: &str, dev: &str) -> Result<u32> {
    let out = sys::run_ok(
        Command::new("ip").args(["-n", ns, "-j", "link", "show", "dev", dev]),
        None,
    )?;
    let v: Value = serde_json::from_str(&out)?;
    v[0]["mtu"]
        .as_u64()
        .map(|m| m as u32)
        .ok_or_else(|| anyhow!("no mtu for {dev} in {ns}"))
}

fn vxlan_details(ns: &str) -> String {
    sys::run_ok(
        Command::new("ip").args(["-n", ns, "-d", "-o", "link", "show", "dev", "ethvxlan0"]),
        None,
    )
    .ok()
    .and_then(|s| {
        let i = s.find("vxlan id")?;
        let rest = &s[i..];
        Some(
            rest.split("bridge_slave")
                .next()
                .unwrap_or(rest)
                .trim()
                .trim_end_matches('\\')
                .trim()
                .to_string(),
        )
    })
    .unwrap_or_default()
}

/// Underlay: bridge `br` in `ul` and two nodes with eth0 10.0.0.10/.11, MTU 9001, each with
/// a DHCP default route via 10.0.0.1.
fn underlay_pair(ul: &str, a: &str, b: &str) -> Result<()> {
    let mut s = String::from("link set lo up\n");
    let _ = writeln!(
        s,
        "link add name ulbr mtu {UNDERLAY_MTU} type bridge mcast_snooping 0"
    );
    for (port, ns) in [("u-a", a), ("u-b", b)] {
        let _ = writeln!(
            s,
            "link add {port} mtu {UNDERLAY_MTU} type veth peer name eth0 netns {ns} mtu {UNDERLAY_MTU}"
        );
        let _ = writeln!(s, "link set {port} master ulbr");
        let _ = writeln!(s, "link set {port} up");
    }
    s.push_str("link set ulbr up\n");
    sys::ip_batch(Some(ul), &s)?;
    for (ns, ip) in [(a, "10.0.0.10"), (b, "10.0.0.11")] {
        sys::ip_batch(
            Some(ns),
            // with an EC2 instance's DHCP default route
            &format!(
                "link set lo up\naddr add {ip}/22 dev eth0\nlink set eth0 up\n\
                 route add default via 10.0.0.1 dev eth0 proto dhcp\n"
            ),
        )?;
    }
    Ok(())
}

fn iperf_once(client_ns: &str, dst: &str, secs: u32) -> Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = in_ns_cmd(client_ns, "iperf3")?;
        // -O 1: leave the first second (slow start, ARP/FDB learning) out of the result
        c.args([
            "-c",
            dst,
            "-p",
            "5201",
            "-J",
            "-O",
            "1",
            "-t",
            &secs.to_string(),
        ]);
        let out = run_tracked(&mut c, None)?;
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if let Some(bps) = v["end"]["sum_received"]["bits_per_second"].as_f64() {
            return Ok(bps / 1e9);
        }
        let err = v["error"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(&out.stderr).trim().to_string());
        if Instant::now() > deadline {
            bail!("iperf3 {client_ns} -> {dst}: {err}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub(super) fn throughput(ctx: &Ctx, sec: &mut Section) -> Result<()> {
    let p = format!("{}t", ctx.prefix);
    let rd = node_cmd::run_dir(&p);
    std::fs::create_dir_all(&rd)?;
    let ns = |x: &str| format!("{p}-{x}");
    sys::create_namespaces(&["ul", "a", "b", "ul2", "c", "d"].map(ns))?;
    underlay_pair(&ns("ul"), &ns("a"), &ns("b"))?;
    underlay_pair(&ns("ul2"), &ns("c"), &ns("d"))?;
    // overlayd-configured pair
    for (x, ip) in [("a", "10.101.0.10/16"), ("b", "10.101.0.11/16")] {
        let dir = rd.join(x);
        fresh_node_files(&dir)?;
        let mut c = in_ns_cmd(&ns(x), &ctx.overlayd)?;
        c.args(od_apply_args(&dir, ip, "10.101.0.1"));
        strip_overlayd_env(&mut c);
        sys::run_ok(&mut c, None).with_context(|| format!("overlayd apply in {}", ns(x)))?;
    }
    let mtu = ip_json_mtu(&ns("a"), "cloudbr0")?;
    // hand-made pair: plain ip, same VNI, port, group, underlay and MTU
    for (x, ip) in [("c", "10.101.0.10/16"), ("d", "10.101.0.11/16")] {
        let b = format!(
            "link add cloudbr0 mtu {mtu} type bridge stp_state 0\n\
             link add ethvxlan0 mtu {mtu} type vxlan id 100 dstport 4789 group {GROUP} dev eth0\n\
             link set ethvxlan0 master cloudbr0\n\
             addr add {ip} dev cloudbr0\n\
             link set ethvxlan0 up\n\
             link set cloudbr0 up\n"
        );
        nl::in_netns(&ns(x), || {
            std::fs::write("/proc/sys/net/ipv4/conf/eth0/force_igmp_version", "2")?;
            Ok(())
        })?;
        sys::ip_batch(Some(&ns(x)), &b)?;
    }
    let mtu_hand = ip_json_mtu(&ns("c"), "ethvxlan0")?;
    let mtu_od = ip_json_mtu(&ns("a"), "ethvxlan0")?;
    let mut servers = Vec::new();
    for x in ["b", "d"] {
        let mut c = in_ns_cmd(&ns(x), "iperf3")?;
        c.args(["-s", "-p", "5201"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = c.spawn().context("starting iperf3 -s")?;
        track(child.id());
        servers.push(child);
    }
    std::thread::sleep(Duration::from_millis(300));
    let paths = [
        ("overlay (overlayd)", ns("a"), "10.101.0.11"),
        ("underlay (eth0 <-> eth0)", ns("a"), "10.0.0.11"),
        ("hand-made overlay (ip)", ns("c"), "10.101.0.11"),
    ];
    let secs = ctx.a.iperf_seconds;
    let mut res: Vec<Vec<f64>> = vec![vec![]; paths.len()];
    let run = (|| -> Result<()> {
        for r in 0..ctx.a.iperf_repeats {
            for j in 0..paths.len() {
                let k = (r + j) % paths.len();
                let (_, cns, dst) = &paths[k];
                res[k].push(iperf_once(cns, dst, secs)?);
            }
        }
        Ok(())
    })();
    for mut s in servers {
        untrack(s.id());
        let _ = s.kill();
        let _ = s.wait();
    }
    run?;
    let sums: Vec<Summary> = res.iter().map(|v| summarize(v)).collect();
    let mut t = Table::new(&["path", "runs", "median Gbit/s", "min", "max"]);
    for (k, (name, _, _)) in paths.iter().enumerate() {
        t.row(vec![
            name.to_string(),
            sums[k].n.to_string(),
            f2(sums[k].p50),
            f2(sums[k].min),
            f2(sums[k].max),
        ]);
    }
    sec.tables.push(t);
    let ratio = sums[0].p50 / sums[2].p50;
    sec.check(
        "overlay >= 0.97 x hand-made overlay",
        format!(
            "{:.2} / {:.2} Gbit/s = {ratio:.3}",
            sums[0].p50, sums[2].p50
        ),
        ratio >= 0.97,
        (ratio < 0.97).then(|| {
            "both are the same kernel datapath; a gap means a configuration difference (see the \
             vxlan details note) or noise (see min/max)"
                .into()
        }),
    );
    sec.notes.push(format!(
        "overlay / underlay = {:.3}; MTU: underlay {UNDERLAY_MTU}, overlayd VTEP {mtu_od}, \
         hand-made VTEP {mtu_hand}; iperf3 -t {secs} -O 1, 1 stream, {} repeats, paths interleaved",
        sums[0].p50 / sums[1].p50,
        ctx.a.iperf_repeats
    ));
    sec.notes.push(format!(
        "vxlan details: overlayd [{}]; hand-made [{}]",
        vxlan_details(&ns("a")),
        vxlan_details(&ns("c"))
    ));
    sec.data = json!({
        "gbit_per_s": paths.iter().enumerate().map(|(k, (name, _, _))| json!({
            "path": name, "summary": sums[k].to_json(), "samples": res[k]})).collect::<Vec<_>>(),
        "overlay_over_handmade": ratio,
        "overlay_over_underlay": sums[0].p50 / sums[1].p50,
        "mtu": {"underlay": UNDERLAY_MTU, "overlayd": mtu_od, "handmade": mtu_hand},
    });
    Ok(())
}
