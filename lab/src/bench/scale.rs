//! 4. Scale: `overlay-lab up --hosts N --daemon`, time to full reachability, daemon RSS.

use super::*;

// ------------------------------------------------------------------ 4. scale

/// Phases of one `up --json` run, as "name seconds" pairs.
fn phases(v: &Value) -> Vec<(String, f64)> {
    v["timings"]["phases"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["phase"].as_str().unwrap_or("?").to_string(),
                p["seconds"].as_f64().unwrap_or(f64::NAN),
            )
        })
        .collect()
}

pub(super) fn scale(ctx: &Ctx, sec: &mut Section) -> Result<()> {
    let p = format!("{}s", ctx.prefix);
    let reps = ctx.a.scale_repeats;
    let mut t = Table::new(&[
        "hosts",
        "namespaces",
        "runs",
        "full reach. median s",
        "min s",
        "max s",
        "matrix (last run)",
        "daemons",
        "RSS median MiB",
        "RSS max MiB",
    ]);
    let mut rows = Vec::new();
    let mut worst_rss = 0.0f64;
    let mut res = Ok(());
    'sizes: for &n in &ctx.a.scale {
        let mut reach_s = Vec::new();
        let mut rss_all: Vec<f64> = Vec::new();
        let mut runs = Vec::new();
        let (mut nsc, mut mode, mut daemons) = (String::new(), String::new(), String::new());
        for rep in 0..reps {
            let waited = wait_netns_settled(Duration::from_secs(60));
            let r = (|| -> Result<()> {
                let (v, wall, ok) = lab_up(ctx, &p, n, 2)?;
                let reach = v["timings"]["reachable_seconds"].as_f64();
                mode = format!(
                    "{} {}/{}{}",
                    v["reachability"]["mode"].as_str().unwrap_or("?"),
                    v["reachability"]["ok"],
                    v["reachability"]["pairs_probed"],
                    if ok { "" } else { " INCOMPLETE" }
                );
                nsc = v["namespaces"]
                    .as_array()
                    .map(|a| a.len().to_string())
                    .unwrap_or_default();
                let ds = bench_daemon::daemons_of(&p);
                daemons = format!("{}/{}", ds.len(), n + 2);
                let rss: Vec<f64> = ds
                    .iter()
                    .filter_map(|(pid, _)| bench_daemon::rss_kib(*pid))
                    .map(|k| k as f64 / 1024.0)
                    .collect();
                rss_all.extend(&rss);
                reach_s.push(reach.unwrap_or(f64::INFINITY));
                let mut slow: Vec<&Value> = v["reachability"]["results"]
                    .as_array()
                    .map(|a| a.iter().collect())
                    .unwrap_or_default();
                slow.sort_by(|a, b| {
                    b["ms"]
                        .as_f64()
                        .unwrap_or(f64::INFINITY)
                        .total_cmp(&a["ms"].as_f64().unwrap_or(f64::INFINITY))
                });
                slow.truncate(3);
                runs.push(json!({
                    "run": rep + 1, "up_wall_s": wall, "full_reachability_s": reach, "all_ok": ok,
                    "waited_for_netns_cleanup_s": waited,
                    "reachability_mode": v["reachability"]["mode"],
                    "pairs_probed": v["reachability"]["pairs_probed"],
                    "slowest_pairs": slow,
                    "daemons": ds.len(), "rss_mib": summarize(&rss).to_json(),
                    "phases": v["timings"]["phases"],
                }));
                let ph: Vec<String> = phases(&v)
                    .iter()
                    .map(|(k, s)| format!("{k} {s:.2}"))
                    .collect();
                eprintln!(
                    "overlay-lab bench: scale {n} hosts run {}: full reachability {} s ({})",
                    rep + 1,
                    reach.map(f2).unwrap_or_else(|| "-".into()),
                    ph.join(", ")
                );
                Ok(())
            })();
            lab::teardown(&p)?;
            if let Err(e) = r {
                res = Err(e.context(format!("scale with {n} hosts")));
                break 'sizes;
            }
        }
        let sr = summarize(&reach_s);
        let sm = summarize(&rss_all);
        worst_rss = worst_rss.max(sm.max);
        t.row(vec![
            n.to_string(),
            nsc.clone(),
            reach_s.len().to_string(),
            f2(sr.p50),
            f2(sr.min),
            f2(sr.max),
            mode.clone(),
            daemons.clone(),
            f1(sm.p50),
            f1(sm.max),
        ]);
        if n == 250 {
            sec.check(
                "250 hosts: full reachability <= 10 s (median of runs)",
                format!(
                    "median {:.2} s (min {:.2}, max {:.2}, {} runs)",
                    sr.p50, sr.min, sr.max, sr.n
                ),
                sr.p50 <= 10.0,
                (sr.p50 > 10.0).then(|| {
                    "see the phases of each run (stderr, or `data` in --json) for where the time \
                     goes"
                        .into()
                }),
            );
        }
        rows.push(json!({"hosts": n, "full_reachability_s": sr.to_json(),
            "rss_mib": sm.to_json(), "runs": runs}));
    }
    sec.tables.push(t);
    if !rows.is_empty() {
        sec.check(
            "per-daemon RSS <= 8 MiB",
            format!("max {worst_rss:.1} MiB over all sizes and runs"),
            worst_rss <= 8.0,
            (worst_rss > 8.0).then(|| "VmRSS of an overlayd run daemon above 8 MiB".into()),
        );
    }
    sec.notes.push(format!(
        "each size, {reps} runs: `overlay-lab up --hosts N --daemon --json` (2 VMs per host; \
         `overlayd run` on every node, waited for until each reports converged over its control \
         socket), full reachability = `timings.reachable_seconds` of that run (sampled matrix \
         for big labs), then VmRSS of every overlayd daemon from /proc/PID/status, then down; \
         before each run the bench waits until the kernel has freed the namespaces of the \
         previous one (creating a namespace takes < 20 ms again)"
    ));
    sec.data = json!({"sizes": rows});
    res
}
