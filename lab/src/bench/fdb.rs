//! 5. Unicast flood list: 1,000 peers in one batch, one-peer change on a 1,000-peer FDB.
//!
//! 1,000 all-zeros FDB entries programmed from empty in one netlink batch, and a one-peer
//! change on a 1,000-peer FDB; through overlayd's own library code
//! (`overlay_agent::netlink::set_flood_list`) and end to end through `overlayd apply`.

use super::*;
use overlay_agent::netlink as anl;
use std::collections::BTreeSet;

// ------------------------------------------------------------------ 5. fdb

/// Peers in the flood list (the size).
pub(super) const PEERS: usize = 1000;
const VTEP: &str = "ethvxlan0";
/// The targets (judged on the p90 of the library batch).
const TARGET_ADD: f64 = 100.0;
const TARGET_CHANGE: f64 = 5.0;
const UNDERLAY: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 10);
const UNDERLAY_GW: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// Addresses per third octet: .1 ... .250 (never .0 or .255).
const PER_OCTET: usize = 250;
/// Third octets 1..SPARE_BASE hold the peers, SPARE_BASE.. the spares.
const SPARE_BASE: usize = 128;
/// At most this many peers (and as many spares) fit the scheme.
pub(super) const MAX_PEERS: usize = (SPARE_BASE - 1) * PER_OCTET;

fn addr(third: usize, k: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, third as u8, (1 + k % PER_OCTET) as u8)
}

/// The `k`-th bench peer (0-based), an underlay address in the node's 10.77.0.0/16:
/// 10.77.1.1 … 10.77.1.250, 10.77.2.1 …; never the node's own 10.77.0.0/24.
pub(super) fn peer(k: usize) -> Ipv4Addr {
    assert!(k < MAX_PEERS, "peer index {k} out of range");
    addr(1 + k / PER_OCTET, k)
}

/// The `k`-th spare: an address that is never one of the peers (10.77.128.1 …), the
/// newcomer of a one-peer change.
pub(super) fn spare(k: usize) -> Ipv4Addr {
    assert!(k < MAX_PEERS, "spare index {k} out of range");
    addr(SPARE_BASE + k / PER_OCTET, k)
}

/// The first `n` peers.
pub(super) fn peers(n: usize) -> Vec<Ipv4Addr> {
    (0..n).map(peer).collect()
}

/// The `--peer` value: comma-separated.
pub(super) fn peer_arg(v: &[Ipv4Addr]) -> String {
    v.iter()
        .map(Ipv4Addr::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// `bridge -batch` input appending the all-zeros entry for every peer (what overlayd's batch
/// does, one request and ack at a time).
pub(super) fn bridge_batch_lines(peers: &[Ipv4Addr]) -> String {
    peers
        .iter()
        .map(|p| format!("fdb append 00:00:00:00:00:00 dev {VTEP} dst {p}\n"))
        .collect()
}

/// `peers` with the `k`-th one replaced by the `k`-th spare (the one-peer change).
pub(super) fn swapped(peers: &[Ipv4Addr], k: usize) -> Vec<Ipv4Addr> {
    let mut v = peers.to_vec();
    v[k] = spare(k);
    v
}

fn od_unicast_args(dir: &Path, peers: &[Ipv4Addr]) -> Vec<String> {
    let d = |f: &str| dir.join(f).to_string_lossy().into_owned();
    let mut v: Vec<String> = [
        "apply",
        "--config",
        &d("overlayd.toml"),
        "--role",
        "host",
        "--underlay",
        "eth0",
        "--address",
        "10.101.0.10/16",
        "--gateway",
        "10.101.0.1",
        "--vni",
        "100",
        "--flood",
        "unicast",
        "--state-dir",
        &d("state"),
        "--hosts-file",
        &d("hosts"),
        "--resolv-conf",
        &d("resolv.conf"),
        "--control-socket",
        &d("ctl.sock"),
        "--metrics-address",
        "off",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push("--peer".into());
    v.push(peer_arg(peers));
    v
}

/// One timed `overlayd apply` (spawn to exit), entered by setns like converge's primary variant.
fn od_apply(ns: &str, overlayd: &Path, dir: &Path, peers: &[Ipv4Addr]) -> Result<f64> {
    let mut c = in_ns_cmd(ns, overlayd)?;
    c.args(od_unicast_args(dir, peers));
    strip_overlayd_env(&mut c);
    let t0 = Instant::now();
    spawn_checked(&mut c, None)?;
    Ok(ms(t0.elapsed()))
}

/// The library side, on the namespace's thread: a current-thread runtime (as overlayd's) with
/// one rtnetlink connection, and the VTEP's index looked up once (the executor seeds it from its
/// observation, so a batch costs no lookup).
struct Lib {
    rt: tokio::runtime::Runtime,
    nl: anl::Nl,
    index: u32,
}

impl Lib {
    fn new() -> Result<Lib> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("tokio runtime")?;
        let nl = rt.block_on(async {
            let h = anl::connect().context("netlink socket")?;
            Ok::<_, anyhow::Error>(anl::Nl::new(h))
        })?;
        let index = rt.block_on(nl.index(VTEP))?;
        Ok(Lib { rt, nl, index })
    }

    /// One `set_flood_list` batch, timed (ms).
    fn set(&self, add: &[Ipv4Addr], remove: &[Ipv4Addr]) -> Result<f64> {
        let t0 = Instant::now();
        self.rt
            .block_on(anl::set_flood_list(&self.nl, VTEP, add, remove))?;
        Ok(ms(t0.elapsed()))
    }

    /// The flood list, and how long its dump took (ms).
    fn dump(&self) -> Result<(BTreeSet<Ipv4Addr>, f64)> {
        let t0 = Instant::now();
        let s = self
            .rt
            .block_on(anl::dump_flood_list(&self.nl, self.index))?;
        Ok((s, ms(t0.elapsed())))
    }

    /// The flood list is exactly `want` and the VTEP is still the same device (nobody
    /// re-created it: an empty FDB would make programming look cheap).
    fn expect(&self, want: &[Ipv4Addr], what: &str) -> Result<f64> {
        let (have, t) = self.dump()?;
        let want: BTreeSet<Ipv4Addr> = want.iter().copied().collect();
        if have != want {
            let missing = want.difference(&have).count();
            let extra = have.difference(&want).count();
            bail!(
                "after {what}: flood list has {} entries, want {} ({missing} missing, {extra} \
                 unexpected)",
                have.len(),
                want.len()
            );
        }
        let now = nl::ifindex(VTEP)?;
        if now != self.index {
            bail!(
                "after {what}: {VTEP} was re-created (ifindex {} -> {now})",
                self.index
            );
        }
        Ok(t)
    }
}

#[derive(Default)]
struct Samples {
    lib_add: Vec<f64>,
    lib_change: Vec<f64>,
    lib_flush: Vec<f64>,
    dump: Vec<f64>,
    cli_add: Vec<f64>,
    cli_converged: Vec<f64>,
    cli_change: Vec<f64>,
    bridge_batch: Vec<f64>,
    od_version: Vec<f64>,
}

pub(super) fn fdb(ctx: &Ctx, sec: &mut Section) -> Result<()> {
    let p = format!("{}f", ctx.prefix);
    let rd = node_cmd::run_dir(&p);
    let dir = rd.join("node");
    std::fs::create_dir_all(&dir)?;
    let ul = format!("{p}-ul");
    let ns = format!("{p}-node");
    sys::create_namespaces(&[ul.clone(), ns.clone()])?;
    let ul_file = std::fs::File::open(Path::new(sys::NETNS_DIR).join(&ul))?;
    nl::in_netns(&ns, || {
        let mut n = Nl::new()?;
        n.link_up("lo")?;
        n.add_veth("eth0", None, UNDERLAY_MTU, "f0", &ul_file)?;
        n.add_addr("eth0", UNDERLAY, 16)?;
        n.link_up("eth0")?;
        // an EC2 instance's DHCP default route
        n.add_default_route(UNDERLAY_GW, crate::topo::RTPROT_DHCP)?;
        Ok(())
    })
    .with_context(|| format!("underlay of {ns}"))?;
    nl::in_netns(&ul, || {
        let mut n = Nl::new()?;
        n.link_up("lo")?;
        n.link_up("f0")?;
        Ok(())
    })?;
    fresh_node_files(&dir)?;
    let all = peers(PEERS);
    // cold converge with the 1,000 peers: bridge, groupless VTEP, flood list (and a warm
    // page cache for the timed runs)
    let cold = od_apply(&ns, &ctx.overlayd, &dir, &all).context("first overlayd apply")?;
    let runs = ctx.a.fdb_runs;
    let od = ctx.overlayd.clone();
    let have_bridge = Command::new("bridge")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let batch = bridge_batch_lines(&all);
    let s: Samples = nl::in_netns(&ns, || {
        let lib = Lib::new()?;
        lib.expect(&all, "the first overlayd apply")?;
        lib.set(&[], &all)?;
        lib.expect(&[], "the first flush")?;
        let mut s = Samples::default();
        for i in 0..runs {
            // a different peer leaves each run (spread over the list)
            let k = (i * 337) % PEERS;
            let changed = swapped(&all, k);
            let (old, new) = (all[k], changed[k]);
            // (a) library: 1,000 adds from empty, one batch
            s.lib_add.push(lib.set(&all, &[])?);
            s.dump.push(lib.expect(&all, "set_flood_list add 1000")?);
            // (c) library: one peer leaves, one arrives (2 ops), and back
            s.lib_change.push(lib.set(&[new], &[old])?);
            lib.expect(&changed, "set_flood_list one-peer change")?;
            s.lib_change.push(lib.set(&[old], &[new])?);
            lib.expect(&all, "set_flood_list one-peer change back")?;
            // flush, behind overlayd's back (its state still owns the peers: fine, it plans
            // from the kernel's dump)
            s.lib_flush.push(lib.set(&[], &all)?);
            lib.expect(&[], "set_flood_list remove 1000")?;
            // (b) overlayd apply: VTEP there, flood list empty -> 1,000 adds
            s.cli_add
                .push(od_apply(&ns, &od, &dir, &all).context("overlayd apply, 1000 peers")?);
            lib.expect(&all, "overlayd apply from an empty flood list")?;
            // converged: the dump of 1,000 entries and the plan, nothing to do
            s.cli_converged
                .push(od_apply(&ns, &od, &dir, &all).context("overlayd apply, converged")?);
            lib.expect(&all, "overlayd apply, converged")?;
            // (c) overlayd apply: one-peer change, and back
            s.cli_change
                .push(od_apply(&ns, &od, &dir, &changed).context("overlayd apply, change")?);
            lib.expect(&changed, "overlayd apply, one-peer change")?;
            s.cli_change
                .push(od_apply(&ns, &od, &dir, &all).context("overlayd apply, change back")?);
            lib.expect(&all, "overlayd apply, one-peer change back")?;
            lib.set(&[], &all)?;
            lib.expect(&[], "flush")?;
            // floor of every apply row: start and exit of the same binary, same spawn path
            let mut c = in_ns_cmd(&ns, &od)?;
            c.arg("--version");
            let t0 = Instant::now();
            spawn_checked(&mut c, None)?;
            s.od_version.push(ms(t0.elapsed()));
            // reference: the same 1,000 appends with iproute2, one process
            if have_bridge {
                let mut c = Command::new("bridge");
                c.args(["-n", ns.as_str(), "-batch", "-"]);
                let t0 = Instant::now();
                spawn_checked(&mut c, Some(&batch))?;
                s.bridge_batch.push(ms(t0.elapsed()));
                lib.expect(&all, "bridge -batch")?;
                lib.set(&[], &all)?;
                lib.expect(&[], "flush")?;
            }
        }
        Ok(s)
    })?;
    let (a, c) = (summarize(&s.lib_add), summarize(&s.lib_change));
    let verdict = |s: Summary, target: f64| if s.p90 <= target { "PASS" } else { "MISS" };
    let mut t = Table::new(&[
        &format!("measure ({PEERS} peers)"),
        "n",
        "median ms",
        "p90 ms",
        "min ms",
        "max ms",
        "target",
        "",
    ]);
    let row = |t: &mut Table, name: &str, s: Summary, target: Option<f64>| {
        t.row(vec![
            name.into(),
            s.n.to_string(),
            f2(s.p50),
            f2(s.p90),
            f2(s.min),
            f2(s.max),
            target.map_or("-".into(), |x| format!("p90 <= {x:.0} ms")),
            target.map_or(String::new(), |x| verdict(s, x).into()),
        ]);
    };
    row(
        &mut t,
        "(a) set_flood_list: add 1000 from empty, one batch",
        a,
        Some(TARGET_ADD),
    );
    row(
        &mut t,
        "(b) overlayd apply: VTEP there, empty flood list -> 1000 peers",
        summarize(&s.cli_add),
        None,
    );
    row(
        &mut t,
        "(c) set_flood_list: one-peer change on 1000 (1 del + 1 add)",
        c,
        Some(TARGET_CHANGE),
    );
    row(
        &mut t,
        "(c) overlayd apply: one-peer change on 1000",
        summarize(&s.cli_change),
        None,
    );
    row(
        &mut t,
        "  overlayd apply: 1000 peers, converged (no changes)",
        summarize(&s.cli_converged),
        None,
    );
    row(
        &mut t,
        "  floor: overlayd --version (same spawn, setns)",
        summarize(&s.od_version),
        None,
    );
    row(
        &mut t,
        "  dump_flood_list of 1000 entries",
        summarize(&s.dump),
        None,
    );
    row(
        &mut t,
        "  set_flood_list: remove 1000, one batch",
        summarize(&s.lib_flush),
        None,
    );
    if have_bridge {
        row(
            &mut t,
            "  reference: bridge -n NS -batch - (1000 fdb append lines)",
            summarize(&s.bridge_batch),
            None,
        );
    } else {
        sec.notes
            .push("`bridge` (iproute2) not installed: no bridge -batch reference".into());
    }
    sec.tables.push(t);
    let result = |s: Summary| {
        format!(
            "median {:.2}, p90 {:.2}, max {:.2} ms over {} runs",
            s.p50, s.p90, s.max, s.n
        )
    };
    sec.check(
        &format!("{PEERS} peers from empty in one batch p90 <= {TARGET_ADD:.0} ms"),
        result(a),
        a.p90 <= TARGET_ADD,
        (a.p90 > TARGET_ADD).then(|| {
            format!(
                "the batch is {PEERS} RTM_NEWNEIGH requests written before the first ack is \
                 read; the kernel appends each remote to the one all-zeros entry's list (a \
                 linear search per append); overlayd apply end to end: median {:.2} ms",
                summarize(&s.cli_add).p50
            )
        }),
    );
    sec.check(
        &format!("one-peer change on {PEERS} peers (one batch) p90 <= {TARGET_CHANGE:.0} ms"),
        result(c),
        c.p90 <= TARGET_CHANGE,
        (c.p90 > TARGET_CHANGE).then(|| {
            "2 requests (RTM_DELNEIGH + RTM_NEWNEIGH) in one batch; see the dump row for what \
             reading the list costs"
                .to_string()
        }),
    );
    sec.notes.push(format!(
        "node {ns}: eth0 {UNDERLAY}/16 (veth, MTU {UNDERLAY_MTU}, DHCP default via \
         {UNDERLAY_GW}); peers {} … {} ({PEERS}), newcomers {} …; the VTEP {VTEP} (no \
         group) made by a first `overlayd apply --flood unicast` with the {PEERS} peers \
         ({cold:.1} ms, cold)",
        all[0],
        all[PEERS - 1],
        spare(0)
    ));
    sec.notes.push(format!(
        "{runs} rounds, each: (a) set_flood_list add {PEERS} from empty; (c) one peer out, one \
         in, and back (2 samples per round); remove all; (b) overlayd apply with the {PEERS} \
         peers; apply again (converged); (c) apply with one peer swapped, and back; remove all; `overlayd --version` (floor); \
         `bridge -batch` of the same {PEERS} appends (reference); remove all. The library calls (overlay_agent::netlink, this binary's build of it) run on a \
         current-thread tokio runtime in the node's namespace with the VTEP's ifindex known \
         (as the executor has it); every step is verified outside the timed window (dump = the \
         expected set, same VTEP ifindex)"
    ));
    sec.notes.push(
        "overlayd apply is timed from spawn to exit, entered by setns (stdout to /dev/null): \
         process start, config (1000 --peer values), kernel dumps incl. the flood list, plan, \
         the batch, state file"
            .into(),
    );
    sec.data = json!({
        "peers": PEERS,
        "runs": runs,
        "cold_apply_ms": cold,
        "targets_ms": {"lib_add_p90": TARGET_ADD, "lib_change_p90": TARGET_CHANGE},
        "lib_add_ms": a.to_json(),
        "lib_change_ms": c.to_json(),
        "lib_remove_all_ms": summarize(&s.lib_flush).to_json(),
        "dump_ms": summarize(&s.dump).to_json(),
        "cli_add_ms": summarize(&s.cli_add).to_json(),
        "cli_converged_ms": summarize(&s.cli_converged).to_json(),
        "cli_change_ms": summarize(&s.cli_change).to_json(),
        "samples_lib_add_ms": s.lib_add,
        "samples_lib_change_ms": s.lib_change,
        "samples_lib_remove_all_ms": s.lib_flush,
        "samples_dump_ms": s.dump,
        "samples_cli_add_ms": s.cli_add,
        "samples_cli_converged_ms": s.cli_converged,
        "samples_cli_change_ms": s.cli_change,
        "bridge_batch_ms": summarize(&s.bridge_batch).to_json(),
        "overlayd_version_ms": summarize(&s.od_version).to_json(),
        "samples_overlayd_version_ms": s.od_version,
        "samples_bridge_batch_ms": s.bridge_batch,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_distinct_unicast_and_off_the_node() {
        let v = peers(PEERS);
        assert_eq!(v[0], Ipv4Addr::new(10, 77, 1, 1));
        assert_eq!(v[249], Ipv4Addr::new(10, 77, 1, 250));
        assert_eq!(v[250], Ipv4Addr::new(10, 77, 2, 1));
        assert_eq!(v[999], Ipv4Addr::new(10, 77, 4, 250));
        let set: BTreeSet<Ipv4Addr> = v.iter().copied().collect();
        assert_eq!(set.len(), PEERS);
        for a in &v {
            let o = a.octets();
            assert_eq!((o[0], o[1]), (10, 77));
            assert!(o[2] != 0 && o[3] != 0 && o[3] != 255, "{a}");
        }
        assert!(!set.contains(&UNDERLAY) && !set.contains(&UNDERLAY_GW));
        // the largest index still fits, and spares never collide with peers
        assert_eq!(peer(MAX_PEERS - 1), Ipv4Addr::new(10, 77, 127, 250));
        assert_eq!(spare(0), Ipv4Addr::new(10, 77, 128, 1));
        assert_eq!(spare(MAX_PEERS - 1), Ipv4Addr::new(10, 77, 254, 250));
        assert!((0..PEERS).all(|k| !set.contains(&spare(k))));
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn peer_index_is_bounded() {
        peer(MAX_PEERS);
    }

    #[test]
    fn one_peer_change_swaps_exactly_one() {
        let v = peers(5);
        let w = swapped(&v, 3);
        assert_eq!(w.len(), 5);
        assert_eq!(&w[..3], &v[..3]);
        assert_eq!(w[3], spare(3));
        assert_eq!(w[4], v[4]);
        assert_eq!(
            peer_arg(&v[..3]),
            "10.77.1.1,10.77.1.2,10.77.1.3".to_string()
        );
        assert_eq!(peer_arg(&[]), "");
        assert_eq!(
            bridge_batch_lines(&v[..2]),
            "fdb append 00:00:00:00:00:00 dev ethvxlan0 dst 10.77.1.1\n\
             fdb append 00:00:00:00:00:00 dev ethvxlan0 dst 10.77.1.2\n"
        );
    }
}
