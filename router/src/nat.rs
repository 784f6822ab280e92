//! NAT masquerade of overlay traffic in the overlayd-owned nftables table
//! `ip overlayd`.
//!
//! The router node masquerades traffic that leaves the overlay through the
//! underlay interface. Everything lives in one table that overlayd owns
//! exclusively; no other table is ever read for comparison, written or
//! deleted. All writes go through `nft -f -` so that each one is a single
//! atomic nftables transaction, and the observed state is read back with
//! `nft -j list table ip overlayd` and compared structurally (not textually)
//! with what [`render`] produces.
//!
//! The functions run `nft` as a child process of the calling thread, so they
//! act on whatever network namespace that thread is in.

use std::fmt;
use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Output, Stdio};

use ipnet::Ipv4Net;
use serde_json::{Map, Value};

/// Name of the overlayd-owned table (family `ip`).
pub const TABLE: &str = "overlayd";

/// Address family of [`TABLE`].
const FAMILY: &str = "ip";
/// The single base chain in [`TABLE`].
const CHAIN: &str = "postrouting";
/// Numeric value of the `srcnat` priority keyword for the ip family; `nft -j`
/// reports the number, not the keyword.
const SRCNAT_PRIO: i64 = 100;
/// The nft binary, looked up in `PATH`.
const NFT: &str = "nft";
/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
const IFNAME_MAX: usize = 15;

/// What the overlay NAT should look like.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NatSpec {
    /// Overlay prefix whose traffic is masqueraded when it leaves via `underlay`.
    pub overlay: Ipv4Net,
    /// Underlay interface name (exact name, no wildcards).
    pub underlay: String,
    /// Destinations that overlay traffic reaches without being masqueraded.
    pub exceptions: Vec<Ipv4Net>,
}

/// Result of comparing the kernel's `ip overlayd` table with a [`NatSpec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NatObserved {
    /// The table does not exist.
    Absent,
    /// The table is exactly what [`render`] would create.
    Matches,
    /// The table exists but differs; the string says how (first difference).
    Differs(String),
}

/// Errors from the NAT module.
#[derive(Debug, thiserror::Error)]
pub enum NatError {
    #[error("the `nft` binary was not found in PATH; install nftables (e.g. `apt-get install nftables`)")]
    NftMissing,
    #[error("could not run `nft`: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("`nft {command}` failed ({status}): {stderr}")]
    Nft {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("unexpected `nft -j` output: {0}")]
    Json(String),
    #[error("invalid NAT spec: {0}")]
    InvalidSpec(String),
    #[error("applied table ip overlayd but it still does not match the spec: {0}")]
    NotConverged(String),
}

impl NatSpec {
    /// Checks that the spec can be rendered safely: the underlay must be a
    /// plain interface name (no quoting or wildcard characters reach nft).
    pub fn validate(&self) -> Result<(), NatError> {
        let name = &self.underlay;
        if name.is_empty() {
            return Err(NatError::InvalidSpec(
                "underlay interface name is empty".into(),
            ));
        }
        if name.len() > IFNAME_MAX {
            return Err(NatError::InvalidSpec(format!(
                "underlay interface name {name:?} is longer than {IFNAME_MAX} bytes"
            )));
        }
        if name == "." || name == ".." {
            return Err(NatError::InvalidSpec(format!(
                "underlay interface name {name:?} is not valid"
            )));
        }
        if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@')))
        {
            return Err(NatError::InvalidSpec(format!(
                "underlay interface name {name:?} contains {bad:?}; allowed: ASCII letters, digits, '-', '_', '.', '@'"
            )));
        }
        Ok(())
    }
}

/// One rule of the postrouting chain, in the shapes overlayd writes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    Accept {
        saddr: Ipv4Net,
        daddr: Ipv4Net,
    },
    Masquerade {
        saddr: Ipv4Net,
        oifname: String,
    },
    /// Anything else found in the kernel (compact JSON, shortened).
    Other(String),
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Accept { saddr, daddr } => write!(f, "ip saddr {saddr} ip daddr {daddr} accept"),
            Rule::Masquerade { saddr, oifname } => {
                write!(f, "ip saddr {saddr} oifname \"{oifname}\" masquerade")
            }
            Rule::Other(json) => write!(f, "unrecognized rule {json}"),
        }
    }
}

/// The rules overlayd wants, in chain order: overlay→overlay and exception
/// accepts first, then the masquerade. Prefixes are normalised (host bits
/// cleared, as nft does) and duplicate accepts are dropped.
fn expected_rules(spec: &NatSpec) -> Vec<Rule> {
    let overlay = spec.overlay.trunc();
    let mut rules = vec![Rule::Accept {
        saddr: overlay,
        daddr: overlay,
    }];
    for exception in &spec.exceptions {
        let rule = Rule::Accept {
            saddr: overlay,
            daddr: exception.trunc(),
        };
        if !rules.contains(&rule) {
            rules.push(rule);
        }
    }
    rules.push(Rule::Masquerade {
        saddr: overlay,
        oifname: spec.underlay.clone(),
    });
    rules
}

/// The complete nft script that atomically replaces `ip overlayd` with the
/// table described by `spec`. The leading `add table` makes the `delete
/// table` valid when the table does not exist yet; nft applies the whole
/// script as one transaction.
///
/// `render` does not validate; [`ensure`] calls [`NatSpec::validate`] before
/// applying the script.
pub fn render(spec: &NatSpec) -> String {
    let mut script = format!(
        "add table {FAMILY} {TABLE}\n\
         delete table {FAMILY} {TABLE}\n\
         table {FAMILY} {TABLE} {{\n\
         \tchain {CHAIN} {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n"
    );
    for rule in expected_rules(spec) {
        script.push_str("\t\t");
        script.push_str(&rule.to_string());
        script.push('\n');
    }
    script.push_str("\t}\n}\n");
    script
}

/// Reads `ip overlayd` from the kernel and compares it with `spec`.
pub fn observe(spec: &NatSpec) -> Result<NatObserved, NatError> {
    spec.validate()?;
    let args = ["-j", "list", "table", FAMILY, TABLE];
    let out = run_nft(&args, None)?;
    if !out.status.success() {
        // `list table` fails when the table is missing; confirm through the
        // table list rather than by parsing an error message.
        if !table_exists()? {
            return Ok(NatObserved::Absent);
        }
        return Err(nft_failed(&args, &out));
    }
    let doc = parse_json(&out.stdout)?;
    compare(spec, &doc)
}

/// Converges `ip overlayd` to `spec`. Returns `false` without writing when the
/// table already matches; otherwise replaces the table in one transaction,
/// checks the result and returns `true`.
pub fn ensure(spec: &NatSpec) -> Result<bool, NatError> {
    if observe(spec)? == NatObserved::Matches {
        return Ok(false);
    }
    apply(&render(spec))?;
    match observe(spec)? {
        NatObserved::Matches => Ok(true),
        NatObserved::Absent => Err(NatError::NotConverged("table is absent".into())),
        NatObserved::Differs(reason) => Err(NatError::NotConverged(reason)),
    }
}

/// Deletes `ip overlayd` if it exists. Returns whether a table was deleted.
pub fn remove() -> Result<bool, NatError> {
    if !table_exists()? {
        return Ok(false);
    }
    let args = ["delete", "table", FAMILY, TABLE];
    let out = run_nft(&args, None)?;
    if out.status.success() {
        return Ok(true);
    }
    // Someone else may have deleted it between the check and the delete.
    if !table_exists()? {
        return Ok(false);
    }
    Err(nft_failed(&args, &out))
}

/// Whether an `nft` binary can be run.
pub fn nft_available() -> bool {
    Command::new(NFT)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Applies an nft script as one transaction.
fn apply(script: &str) -> Result<(), NatError> {
    let args = ["-f", "-"];
    let out = run_nft(&args, Some(script))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(nft_failed(&args, &out))
    }
}

/// Whether `ip overlayd` is listed by `nft -j list tables`.
fn table_exists() -> Result<bool, NatError> {
    let args = ["-j", "list", "tables"];
    let out = run_nft(&args, None)?;
    if !out.status.success() {
        return Err(nft_failed(&args, &out));
    }
    listing_has_table(&parse_json(&out.stdout)?)
}

fn run_nft(args: &[&str], stdin: Option<&str>) -> Result<Output, NatError> {
    let mut cmd = Command::new(NFT);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            NatError::NftMissing
        } else {
            NatError::Spawn(e)
        }
    })?;
    let mut write_error = None;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // nft reads the whole script before printing anything, so writing
        // first and collecting output afterwards cannot deadlock. The pipe is
        // closed when `pipe` is dropped, which ends nft's input.
        write_error = pipe.write_all(text.as_bytes()).err();
    }
    let out = child.wait_with_output().map_err(NatError::Spawn)?;
    match write_error {
        // A failed write with a failed nft: nft's stderr explains it better.
        Some(e) if out.status.success() => Err(NatError::Spawn(e)),
        _ => Ok(out),
    }
}

fn nft_failed(args: &[&str], out: &Output) -> NatError {
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    NatError::Nft {
        command: args.join(" "),
        status: out.status.to_string(),
        stderr: if stderr.is_empty() {
            "(no stderr)".into()
        } else {
            stderr
        },
    }
}

fn parse_json(bytes: &[u8]) -> Result<Value, NatError> {
    serde_json::from_slice(bytes).map_err(|e| NatError::Json(e.to_string()))
}

/// The entries of an `nft -j` document (`{"nftables": [ {kind: body}, ... ]}`).
/// One `{kind: body}` entry of an `nft -j` document.
type Entry<'a> = (&'a str, &'a Map<String, Value>);

fn entries(doc: &Value) -> Result<Vec<Entry<'_>>, NatError> {
    let items = doc
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or_else(|| NatError::Json("no top-level \"nftables\" array".into()))?;
    let mut found = Vec::with_capacity(items.len());
    for item in items {
        let obj = item
            .as_object()
            .ok_or_else(|| NatError::Json(format!("entry is not an object: {}", short(item))))?;
        for (kind, body) in obj {
            let body = body.as_object().ok_or_else(|| {
                NatError::Json(format!("{kind} entry is not an object: {}", short(body)))
            })?;
            found.push((kind.as_str(), body));
        }
    }
    Ok(found)
}

fn str_field<'a>(body: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    body.get(key).and_then(Value::as_str)
}

/// Whether a `list tables` document names `ip overlayd`.
fn listing_has_table(doc: &Value) -> Result<bool, NatError> {
    Ok(entries(doc)?.into_iter().any(|(kind, body)| {
        kind == "table"
            && str_field(body, "family") == Some(FAMILY)
            && str_field(body, "name") == Some(TABLE)
    }))
}

/// Structural comparison of a `list table ip overlayd` document with `spec`.
fn compare(spec: &NatSpec, doc: &Value) -> Result<NatObserved, NatError> {
    let mut table_seen = false;
    let mut chain: Option<&Map<String, Value>> = None;
    let mut rules = Vec::new();
    let mut unexpected = Vec::new();

    for (kind, body) in entries(doc)? {
        if kind == "metainfo" {
            continue;
        }
        if str_field(body, "family") != Some(FAMILY) {
            continue;
        }
        if kind == "table" {
            if str_field(body, "name") == Some(TABLE) {
                table_seen = true;
                // nft 1.0.6 prints a garbage string as the value of "flags"
                // (e.g. for `flags dormant`), so only its presence is used.
                if body.contains_key("flags") {
                    unexpected.push("table has flags set (dormant?)".to_string());
                }
            }
            continue;
        }
        if str_field(body, "table") != Some(TABLE) {
            continue;
        }
        let name = str_field(body, "name").unwrap_or("?");
        match kind {
            "chain" if name == CHAIN && chain.is_none() => chain = Some(body),
            "chain" => unexpected.push(format!("unexpected chain {name}")),
            "rule" => {
                // Rules of unexpected chains are covered by the chain report.
                if str_field(body, "chain") == Some(CHAIN) {
                    rules.push(parse_rule(body.get("expr")));
                }
            }
            other => unexpected.push(format!("unexpected {other} {name}")),
        }
    }

    if !table_seen {
        return Ok(NatObserved::Absent);
    }
    let Some(chain) = chain else {
        return Ok(NatObserved::Differs(format!("chain {CHAIN} is missing")));
    };
    if let Some(reason) = chain_difference(chain) {
        return Ok(NatObserved::Differs(reason));
    }
    if let Some(reason) = unexpected.into_iter().next() {
        return Ok(NatObserved::Differs(reason));
    }
    Ok(match rules_difference(&expected_rules(spec), &rules) {
        Some(reason) => NatObserved::Differs(reason),
        None => NatObserved::Matches,
    })
}

fn chain_difference(chain: &Map<String, Value>) -> Option<String> {
    let kind = str_field(chain, "type");
    let hook = str_field(chain, "hook");
    // Accept the keyword too, should a future nft print it.
    let prio_ok = match chain.get("prio") {
        Some(Value::Number(n)) => n.as_i64() == Some(SRCNAT_PRIO),
        Some(Value::String(s)) => s == "srcnat",
        _ => false,
    };
    let policy = str_field(chain, "policy").unwrap_or("accept");
    if kind != Some("nat") || hook != Some("postrouting") || !prio_ok || policy != "accept" {
        let show = |v: Option<&Value>| v.map_or_else(|| "-".to_string(), short);
        return Some(format!(
            "chain {CHAIN} is type {} hook {} prio {} policy {}, expected nat/postrouting/{SRCNAT_PRIO} (srcnat)/accept",
            show(chain.get("type")),
            show(chain.get("hook")),
            show(chain.get("prio")),
            policy
        ));
    }
    if chain.contains_key("dev") {
        return Some(format!("chain {CHAIN} is bound to a device"));
    }
    None
}

fn rules_difference(expected: &[Rule], observed: &[Rule]) -> Option<String> {
    if observed.is_empty() && !expected.is_empty() {
        return Some(format!(
            "chain {CHAIN} has no rules (flushed?), expected {}",
            expected.len()
        ));
    }
    let first_diff = expected
        .iter()
        .zip(observed)
        .position(|(want, have)| want != have);
    if let Some(i) = first_diff {
        return Some(format!(
            "rule {} is `{}`, expected `{}`",
            i + 1,
            observed[i],
            expected[i]
        ));
    }
    if observed.len() < expected.len() {
        let i = observed.len();
        return Some(format!("rule {} is missing: `{}`", i + 1, expected[i]));
    }
    if observed.len() > expected.len() {
        let i = expected.len();
        return Some(format!(
            "unexpected extra rule {}: `{}`",
            i + 1,
            observed[i]
        ));
    }
    None
}

/// Recognises the two rule shapes overlayd writes; anything else (counters,
/// logging, other matches or verdicts) becomes [`Rule::Other`].
fn parse_rule(expr: Option<&Value>) -> Rule {
    parse_known_rule(expr).unwrap_or_else(|| Rule::Other(expr.map_or_else(|| "-".into(), short)))
}

fn parse_known_rule(expr: Option<&Value>) -> Option<Rule> {
    let [first, second, verdict] = expr?.as_array()?.as_slice() else {
        return None;
    };
    let saddr = match_ip_field(first, "saddr")?;
    if is_bare_statement(verdict, "accept") {
        let daddr = match_ip_field(second, "daddr")?;
        Some(Rule::Accept { saddr, daddr })
    } else if is_bare_statement(verdict, "masquerade") {
        let oifname = match_oifname(second)?;
        Some(Rule::Masquerade { saddr, oifname })
    } else {
        None
    }
}

/// `{"<name>": null}`, i.e. a statement without options.
fn is_bare_statement(v: &Value, name: &str) -> bool {
    v.as_object()
        .is_some_and(|o| o.len() == 1 && o.get(name).is_some_and(Value::is_null))
}

/// The `left`/`right` of a `{"match": {"op": "==", ...}}` expression.
fn eq_match(v: &Value) -> Option<(&Value, &Value)> {
    let m = v.get("match")?.as_object()?;
    if m.get("op")?.as_str()? != "==" {
        return None;
    }
    Some((m.get("left")?, m.get("right")?))
}

/// `ip <field> <addr or prefix>`. nft prints a /32 as a plain address string
/// and anything shorter as `{"prefix": {"addr": ..., "len": ...}}`.
fn match_ip_field(v: &Value, field: &str) -> Option<Ipv4Net> {
    let (left, right) = eq_match(v)?;
    let payload = left.get("payload")?.as_object()?;
    if payload.len() != 2
        || payload.get("protocol")?.as_str()? != "ip"
        || payload.get("field")?.as_str()? != field
    {
        return None;
    }
    match right {
        Value::String(s) => Some(Ipv4Net::from(s.parse::<Ipv4Addr>().ok()?)),
        Value::Object(o) => {
            let prefix = o.get("prefix")?.as_object()?;
            let addr = prefix.get("addr")?.as_str()?.parse::<Ipv4Addr>().ok()?;
            let len = u8::try_from(prefix.get("len")?.as_u64()?).ok()?;
            Some(Ipv4Net::new(addr, len).ok()?.trunc())
        }
        _ => None,
    }
}

/// `oifname "<name>"`.
fn match_oifname(v: &Value) -> Option<String> {
    let (left, right) = eq_match(v)?;
    let meta = left.get("meta")?.as_object()?;
    if meta.len() != 1 || meta.get("key")?.as_str()? != "oifname" {
        return None;
    }
    Some(right.as_str()?.to_string())
}

/// Compact JSON, cut to a length suitable for a one-line reason.
fn short(v: &Value) -> String {
    const MAX: usize = 160;
    let mut s = v.to_string();
    if s.len() > MAX {
        let mut end = MAX;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    /// The spec the captured fixtures were produced with.
    fn fixture_spec() -> NatSpec {
        NatSpec {
            overlay: net("10.100.0.0/16"),
            underlay: "ens5".into(),
            exceptions: vec![net("172.16.0.0/12"), net("169.254.169.254/32")],
        }
    }

    fn fixture(name: &str) -> Value {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/");
        let text = std::fs::read_to_string(format!("{dir}{name}"))
            .unwrap_or_else(|e| panic!("fixture {name}: {e}"));
        serde_json::from_str(&text).unwrap()
    }

    fn differs(obs: NatObserved) -> String {
        match obs {
            NatObserved::Differs(reason) => reason,
            other => panic!("expected Differs, got {other:?}"),
        }
    }

    #[test]
    fn render_produces_exact_script() {
        let expected = "add table ip overlayd\n\
                        delete table ip overlayd\n\
                        table ip overlayd {\n\
                        \tchain postrouting {\n\
                        \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
                        \t\tip saddr 10.100.0.0/16 ip daddr 10.100.0.0/16 accept\n\
                        \t\tip saddr 10.100.0.0/16 ip daddr 172.16.0.0/12 accept\n\
                        \t\tip saddr 10.100.0.0/16 ip daddr 169.254.169.254/32 accept\n\
                        \t\tip saddr 10.100.0.0/16 oifname \"ens5\" masquerade\n\
                        \t}\n\
                        }\n";
        assert_eq!(render(&fixture_spec()), expected);
    }

    #[test]
    fn render_without_exceptions_has_overlay_accept_then_masquerade() {
        let spec = NatSpec {
            exceptions: vec![],
            ..fixture_spec()
        };
        let script = render(&spec);
        let rules: Vec<&str> = script
            .lines()
            .filter(|l| l.starts_with("\t\tip "))
            .map(str::trim)
            .collect();
        assert_eq!(
            rules,
            [
                "ip saddr 10.100.0.0/16 ip daddr 10.100.0.0/16 accept",
                "ip saddr 10.100.0.0/16 oifname \"ens5\" masquerade",
            ]
        );
    }

    #[test]
    fn render_clears_host_bits_and_drops_duplicate_accepts() {
        let spec = NatSpec {
            overlay: net("10.100.7.9/16"),
            underlay: "eth0".into(),
            exceptions: vec![
                net("10.100.0.0/16"),
                net("192.168.1.77/24"),
                net("192.168.1.0/24"),
            ],
        };
        let script = render(&spec);
        assert!(!script.contains("10.100.7.9"), "{script}");
        assert_eq!(script.matches("ip daddr 10.100.0.0/16 accept").count(), 1);
        assert_eq!(script.matches("ip daddr 192.168.1.0/24 accept").count(), 1);
        let masq = script.find("masquerade").unwrap();
        assert!(
            script.rfind("accept\n").unwrap() < masq,
            "accepts precede masquerade"
        );
    }

    #[test]
    fn render_never_names_another_table() {
        let script = render(&fixture_spec());
        for line in script.lines().filter(|l| l.contains("table")) {
            assert!(line.contains("table ip overlayd"), "{line}");
        }
    }

    #[test]
    fn converged_fixture_matches() {
        assert_eq!(
            compare(&fixture_spec(), &fixture("converged.json")).unwrap(),
            NatObserved::Matches
        );
    }

    #[test]
    fn host_bits_in_spec_still_match_kernel_form() {
        let spec = NatSpec {
            overlay: net("10.100.3.4/16"),
            ..fixture_spec()
        };
        assert_eq!(
            compare(&spec, &fixture("converged.json")).unwrap(),
            NatObserved::Matches
        );
    }

    #[test]
    fn flushed_chain_differs() {
        let reason = differs(compare(&fixture_spec(), &fixture("flushed.json")).unwrap());
        assert!(reason.contains("no rules"), "{reason}");
    }

    #[test]
    fn extra_rule_differs() {
        let reason = differs(compare(&fixture_spec(), &fixture("extra_rule.json")).unwrap());
        assert!(reason.contains("unexpected extra rule 5"), "{reason}");
        assert!(reason.contains("counter"), "{reason}");
    }

    #[test]
    fn replaced_rule_differs() {
        let reason = differs(compare(&fixture_spec(), &fixture("replaced_rule.json")).unwrap());
        assert!(reason.starts_with("rule 4 is"), "{reason}");
        assert!(reason.contains("\"eth1\""), "{reason}");
    }

    #[test]
    fn spec_changes_are_detected_against_converged_fixture() {
        let doc = fixture("converged.json");
        let other_underlay = NatSpec {
            underlay: "ens6".into(),
            ..fixture_spec()
        };
        let reason = differs(compare(&other_underlay, &doc).unwrap());
        assert!(reason.contains("ens6"), "{reason}");

        let mut more = fixture_spec();
        more.exceptions.push(net("192.0.2.0/24"));
        let reason = differs(compare(&more, &doc).unwrap());
        assert!(reason.contains("192.0.2.0/24"), "{reason}");

        let mut fewer = fixture_spec();
        fewer.exceptions.pop();
        let reason = differs(compare(&fewer, &doc).unwrap());
        assert!(reason.starts_with("rule 3 is"), "{reason}");
        assert!(reason.contains("169.254.169.254/32"), "{reason}");

        let reordered = NatSpec {
            exceptions: fixture_spec().exceptions.into_iter().rev().collect(),
            ..fixture_spec()
        };
        assert!(matches!(
            compare(&reordered, &doc).unwrap(),
            NatObserved::Differs(_)
        ));
    }

    #[test]
    fn foreign_objects_in_our_table_differ() {
        let reason = differs(compare(&fixture_spec(), &fixture("extra_objects.json")).unwrap());
        assert!(reason.starts_with("unexpected "), "{reason}");
    }

    #[test]
    fn dormant_table_differs() {
        let reason = differs(compare(&fixture_spec(), &fixture("dormant.json")).unwrap());
        assert!(reason.contains("flags"), "{reason}");
    }

    #[test]
    fn chain_priority_and_policy_are_checked() {
        let reason = differs(compare(&fixture_spec(), &fixture("chain_changed.json")).unwrap());
        assert!(reason.contains("prio 105"), "{reason}");
        assert!(reason.contains("policy drop"), "{reason}");
    }

    #[test]
    fn chain_missing_differs() {
        let mut doc = fixture("converged.json");
        let items = doc["nftables"].as_array_mut().unwrap();
        items.retain(|i| i.get("chain").is_none() && i.get("rule").is_none());
        let reason = differs(compare(&fixture_spec(), &doc).unwrap());
        assert!(reason.contains("missing"), "{reason}");
    }

    #[test]
    fn srcnat_keyword_priority_is_accepted() {
        let mut doc = fixture("converged.json");
        for item in doc["nftables"].as_array_mut().unwrap() {
            if let Some(chain) = item.get_mut("chain") {
                chain["prio"] = Value::from("srcnat");
            }
        }
        assert_eq!(
            compare(&fixture_spec(), &doc).unwrap(),
            NatObserved::Matches
        );
    }

    #[test]
    fn masquerade_with_options_is_not_ours() {
        let mut doc = fixture("converged.json");
        let items = doc["nftables"].as_array_mut().unwrap();
        let last = items.last_mut().unwrap();
        let expr = last["rule"]["expr"].as_array_mut().unwrap();
        *expr.last_mut().unwrap() = serde_json::json!({"masquerade": {"flags": "random"}});
        let reason = differs(compare(&fixture_spec(), &doc).unwrap());
        assert!(reason.contains("unrecognized rule"), "{reason}");
    }

    #[test]
    fn listing_without_table_is_absent() {
        let doc = serde_json::json!({"nftables": [
            {"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}
        ]});
        assert_eq!(compare(&fixture_spec(), &doc).unwrap(), NatObserved::Absent);
    }

    #[test]
    fn malformed_documents_are_errors() {
        for doc in [
            serde_json::json!({}),
            serde_json::json!({"nftables": {}}),
            serde_json::json!({"nftables": [1]}),
            serde_json::json!({"nftables": [{"table": 1}]}),
        ] {
            assert!(
                matches!(compare(&fixture_spec(), &doc), Err(NatError::Json(_))),
                "{doc}"
            );
        }
        assert!(matches!(parse_json(b"not json"), Err(NatError::Json(_))));
    }

    #[test]
    fn table_listing_is_read_by_family_and_name() {
        assert!(listing_has_table(&fixture("tables_with_overlayd.json")).unwrap());
        // Has `ip foreign` and `inet overlayd`, but not `ip overlayd`.
        assert!(!listing_has_table(&fixture("tables_without_overlayd.json")).unwrap());
    }

    #[test]
    fn rule_parser_reads_both_address_forms() {
        let host = serde_json::json!({"match": {"op": "==",
            "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "169.254.169.254"}});
        assert_eq!(
            match_ip_field(&host, "daddr"),
            Some(net("169.254.169.254/32"))
        );
        let prefix = serde_json::json!({"match": {"op": "==",
            "left": {"payload": {"protocol": "ip", "field": "saddr"}},
            "right": {"prefix": {"addr": "0.0.0.0", "len": 0}}}});
        assert_eq!(match_ip_field(&prefix, "saddr"), Some(net("0.0.0.0/0")));
        assert_eq!(match_ip_field(&prefix, "daddr"), None);
        let negated = serde_json::json!({"match": {"op": "!=",
            "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "10.0.0.1"}});
        assert_eq!(match_ip_field(&negated, "saddr"), None);
    }

    #[test]
    fn validate_rejects_unsafe_interface_names() {
        for bad in [
            "",
            "eth0\"",
            "eth*",
            "a b",
            "x;y",
            "eth0\n",
            "bad\\",
            "a/b",
            ".",
            "..",
            "abcdefghijklmnop",
        ] {
            let spec = NatSpec {
                underlay: bad.into(),
                ..fixture_spec()
            };
            assert!(
                matches!(spec.validate(), Err(NatError::InvalidSpec(_))),
                "{bad:?} accepted"
            );
        }
        for good in ["ens5", "eth0.100", "br-ovl_1", "veth@x", "abcdefghijklmno"] {
            let spec = NatSpec {
                underlay: good.into(),
                ..fixture_spec()
            };
            spec.validate().unwrap();
        }
    }

    #[test]
    fn error_messages_are_helpful() {
        assert!(NatError::NftMissing
            .to_string()
            .contains("install nftables"));
        let e = NatError::Nft {
            command: "-f -".into(),
            status: "exit status: 1".into(),
            stderr: "Error: syntax error".into(),
        };
        let msg = e.to_string();
        assert!(
            msg.contains("nft -f -") && msg.contains("Error: syntax error"),
            "{msg}"
        );
    }

    #[test]
    fn spec_round_trips_through_serde() {
        let spec = fixture_spec();
        let text = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<NatSpec>(&text).unwrap(), spec);
    }
}
