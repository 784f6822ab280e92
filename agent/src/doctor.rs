//! `overlayd doctor`: name the fault on this node before the operator reaches for tcpdump.
//!
//! Pure: [`diagnose`] turns the desired state (the configuration's) and the facts read from
//! the kernel ([`Facts`]: links, addresses, routes, sysctls, `/proc/net/igmp`, the VTEP's
//! forwarding database) into checks, each with a stable id, a verdict, its evidence and the
//! fix. Reading the facts is the caller's (read-only: dumps and /proc reads, never a change).
//! A check that cannot decide from what is read now (no history) says `unknown`.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use serde::Serialize;

use crate::model::{Desired, Observed};

/// The verdict of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ok,
    Unknown,
    Warn,
    Fail,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Unknown => "unknown",
            Verdict::Warn => "warn",
            Verdict::Fail => "fail",
        }
    }
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable id (documented in docs/operations.md; scripts match on it).
    pub id: &'static str,
    pub verdict: Verdict,
    /// One line: what was found.
    pub summary: String,
    /// What it was decided from (values as read).
    pub evidence: Vec<String>,
    /// What to do about it (None when ok).
    pub fix: Option<String>,
}

/// One device of `/proc/net/igmp`: its IGMP mode (the querier version it reports with) and
/// the groups joined on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgmpDevice {
    pub name: String,
    /// 1, 2 or 3 (the `V1`/`V2`/`V3` column: the version of the reports it sends).
    pub version: u8,
    pub groups: BTreeSet<Ipv4Addr>,
}

/// Parses `/proc/net/igmp`. A device line is `Idx Device : Count Querier`, each group line
/// below it `Group Users Timer Reporter`, the group as the kernel prints a network-order
/// address read as a native integer (`%08X`), hence `to_ne_bytes`.
pub fn parse_proc_igmp(text: &str) -> Vec<IgmpDevice> {
    let mut out: Vec<IgmpDevice> = Vec::new();
    for line in text.lines().skip(1) {
        let indented = line.starts_with(char::is_whitespace);
        let w: Vec<&str> = line.split_whitespace().collect();
        if !indented && w.len() >= 5 && w[2] == ":" {
            let version = w[4]
                .strip_prefix('V')
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            out.push(IgmpDevice {
                name: w[1].to_string(),
                version,
                groups: BTreeSet::new(),
            });
        } else if indented && !w.is_empty() {
            if let (Some(dev), Ok(n)) = (out.last_mut(), u32::from_str_radix(w[0], 16)) {
                dev.groups.insert(Ipv4Addr::from(n.to_ne_bytes()));
            }
        }
    }
    out
}

/// What `diagnose` decides from, read from the kernel by the caller.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub observed: Observed,
    /// `/proc/net/igmp`, parsed.
    pub igmp: Vec<IgmpDevice>,
    /// The VTEP's FDB: remote VTEP addresses it has learned or was given (None: not read).
    pub remote_vteps: Option<BTreeSet<Ipv4Addr>>,
    /// Seconds since this node last saw an IGMP query on the underlay (None: no daemon
    /// remembers; the check is then unknown).
    pub last_query_age_secs: Option<u64>,
}

/// The TGW's multicast frames carry at most 8500 bytes: the VTEP's inner MTU + 50.
pub const TGW_MULTICAST_MTU: u32 = 8500;
/// A TGW asks every 2 minutes; two missed queries mean it does not ask this node at all.
pub const QUERY_INTERVAL_SECS: u64 = 120;
/// VXLAN's encapsulation on an IPv4 underlay.
pub const VXLAN_OVERHEAD: u32 = 50;

/// 224.0.0.0/24 (all-hosts and the like): joined by every interface, not counted by
/// `igmp_max_memberships`.
fn is_local_network_control(g: Ipv4Addr) -> bool {
    let o = g.octets();
    o[0] == 224 && o[1] == 0 && o[2] == 0
}

/// An optional value as text ("none" when absent).
fn shown<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "none".into())
}

fn sysctl<'a>(f: &'a Facts, key: &str) -> Option<&'a str> {
    f.observed
        .sysctls
        .get(key)
        .and_then(|v| v.as_deref())
        .map(str::trim)
}

fn check(
    id: &'static str,
    verdict: Verdict,
    summary: String,
    evidence: Vec<String>,
    fix: Option<&str>,
) -> Check {
    Check {
        id,
        verdict,
        summary,
        evidence,
        fix: if verdict == Verdict::Ok {
            None
        } else {
            fix.map(str::to_string)
        },
    }
}

/// Every check, in a fixed order.
pub fn diagnose(d: &Desired, f: &Facts) -> Vec<Check> {
    let mut v = vec![bridge(d, f), vtep(d, f), mtu(d, f)];
    let multicast = d.vtep.as_ref().and_then(|t| t.group);
    if let Some(group) = multicast {
        v.push(force_igmp_version(d, f));
        v.push(igmp_membership(d, f, group));
        v.push(igmp_queries(f));
    }
    v.push(igmp_max_memberships(f));
    v.push(remote_vteps(d, f));
    v.push(link_local_routes(d, f));
    v
}

fn bridge(d: &Desired, f: &Facts) -> Check {
    let b = &d.bridge;
    let Some(l) = f.observed.link(&b.name) else {
        return check(
            "bridge",
            Verdict::Fail,
            format!("bridge {} does not exist", b.name),
            vec![],
            Some("start overlayd (systemctl start overlayd) or run `overlayd apply`"),
        );
    };
    let mut problems = Vec::new();
    if l.kind.as_deref() != Some("bridge") {
        problems.push(format!(
            "is a {} device, not a bridge",
            l.kind.as_deref().unwrap_or("plain")
        ));
    }
    if !l.up {
        problems.push("is down".to_string());
    }
    let has_addr = f.observed.addrs_of(l.index).any(|a| a.addr == b.address);
    if !has_addr {
        problems.push(format!("lacks its address {}", b.address));
    }
    let evidence = vec![format!(
        "{}: kind {}, {}, mtu {}, addresses {}",
        l.name,
        l.kind.as_deref().unwrap_or("-"),
        if l.up { "up" } else { "down" },
        l.mtu,
        f.observed
            .addrs_of(l.index)
            .map(|a| a.addr.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    )];
    if problems.is_empty() {
        check(
            "bridge",
            Verdict::Ok,
            format!("{} up with {}", b.name, b.address),
            evidence,
            None,
        )
    } else {
        check(
            "bridge",
            Verdict::Fail,
            format!("{} {}", b.name, problems.join(", ")),
            evidence,
            Some("overlayd repairs this while it runs: check `systemctl status overlayd` and `overlayd plan`"),
        )
    }
}

fn vtep(d: &Desired, f: &Facts) -> Check {
    let Some(t) = &d.vtep else {
        return check(
            "vtep",
            Verdict::Ok,
            "no VTEP on this role".into(),
            vec![],
            None,
        );
    };
    let Some(l) = f.observed.link(&t.name) else {
        return check(
            "vtep",
            Verdict::Fail,
            format!("VTEP {} does not exist", t.name),
            vec![],
            Some("start overlayd (systemctl start overlayd) or run `overlayd apply`"),
        );
    };
    let mut problems = Vec::new();
    let x = l.vxlan.clone().unwrap_or_default();
    if l.kind.as_deref() != Some("vxlan") {
        problems.push("is not a vxlan device".to_string());
    }
    if x.vni != Some(t.vni) {
        problems.push(format!("VNI {}, want {}", shown(x.vni), t.vni));
    }
    if x.port != Some(t.port) {
        problems.push(format!("UDP port {}, want {}", shown(x.port), t.port));
    }
    if x.group != t.group {
        problems.push(format!("group {}, want {}", shown(x.group), shown(t.group)));
    }
    let underlay = f.observed.link(&t.underlay).map(|u| u.index);
    if x.dev != underlay {
        problems.push(format!("not bound to underlay {}", t.underlay));
    }
    let bridge = f.observed.link(&d.bridge.name).map(|b| b.index);
    if l.master.is_none() || l.master != bridge {
        problems.push(format!("not a port of {}", d.bridge.name));
    }
    if !l.up {
        problems.push("is down".to_string());
    }
    let name_of = |i: Option<u32>| {
        i.map(|i| {
            f.observed
                .link_by_index(i)
                .map(|l| l.name.clone())
                .unwrap_or_else(|| format!("index {i}"))
        })
    };
    let evidence = vec![format!(
        "{}: vni {}, port {}, group {}, underlay {}, master {}",
        l.name,
        shown(x.vni),
        shown(x.port),
        shown(x.group),
        shown(name_of(x.dev)),
        shown(name_of(l.master))
    )];
    if problems.is_empty() {
        check(
            "vtep",
            Verdict::Ok,
            format!(
                "{} (VNI {}, port {}) in {}",
                t.name, t.vni, t.port, d.bridge.name
            ),
            evidence,
            None,
        )
    } else {
        check(
            "vtep",
            Verdict::Fail,
            format!("{}: {}", t.name, problems.join("; ")),
            evidence,
            Some("overlayd repairs this while it runs; a device it does not own is refused: `overlayd plan` names it"),
        )
    }
}

fn mtu(d: &Desired, f: &Facts) -> Check {
    let (Some(b), Some(u)) = (
        f.observed.link(&d.bridge.name),
        f.observed.link(&d.underlay),
    ) else {
        return check(
            "mtu",
            Verdict::Unknown,
            "bridge or underlay missing: MTU not checked".into(),
            vec![],
            None,
        );
    };
    let evidence = vec![format!(
        "{} mtu {}, {} mtu {}",
        u.name, u.mtu, b.name, b.mtu
    )];
    let Some(t) = &d.vtep else {
        return check(
            "mtu",
            Verdict::Ok,
            format!("{} mtu {}", b.name, b.mtu),
            evidence,
            None,
        );
    };
    if b.mtu + VXLAN_OVERHEAD > u.mtu {
        return check(
            "mtu",
            Verdict::Fail,
            format!(
                "{} mtu {} needs an underlay of {} (VXLAN adds {VXLAN_OVERHEAD}); {} has {}: \
                 full-size frames are dropped",
                b.name,
                b.mtu,
                b.mtu + VXLAN_OVERHEAD,
                u.name,
                u.mtu
            ),
            evidence,
            Some("remove the mtu key (overlayd then takes the underlay's − 50) or lower it"),
        );
    }
    if t.group.is_some() && b.mtu + VXLAN_OVERHEAD > TGW_MULTICAST_MTU {
        return check(
            "mtu",
            Verdict::Fail,
            format!(
                "{} mtu {}: multicast-flooded frames of {} bytes exceed the Transit Gateway's \
                 {TGW_MULTICAST_MTU}",
                b.name,
                b.mtu,
                b.mtu + VXLAN_OVERHEAD
            ),
            evidence,
            Some("set mtu = 8450 or less with multicast flooding"),
        );
    }
    check(
        "mtu",
        Verdict::Ok,
        format!("{} mtu {} fits {} mtu {}", b.name, b.mtu, u.name, u.mtu),
        evidence,
        None,
    )
}

fn force_igmp_version(d: &Desired, f: &Facts) -> Check {
    let key = format!("net/ipv4/conf/{}/force_igmp_version", d.underlay);
    let cur = sysctl(f, &key);
    let evidence = vec![format!("{key} = {}", cur.unwrap_or("(missing)"))];
    if cur == Some("2") {
        check(
            "igmp.force-version",
            Verdict::Ok,
            format!("IGMPv2 forced on {}", d.underlay),
            evidence,
            None,
        )
    } else {
        check(
            "igmp.force-version",
            Verdict::Fail,
            format!(
                "IGMP version not forced to 2 on {}: the kernel may send IGMPv3 reports, which a \
                 Transit Gateway ignores",
                d.underlay
            ),
            evidence,
            Some("overlayd sets it while it runs; something resets it (another sysctl.d file?)"),
        )
    }
}

fn igmp_membership(d: &Desired, f: &Facts, group: Ipv4Addr) -> Check {
    let dev = f.igmp.iter().find(|i| i.name == d.underlay);
    let evidence = vec![match dev {
        Some(i) => format!(
            "/proc/net/igmp {}: V{}, groups {}",
            i.name,
            i.version,
            i.groups
                .iter()
                .map(|g| g.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        ),
        None => format!("/proc/net/igmp: no entry for {}", d.underlay),
    }];
    match dev {
        Some(i) if i.groups.contains(&group) && i.version == 2 => check(
            "igmp.membership",
            Verdict::Ok,
            format!("{} joined {group} with IGMPv2", d.underlay),
            evidence,
            None,
        ),
        Some(i) if i.groups.contains(&group) => check(
            "igmp.membership",
            Verdict::Fail,
            format!(
                "{} joined {group} with IGMPv{}: a Transit Gateway sees only IGMPv2 joins",
                d.underlay, i.version
            ),
            evidence,
            Some("force_igmp_version = 2 on the underlay, then re-join (restart overlayd)"),
        ),
        _ => check(
            "igmp.membership",
            Verdict::Fail,
            format!("{} has not joined {group}: no multicast flood reaches this node", d.underlay),
            evidence,
            Some("the VTEP joins when it is up on the underlay: check the vtep check, then `systemctl restart overlayd`"),
        ),
    }
}

fn igmp_queries(f: &Facts) -> Check {
    match f.last_query_age_secs {
        None => check(
            "igmp.queries",
            Verdict::Unknown,
            "no history: whether the Transit Gateway asks is known to a running daemon only".into(),
            vec![],
            None,
        ),
        Some(age) if age <= 2 * QUERY_INTERVAL_SECS => check(
            "igmp.queries",
            Verdict::Ok,
            format!("last IGMP query {age} s ago"),
            vec![],
            None,
        ),
        Some(age) => check(
            "igmp.queries",
            Verdict::Fail,
            format!(
                "no IGMP query for {age} s (a Transit Gateway asks every {QUERY_INTERVAL_SECS} s): \
                 the subnet is not associated with the multicast domain, or IGMP from 0.0.0.0/32 is \
                 blocked"
            ),
            vec![],
            Some("overlayctl doctor checks the domain association and the security group"),
        ),
    }
}

fn igmp_max_memberships(f: &Facts) -> Check {
    let key = "net/ipv4/igmp_max_memberships";
    let max: Option<usize> = sysctl(f, key).and_then(|v| v.parse().ok());
    // CloudStack's guest VXLANs join their groups on the traffic bridge (and their devices)
    let joined: BTreeSet<Ipv4Addr> = f
        .igmp
        .iter()
        .filter(|i| i.name != "lo")
        .flat_map(|i| i.groups.iter().copied())
        .filter(|g| !is_local_network_control(*g))
        .collect();
    let evidence = vec![format!(
        "{key} = {}, {} groups joined on this node",
        max.map(|m| m.to_string()).unwrap_or("(missing)".into()),
        joined.len()
    )];
    match max {
        Some(m) if joined.len() >= m => check(
            "igmp.max-memberships",
            Verdict::Fail,
            format!(
                "{} groups joined, the limit is {m}: the next guest network's join fails",
                joined.len()
            ),
            evidence,
            Some("raise igmp_max_memberships in overlayd's configuration"),
        ),
        Some(m) if joined.len() * 10 >= m * 8 => check(
            "igmp.max-memberships",
            Verdict::Warn,
            format!("{} of {m} IGMP memberships used", joined.len()),
            evidence,
            Some("raise igmp_max_memberships before more guest networks start"),
        ),
        Some(m) => check(
            "igmp.max-memberships",
            Verdict::Ok,
            format!("{} of {m} IGMP memberships used", joined.len()),
            evidence,
            None,
        ),
        None => check(
            "igmp.max-memberships",
            Verdict::Unknown,
            format!("{key} not readable"),
            evidence,
            None,
        ),
    }
}

fn remote_vteps(d: &Desired, f: &Facts) -> Check {
    let Some(t) = &d.vtep else {
        return check(
            "fdb.remotes",
            Verdict::Ok,
            "no VTEP on this role".into(),
            vec![],
            None,
        );
    };
    match &f.remote_vteps {
        None => check(
            "fdb.remotes",
            Verdict::Unknown,
            format!("{}'s forwarding database not read", t.name),
            vec![],
            None,
        ),
        Some(r) if r.is_empty() => check(
            "fdb.remotes",
            Verdict::Warn,
            format!(
                "{} knows no remote VTEP: no frame from another node has arrived{}",
                t.name,
                if t.group.is_some() {
                    " (multicast flooding may not reach this node)"
                } else {
                    " (empty flood list)"
                }
            ),
            vec![],
            Some("on a new cluster this is normal until traffic flows; else see the igmp.* checks"),
        ),
        Some(r) => check(
            "fdb.remotes",
            Verdict::Ok,
            format!("{} remote VTEP(s) known", r.len()),
            vec![r
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(" ")],
            None,
        ),
    }
}

fn link_local_routes(d: &Desired, f: &Facts) -> Check {
    let wanted: Vec<_> = d
        .routes
        .iter()
        .filter(|r| r.dst.prefix_len() == 32 && r.dst.addr().is_link_local())
        .collect();
    if wanted.is_empty() {
        return check(
            "routes.link-local",
            Verdict::Ok,
            "no link-local service routes configured".into(),
            vec![],
            None,
        );
    }
    let mut missing = Vec::new();
    let mut evidence = Vec::new();
    for w in &wanted {
        let dev = f.observed.link(&w.dev).map(|l| l.index);
        let found = f
            .observed
            .routes
            .iter()
            .any(|r| r.table == w.table && r.dst == w.dst && r.oif.is_some() && r.oif == dev);
        evidence.push(format!(
            "{} dev {}: {}",
            w.dst,
            w.dev,
            if found { "present" } else { "missing" }
        ));
        if !found {
            missing.push(w.dst.addr().to_string());
        }
    }
    if missing.is_empty() {
        check(
            "routes.link-local",
            Verdict::Ok,
            format!("IMDS, DNS and NTP stay on {}", d.underlay),
            evidence,
            None,
        )
    } else {
        check(
            "routes.link-local",
            Verdict::Fail,
            format!(
                "no underlay route for {}: they may leave through the overlay",
                missing.join(", ")
            ),
            evidence,
            Some("overlayd adds them while it runs (link_local_routes)"),
        )
    }
}

/// 0 when nothing fails, 1 when something does (warnings and unknowns alone: 0).
pub fn exit_code(checks: &[Check]) -> u8 {
    u8::from(checks.iter().any(|c| c.verdict == Verdict::Fail))
}

/// The text report: one line per check, evidence and fix indented below it.
pub fn render(checks: &[Check]) -> String {
    let mut s = String::new();
    for c in checks {
        s.push_str(&format!(
            "{:<7} {:<22} {}\n",
            c.verdict.as_str(),
            c.id,
            c.summary
        ));
        for e in &c.evidence {
            s.push_str(&format!("        evidence: {e}\n"));
        }
        if let Some(fix) = &c.fix {
            s.push_str(&format!("        fix: {fix}\n"));
        }
    }
    let n = |v: Verdict| checks.iter().filter(|c| c.verdict == v).count();
    s.push_str(&format!(
        "{} checks: {} ok, {} warn, {} fail, {} unknown\n",
        checks.len(),
        n(Verdict::Ok),
        n(Verdict::Warn),
        n(Verdict::Fail),
        n(Verdict::Unknown)
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const IGMP: &str = "Idx\tDevice    : Count Querier\tGroup    Users Timer\tReporter\n\
1\tlo        :     1      V3\n\
\t\t\t\t010000E0     1 0:00000000\t\t0\n\
2\teth0      :     2      V2\n\
\t\t\t\t0100FFEF     1 0:00000000\t\t1\n\
\t\t\t\t010000E0     1 0:00000000\t\t0\n\
3\tcloudbr0  :     1      V3\n\
\t\t\t\t010000E0     1 0:00000000\t\t0\n";

    #[test]
    fn proc_net_igmp_is_parsed_with_versions_and_groups() {
        let v = parse_proc_igmp(IGMP);
        assert_eq!(v.len(), 3);
        assert_eq!(v[1].name, "eth0");
        assert_eq!(v[1].version, 2);
        let want: BTreeSet<Ipv4Addr> = ["239.255.0.1", "224.0.0.1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        // (little-endian hosts: these machines)
        if cfg!(target_endian = "little") {
            assert_eq!(v[1].groups, want);
        }
        assert_eq!(v[2].version, 3);
    }

    #[test]
    fn verdicts_order_and_exit_code() {
        let c = |v| check("x", v, String::new(), vec![], Some("fix"));
        assert_eq!(
            exit_code(&[c(Verdict::Ok), c(Verdict::Warn), c(Verdict::Unknown)]),
            0
        );
        assert_eq!(exit_code(&[c(Verdict::Ok), c(Verdict::Fail)]), 1);
        assert_eq!(c(Verdict::Ok).fix, None, "an ok check has no fix");
        assert!(Verdict::Fail > Verdict::Warn && Verdict::Warn > Verdict::Ok);
    }
}
