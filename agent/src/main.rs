//! `overlayd` command line.

use clap::{ArgMatches, CommandFactory, FromArgMatches};
use overlay_agent::apply::{self, AgentError};
use overlay_agent::cli::{Cli, Cmd};
use overlay_agent::config::{
    self, Config, ConfigError, FileConfig, Overrides, Settings as NodeArgs,
};
use overlay_agent::plan::Op;
use std::process::ExitCode;

fn overrides(m: &ArgMatches) -> Overrides {
    Overrides::from_matches(m)
}

/// How long `run` and `configured` wait for IMDS at boot on an EC2 instance (the underlay
/// may not have its DHCP lease yet; the unit's start timeout is 90 s).
const IMDS_BOOT_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

fn imds_wait(patient: bool) -> std::time::Duration {
    if patient && overlay_agent::instance::looks_like_ec2() {
        IMDS_BOOT_WAIT
    } else {
        std::time::Duration::ZERO
    }
}

fn load_config(node: &NodeArgs, m: &ArgMatches, patient: bool) -> Result<Config, ConfigError> {
    load_config_waiting(node, &overrides(m), imds_wait(patient))
}

fn load_config_with(node: &NodeArgs, over: &Overrides) -> Result<Config, ConfigError> {
    load_config_waiting(node, over, std::time::Duration::ZERO)
}

fn load_config_waiting(
    node: &NodeArgs,
    over: &Overrides,
    wait: std::time::Duration,
) -> Result<Config, ConfigError> {
    let file = match &node.config {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| ConfigError {
                key: "config".into(),
                value: p.display().to_string(),
                source: None,
                reason: format!("cannot read: {e}"),
            })?;
            config::parse_file(&text, &p.display().to_string())?
        }
        None => match std::fs::read_to_string(config::DEFAULT_CONFIG) {
            Ok(text) => config::parse_file(&text, config::DEFAULT_CONFIG)?,
            Err(_) => FileConfig::default(),
        },
    };
    config::build_with(&file, over, &|| {
        overlay_agent::instance::fetch_patiently(wait)
    })
}

/// `overlayd configured`: does any layer name a role? (A file that cannot be read or parsed
/// counts as configured: starting then fails with the error.)
fn configured(node: &NodeArgs, m: &ArgMatches) -> ExitCode {
    if overrides(m).values.contains_key("role") {
        return ExitCode::SUCCESS;
    }
    let path = node
        .config
        .clone()
        .unwrap_or_else(|| config::DEFAULT_CONFIG.into());
    let shown = path.display().to_string();
    let has_role = match std::fs::read_to_string(&path) {
        Ok(text) => config::parse_file(&text, &shown).map_or(true, |f| f.has("role")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(_) => true,
    };
    if has_role {
        return ExitCode::SUCCESS;
    }
    // A zero-configuration EC2 node: its overlay:role tag configures it.
    let tagged = overlay_agent::instance::fetch_patiently(imds_wait(true));
    if let Ok(f) = &tagged {
        if f.tags.contains_key("overlay:role") {
            return ExitCode::SUCCESS;
        }
    }
    if tagged.is_err()
        && overlay_agent::instance::imds_was_unreachable()
        && overlay_agent::instance::looks_like_ec2()
    {
        // An EC2 instance whose IMDS does not answer yet: start, so that `run` (which waits
        // too, then exits 1 and is restarted) gets its chance; a skip is never retried.
        eprintln!(
            "overlayd: {shown} sets no role and IMDS does not answer yet; starting anyway so the \
             instance's overlay:role tag can configure this node"
        );
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "overlayd: not configured: {shown} sets no role (nor does OVERLAYD_ROLE or --role), \
         and {}; see /usr/share/doc/overlayd/operations.md",
        match tagged {
            Ok(f) => format!(
                "instance {} has no overlay:role tag ({})",
                f.instance_id, f.tags_from
            ),
            Err(e) => format!("there are no instance tags to read ({e})"),
        }
    );
    ExitCode::from(1)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn fail(e: &AgentError) -> ExitCode {
    match e {
        AgentError::Config(c) => {
            eprintln!("overlayd: {c}");
            eprintln!("overlayd: nothing was changed");
            ExitCode::from(2)
        }
        e => {
            eprintln!("overlayd: error: {e}");
            ExitCode::from(1)
        }
    }
}

fn print_ops(ops: &[Op], json: bool, key: &str, empty: &str) {
    if json {
        let v = serde_json::json!({ key: ops });
        println!("{}", serde_json::to_string_pretty(&v).unwrap());
    } else if ops.is_empty() {
        println!("{empty}");
    } else {
        for (i, op) in ops.iter().enumerate() {
            println!("{:>3}. {op}", i + 1);
        }
    }
}

/// `overlayd doctor`: the desired state and what the kernel shows (dumps, /proc and /run
/// reads, one route lookup, one ping to the gateway, the daemon's status), judged by
/// `overlay_agent::doctor`.
async fn doctor(
    h: &rtnetlink::Handle,
    cfg: &overlay_agent::config::Config,
    json: bool,
    query_interval_secs: u64,
) -> ExitCode {
    use overlay_agent::{doctor, ethtool, icmp, netlink, network_managers};
    // the flood list as it is: no discovery (doctor reads, it does not ask AWS)
    let (d, o, _p) = match apply::compute_with(h, cfg, None, None).await {
        Ok(x) => x,
        Err(e) => return fail(&e),
    };
    let vtep = d
        .vtep
        .as_ref()
        .and_then(|t| o.link(&t.name))
        .map(|l| l.index);
    let learned = match vtep {
        Some(i) => netlink::dump_remote_vteps(h, i).await.ok(),
        None => d.vtep.as_ref().map(|_| Default::default()),
    };
    let status = overlay_agent::daemon::control_request(&cfg.control_socket, "status")
        .await
        .ok();
    let daemon = match &status {
        Some(v) => doctor::Daemon::Running {
            queries: serde_json::from_value(v["igmp_queries"].clone()).ok(),
        },
        None => doctor::Daemon::NotRunning,
    };
    let ha: Option<overlay_agent::ha::HaStatus> = status
        .as_ref()
        .and_then(|v| serde_json::from_value(v["ha"].clone()).ok());
    let src = d.bridge.address.addr();
    let has_src = o
        .link(&d.bridge.name)
        .is_some_and(|b| o.addrs_of(b.index).any(|a| a.addr == d.bridge.address));
    let gateway = cfg.gateway.filter(|_| d.gateway_mode.is_some());
    let gateway_ping = match gateway {
        // blocking, bounded (3 × 700 ms): nothing else runs on this one-shot runtime
        Some(gw) if has_src => Some(icmp::ping(
            src,
            gw,
            3,
            std::time::Duration::from_millis(700),
        )),
        Some(_) => Some(Err(format!("{src} is not on {}", d.bridge.name))),
        None => None,
    };
    // a VPC address: the underlay subnet's router (base + 1)
    let vpc = o.link(&d.underlay).and_then(|u| {
        o.addrs_of(u.index).find_map(|a| {
            let n = ipnet::Ipv4Net::new(a.addr.addr(), a.addr.prefix_len()).ok()?;
            Some(std::net::Ipv4Addr::from(u32::from(n.network()) + 1))
        })
    });
    let return_path = match (vpc, d.gateway_mode, has_src) {
        (Some(dst), Some(_), true) => Some((
            dst,
            netlink::route_get(h, dst, src)
                .await
                .map_err(|e| e.to_string()),
        )),
        _ => None,
    };
    let mut devices: Vec<(String, u32)> = Vec::new();
    for name in [
        Some(&d.bridge.name),
        d.vtep.as_ref().map(|t| &t.name),
        d.dummy.as_ref().map(|x| &x.name),
    ]
    .into_iter()
    .flatten()
    {
        if let Some(l) = o.link(name) {
            devices.push((l.name.clone(), l.index));
        }
    }
    // router pair: the peer, and (on the backup) the VIP, each one echo from this router's
    // own overlay address
    let (ha_peer_ping, ha_vip_ping) = match &d.ha {
        Some(spec) if has_src => {
            let wait = std::time::Duration::from_millis(500);
            let active = overlay_agent::ha::is_active(spec, &o);
            (
                Some(icmp::ping(src, spec.peer, 2, wait)),
                (!active).then(|| icmp::ping(src, spec.vip, 2, wait)),
            )
        }
        _ => (None, None),
    };
    let running = network_managers::running_here(std::path::Path::new("/proc"));
    let claims = network_managers::claims(std::path::Path::new("/run"), &running, &devices);
    let mut facts = doctor::Facts {
        igmp: std::fs::read_to_string("/proc/net/igmp")
            .map(|t| doctor::parse_proc_igmp(&t))
            .unwrap_or_default(),
        learned,
        observed: o,
        daemon,
        now_unix_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|t| t.as_millis())
            .unwrap_or(0),
        query_interval_secs,
        gateway,
        gateway_ping,
        return_path,
        kernel: ethtool::kernel_release(),
        managers_running: running,
        claims,
        ha,
        ha_peer_ping,
        ha_vip_ping,
        evpn: d.evpn.as_ref().map(|spec| {
            let mut st = overlay_agent::evpn::EvpnStatus::default();
            overlay_agent::evpn::read_status(spec, &mut st);
            st
        }),
    };
    for key in [
        format!("net/ipv4/conf/{}/force_igmp_version", d.underlay),
        "net/ipv4/igmp_max_memberships".to_string(),
        "net/ipv4/ip_forward".to_string(),
    ] {
        if let std::collections::btree_map::Entry::Vacant(e) = facts.observed.sysctls.entry(key) {
            let v = overlay_agent::sysctl::read(e.key()).ok().flatten();
            e.insert(v);
        }
    }
    let checks = doctor::diagnose(&d, &facts);
    if json {
        println!(
            "{}",
            serde_json::json!({"checks": checks, "exit": doctor::exit_code(&checks)})
        );
    } else {
        print!("{}", doctor::render(&checks));
    }
    ExitCode::from(doctor::exit_code(&checks))
}

fn main() -> ExitCode {
    let m = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&m) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    let (name, sub) = m.subcommand().expect("subcommand required");
    let args = match &cli.cmd {
        Cmd::Validate(v) => v.common.clone(),
        Cmd::Apply(a)
        | Cmd::Plan(a)
        | Cmd::Down(a)
        | Cmd::Run(a)
        | Cmd::Status(a)
        | Cmd::Pause(a)
        | Cmd::Resume(a)
        | Cmd::Adopt(a)
        | Cmd::Configured(a) => a.clone(),
        Cmd::Doctor(a) => a.common_args(),
    };
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let fmt = tracing_subscriber::fmt().with_writer(std::io::stderr);
    let fmt = fmt.with_ansi(false);
    if journald {
        // The journal stamps each line itself.
        fmt.without_time().with_env_filter(log_filter(name)).init();
    } else {
        fmt.with_env_filter(log_filter(name)).init();
    }
    if name == "configured" {
        return configured(&args.node, sub);
    }
    let cfg = match load_config(&args.node, sub, name == "run") {
        Ok(c) => c,
        Err(e) if name == "run" && overlay_agent::instance::imds_was_unreachable() => {
            // Not bad input: IMDS may answer later (boot). Exit 1 so systemd restarts.
            eprintln!("overlayd: {e}");
            eprintln!(
                "overlayd: instance metadata unreachable; nothing was changed (exit 1: retried)"
            );
            return ExitCode::from(1);
        }
        Err(e) => return fail(&AgentError::Config(e)),
    };
    for w in &cfg.warnings {
        eprintln!("overlayd: warning: {w}");
    }
    if let Cmd::Validate(v) = &cli.cmd {
        if v.explain {
            // --json keeps stdout one JSON document
            if v.common.json {
                eprint!("{}", config::explain(&cfg));
            } else {
                print!("{}", config::explain(&cfg));
            }
        }
    }
    let rt = runtime();
    if name == "run" {
        let over = overrides(sub);
        let node = args.node.clone();
        let opts = overlay_agent::daemon::RunOptions {
            config_loader: std::sync::Arc::new(move || load_config_with(&node, &over)),
        };
        return match rt.block_on(overlay_agent::daemon::run(cfg, opts)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        };
    }
    if matches!(name, "status" | "pause" | "resume") {
        return rt.block_on(control(name, &cfg, args.json));
    }
    rt.block_on(async move {
        let h = match overlay_agent::netlink::connect() {
            Ok(h) => h,
            Err(e) => return fail(&AgentError::setup("netlink socket", e)),
        };
        match name {
            "plan" | "validate" | "apply" => {
                // EC2 peer discovery, once: a failure leaves the flood list as it is.
                let discovered = if overlay_agent::peers::uses_ec2(&cfg) {
                    match overlay_agent::peers::discover_once(&cfg).await {
                        Ok(p) => Some(p),
                        Err(e) => {
                            eprintln!("overlayd: warning: peer discovery failed ({e}); the flood list is left as it is");
                            None
                        }
                    }
                } else {
                    None
                };
                let (d, o, p) = match apply::compute_with(&h, &cfg, None, discovered.as_ref()).await {
                    Ok(x) => x,
                    Err(e) => return fail(&e),
                };
                for w in &p.warnings {
                    eprintln!("overlayd: warning: {w}");
                }
                match name {
                    "validate" => {
                        if args.json {
                            println!("{}", serde_json::json!({"valid": true, "desired": d, "pending_ops": p.ops.len()}));
                        } else {
                            println!(
                                "configuration valid: role {} on underlay {}, {} {}, mtu {}{}",
                                d.role,
                                d.underlay,
                                d.bridge.name,
                                d.bridge.address,
                                d.bridge.mtu,
                                match (&d.vtep, &d.flood_list) {
                                    (Some(v), None) if d.evpn.is_some() => format!(
                                        ", {} vni {} port {}, BGP EVPN (FRR)",
                                        v.name, v.vni, v.port
                                    ),
                                    (Some(v), None) => format!(
                                        ", {} vni {} group {} port {}",
                                        v.name,
                                        v.vni,
                                        v.group.map(|g| g.to_string()).unwrap_or_default(),
                                        v.port
                                    ),
                                    (Some(v), Some(f)) => format!(
                                        ", {} vni {} port {}, unicast flooding to {}",
                                        v.name,
                                        v.vni,
                                        v.port,
                                        match &f.peers {
                                            Some(p) => format!("{} peer(s)", p.len()),
                                            None => "peers not known yet".into(),
                                        }
                                    ),
                                    (None, _) => String::new(),
                                }
                            );
                            println!("{} operation(s) pending (see `overlayd plan`)", p.ops.len());
                        }
                        ExitCode::SUCCESS
                    }
                    "plan" => {
                        print_ops(&p.ops, args.json, "ops", "no changes: the node is converged");
                        ExitCode::SUCCESS
                    }
                    _ => match apply::execute(&h, &p, &o, &cfg.state_dir).await {
                        Ok(done) => {
                            print_ops(&done, args.json, "changes", "no changes: the node is converged");
                            ExitCode::SUCCESS
                        }
                        Err((done, e)) => {
                            print_ops(&done, args.json, "changes", "no changes made");
                            fail(&e)
                        }
                    },
                }
            }
            "doctor" => {
                let Cmd::Doctor(a) = &cli.cmd else {
                    unreachable!("doctor subcommand")
                };
                doctor(&h, &cfg, args.json, a.igmp_query_interval).await
            }
            "adopt" => {
                let (o, p, rest) = match apply::compute_adopt(&h, &cfg).await {
                    Ok(x) => x,
                    Err(e) => return fail(&e),
                };
                match apply::execute(&h, &p, &o, &cfg.state_dir).await {
                    Ok(done) => {
                        print_ops(&done, args.json, "changes", "nothing to adopt: no device with a configured name lacks overlayd's mark");
                        if !args.json && !rest.is_empty() {
                            println!("`overlayd apply` would then:");
                            for op in &rest {
                                println!("             - {op}");
                            }
                        }
                        ExitCode::SUCCESS
                    }
                    Err((done, e)) => {
                        print_ops(&done, args.json, "changes", "no changes made");
                        fail(&e)
                    }
                }
            }
            "down" => {
                let (_o, p, _st) = match apply::compute_down(&h, &cfg).await {
                    Ok(x) => x,
                    Err(e) => return fail(&e),
                };
                for w in &p.warnings {
                    eprintln!("overlayd: warning: {w}");
                }
                let (done, errors) = apply::execute_all(&h, &p, &cfg.state_dir).await;
                print_ops(&done, args.json, "changes", "nothing to remove");
                if errors.is_empty() {
                    ExitCode::SUCCESS
                } else {
                    for e in &errors {
                        eprintln!("overlayd: error: {e}");
                    }
                    ExitCode::from(1)
                }
            }
            _ => unreachable!(),
        }
    })
}

async fn control(name: &str, cfg: &Config, json: bool) -> ExitCode {
    use overlay_agent::daemon::control_request;
    let reply = control_request(&cfg.control_socket, name).await;
    match (name, reply) {
        ("status", Ok(v)) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({"daemon": "running", "status": v})
                    )
                    .unwrap()
                );
            } else {
                print_daemon_status(&v);
            }
            ExitCode::SUCCESS
        }
        ("status", Err(e)) => {
            // No daemon: read the kernel directly.
            let h = match overlay_agent::netlink::connect() {
                Ok(h) => h,
                Err(e) => return fail(&AgentError::setup("netlink socket", e)),
            };
            match apply::compute(&h, cfg).await {
                Ok((d, _o, p)) => {
                    if json {
                        let v = serde_json::json!({"daemon": "not running", "desired": d, "guest_mtu": overlay_agent::desired::guest_mtu(&d), "pending": p.ops, "converged": p.ops.is_empty()});
                        println!("{}", serde_json::to_string_pretty(&v).unwrap());
                    } else {
                        println!(
                            "daemon:    not running ({}: {e})",
                            cfg.control_socket.display()
                        );
                        print_desired(&d);
                        if p.ops.is_empty() {
                            println!("state:     converged (kernel matches the configuration)");
                        } else {
                            println!(
                                "state:     {} difference(s) — `overlayd apply` would:",
                                p.ops.len()
                            );
                            for op in &p.ops {
                                println!("             - {op}");
                            }
                        }
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        (_, Ok(v)) => {
            if json {
                println!("{v}");
            } else {
                println!("overlayd {}d", name);
            }
            ExitCode::SUCCESS
        }
        (_, Err(e)) => {
            eprintln!(
                "overlayd: error: no running daemon answers on {}: {e}",
                cfg.control_socket.display()
            );
            ExitCode::from(1)
        }
    }
}

fn print_desired(d: &overlay_agent::model::Desired) {
    println!("role:      {} (underlay {})", d.role, d.underlay);
    println!(
        "bridge:    {} {} mtu {} mac {}",
        d.bridge.name,
        d.bridge.address,
        d.bridge.mtu,
        overlay_agent::model::fmt_mac(&d.bridge.mac)
    );
    if let Some(v) = &d.vtep {
        println!(
            "vtep:      {} vni {} {} dstport {} dev {}",
            v.name,
            v.vni,
            match (v.group, v.local) {
                (Some(g), _) => format!("group {g}"),
                (None, Some(l)) => format!("local {l} nolearning, neigh_suppress (BGP EVPN)"),
                (None, None) => "unicast flooding".to_string(),
            },
            v.port,
            v.underlay
        );
    }
    if let Some(f) = &d.flood_list {
        match &f.peers {
            Some(p) => println!(
                "peers:     {} ({})",
                p.len(),
                p.iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => println!("peers:     not known yet (EC2 discovery has not answered)"),
        }
    }
    if let Some(e) = &d.evpn {
        println!(
            "evpn:      AS {} {}, peers {} (FRR {}, {})",
            e.asn,
            if e.reflector {
                format!(
                    "route reflector for {}",
                    e.listen
                        .iter()
                        .map(|n| n.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            } else {
                "client".to_string()
            },
            if e.reflectors.is_empty() {
                "none".to_string()
            } else {
                e.reflectors
                    .iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            match e.frr {
                overlay_agent::config::FrrMode::Systemd => "frr.service",
                overlay_agent::config::FrrMode::Spawn => "spawned",
            },
            e.frr_dir
        );
    }
    if let Some(m) = d.gateway_mode {
        println!("gateway:   mode {m}");
    }
    for r in &d.rules {
        println!(
            "rule:      {}: from {} lookup {}",
            r.priority, r.from, r.table
        );
    }
    for r in &d.routes {
        let fallback = if r.fallback {
            " (only while the node has no default route of its own)"
        } else {
            ""
        };
        println!("route:     {}{fallback}", r.describe());
    }
    if let Some(g) = overlay_agent::desired::guest_mtu(d) {
        println!(
            "guest mtu: {g} (CloudStack guest VXLAN on {}: {} - 50)",
            d.bridge.name, d.bridge.mtu
        );
        if g < 1500 {
            println!(
                "warning:   guest networks get MTU {g} < 1500: give guests MTU {g} (CloudStack \
                 network offering / DHCP option 26), or an underlay with jumbo frames (EC2: 9001)"
            );
        }
    }
    if let Some(n) = &d.nat {
        println!(
            "nat:       masquerade {} out of {} ({} exceptions)",
            n.overlay,
            n.underlay,
            n.exceptions.len()
        );
    }
}

fn print_daemon_status(v: &serde_json::Value) {
    let g = |k: &str| v.get(k).cloned().unwrap_or(serde_json::Value::Null);
    println!(
        "daemon:    running (pid {}){}",
        g("pid"),
        if g("paused") == true { ", PAUSED" } else { "" }
    );
    if let Some(d) = v
        .get("desired")
        .and_then(|d| serde_json::from_value::<overlay_agent::model::Desired>(d.clone()).ok())
    {
        print_desired(&d);
    }
    println!(
        "state:     {}; {} reconciles, {} repairs",
        if g("converged") == true {
            "converged"
        } else {
            "NOT converged"
        },
        g("reconciles"),
        g("repairs")
    );
    if let Some(p) = v.get("peers").filter(|p| !p.is_null()) {
        println!(
            "discovery: {} — {} peer(s) in force, {} refreshes, {} failures{}",
            p["discovery"].as_str().unwrap_or("?"),
            p["count"]
                .as_u64()
                .map(|n| n.to_string())
                .unwrap_or_else(|| "no".into()),
            p["refreshes"],
            p["failures"],
            p["last_error"]
                .as_str()
                .map(|e| format!("; FAILING (last good peers kept): {e}"))
                .unwrap_or_default()
        );
    }
    if let Some(e) = v.get("evpn").filter(|e| !e.is_null()) {
        println!(
            "bgp:       {}/{} sessions up{}; vni count {}, {} remote VTEPs, {} local + {} remote MACs; FRR pids {}, {} restarts{}",
            e["sessions_up"],
            e["sessions"],
            e["down"]
                .as_array()
                .filter(|d| !d.is_empty())
                .map(|d| format!(
                    " (down: {})",
                    d.iter()
                        .filter_map(|x| x.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
                .unwrap_or_default(),
            e["vnis"],
            e["remote_vteps"],
            e["local_macs"],
            e["remote_macs"],
            e["frr_pids"],
            e["frr_restarts"],
            e["error"]
                .as_str()
                .map(|x| format!("; ERROR: {x}"))
                .unwrap_or_default()
        );
    }
    if let Some(q) = v.get("igmp_queries").filter(|q| !q.is_null()) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|t| t.as_millis() as u64)
            .unwrap_or(0);
        println!(
            "igmp:      {} queries heard on {}{}",
            q["count"],
            q["device"].as_str().unwrap_or("?"),
            q["last_unix_ms"]
                .as_u64()
                .map(|t| format!(
                    ", the last {} s ago from {}",
                    now.saturating_sub(t) / 1000,
                    q["last_from"].as_str().unwrap_or("?")
                ))
                .unwrap_or_else(|| " (none yet)".into())
        );
    }
    for (label, key) in [("last:", "last"), ("changed:", "last_change")] {
        if let Some(l) = v.get(key).filter(|l| !l.is_null()) {
            println!(
                "{label:<10} {} ({} µs, trigger {}){}",
                l["at_unix_ms"],
                l["duration_us"],
                l["trigger"],
                l["error"]
                    .as_str()
                    .map(|e| format!(" error: {e}"))
                    .unwrap_or_default()
            );
            for c in l["changes"].as_array().into_iter().flatten() {
                println!("             - {}", c.as_str().unwrap_or_default());
            }
        }
    }
}

fn log_filter(cmd: &str) -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_env("OVERLAYD_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(if cmd == "run" { "info" } else { "warn" })
    })
}
