//! End-to-end tests of `overlay_router::nat` against real nftables, each in a
//! network namespace the test creates (and deletes again, even on failure).
//!
//! These need root, `ip` (iproute2) and `nft`. Without them the tests print a
//! reason and pass vacuously, except when `CI=true`, where they fail (overlay-testkit's gate).

use std::os::unix::fs::MetadataExt;
use std::process::{Command, Output, Stdio};

use overlay_router::nat::{self, NatError, NatObserved, NatSpec};

const FOREIGN: &str = "table ip foreign {\n\
                       \tchain c {\n\
                       \t\ttype filter hook input priority 0;\n\
                       \t}\n\
                       }\n\
                       table inet overlayd {\n\
                       \tchain c {\n\
                       \t\ttype filter hook output priority 0;\n\
                       \t}\n\
                       }\n";

/// Whether the namespace tests can run here: the one gate (panics instead of skipping
/// when `CI=true`).
fn prerequisites_met(test: &str) -> bool {
    overlay_testkit::gate(test, &["ip"], || {
        if nat::nft_available() {
            Ok(())
        } else {
            Err("`nft` is not available (install nftables)".into())
        }
    })
}

macro_rules! require_netns {
    ($name:expr) => {
        if !prerequisites_met($name) {
            return;
        }
    };
}

/// A network namespace created for one test; deleted on drop (the shared fixture).
struct Netns {
    name: String,
    _guard: overlay_testkit::NsGuard,
}

impl Netns {
    fn new() -> Netns {
        let name = overlay_testkit::unique_name("ortr");
        let guard = overlay_testkit::NsGuard::with_ipv6(&[&name], true);
        Netns {
            name,
            _guard: guard,
        }
    }

    /// Runs a command inside the namespace with `ip netns exec`.
    fn exec(&self, cmd: &[&str], stdin: Option<&str>) -> Output {
        use std::io::Write;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(cmd)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ip netns exec");
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes()).expect("write stdin");
        }
        child.wait_with_output().expect("wait ip netns exec")
    }

    /// Runs `nft ARGS` inside the namespace, asserting success; returns stdout.
    fn nft(&self, args: &[&str]) -> String {
        let mut cmd = vec!["nft"];
        cmd.extend_from_slice(args);
        let out = self.exec(&cmd, None);
        assert!(
            out.status.success(),
            "nft {args:?} in {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 nft output")
    }

    /// Loads an nft script inside the namespace.
    fn nft_script(&self, script: &str) {
        let out = self.exec(&["nft", "-f", "-"], Some(script));
        assert!(
            out.status.success(),
            "nft -f - in {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `nft -j list table FAMILY NAME` (with handles, so rewrites show).
    fn snapshot(&self, family: &str, table: &str) -> String {
        self.nft(&["-j", "list", "table", family, table])
    }

    /// Runs `body` on a thread that has entered this namespace, so the nft
    /// processes the library spawns run there too. Panics propagate.
    fn run<T: Send>(&self, body: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|scope| {
            let handle = scope.spawn(|| {
                enter_netns(&self.name);
                body()
            });
            match handle.join() {
                Ok(value) => value,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}

/// Moves the calling thread into the network namespace `name` and checks that it got there.
fn enter_netns(name: &str) {
    overlay_testkit::enter_netns(name).unwrap_or_else(|e| panic!("{e}"));
    let path = format!("{}/{name}", overlay_testkit::NETNS_DIR);
    let want = std::fs::metadata(&path).expect("stat netns file").ino();
    let have = std::fs::metadata("/proc/thread-self/ns/net")
        .expect("stat own netns")
        .ino();
    assert_eq!(have, want, "thread is not in {path} after setns");
}

fn net(s: &str) -> ipnet::Ipv4Net {
    s.parse().unwrap()
}

fn spec() -> NatSpec {
    NatSpec {
        overlay: net("10.100.0.0/16"),
        underlay: "ens5".into(),
        exceptions: vec![net("172.16.0.0/12"), net("169.254.169.254/32")],
    }
}

fn assert_differs(observed: NatObserved, needle: &str) {
    match observed {
        NatObserved::Differs(reason) => {
            assert!(
                reason.contains(needle),
                "reason {reason:?} lacks {needle:?}"
            )
        }
        other => panic!("expected Differs containing {needle:?}, got {other:?}"),
    }
}

#[test]
fn ensure_creates_table_then_second_ensure_writes_nothing() {
    require_netns!("ensure_creates_table_then_second_ensure_writes_nothing");
    let ns = Netns::new();
    let spec = spec();
    ns.run(|| {
        assert_eq!(nat::observe(&spec).unwrap(), NatObserved::Absent);
        assert!(nat::ensure(&spec).unwrap(), "first ensure must write");
        assert_eq!(nat::observe(&spec).unwrap(), NatObserved::Matches);
    });
    let text = ns.nft(&["list", "table", "ip", nat::TABLE]);
    assert!(
        text.contains("type nat hook postrouting priority srcnat; policy accept;"),
        "{text}"
    );
    assert!(
        text.contains("ip saddr 10.100.0.0/16 oifname \"ens5\" masquerade"),
        "{text}"
    );
    let before = ns.snapshot("ip", nat::TABLE);
    ns.run(|| {
        assert!(!nat::ensure(&spec).unwrap(), "second ensure must not write");
        assert_eq!(nat::observe(&spec).unwrap(), NatObserved::Matches);
    });
    // Any rewrite would have given the table, chain and rules new handles.
    assert_eq!(ns.snapshot("ip", nat::TABLE), before);
}

#[test]
fn flushed_chain_is_detected_and_repaired() {
    require_netns!("flushed_chain_is_detected_and_repaired");
    let ns = Netns::new();
    let spec = spec();
    ns.run(|| assert!(nat::ensure(&spec).unwrap()));
    ns.nft(&["flush", "chain", "ip", nat::TABLE, "postrouting"]);
    ns.run(|| {
        assert_differs(nat::observe(&spec).unwrap(), "no rules");
        assert!(nat::ensure(&spec).unwrap(), "repair must write");
        assert_eq!(nat::observe(&spec).unwrap(), NatObserved::Matches);
        assert!(!nat::ensure(&spec).unwrap());
    });
}

#[test]
fn hand_edits_and_spec_changes_are_repaired() {
    require_netns!("hand_edits_and_spec_changes_are_repaired");
    let ns = Netns::new();
    let spec = spec();
    ns.run(|| assert!(nat::ensure(&spec).unwrap()));

    // A rule appended by hand.
    ns.nft(&[
        "add",
        "rule",
        "ip",
        nat::TABLE,
        "postrouting",
        "ip",
        "saddr",
        "10.100.0.0/16",
        "counter",
    ]);
    ns.run(|| {
        assert_differs(nat::observe(&spec).unwrap(), "unexpected extra rule");
        assert!(nat::ensure(&spec).unwrap());
        assert_eq!(nat::observe(&spec).unwrap(), NatObserved::Matches);
    });

    // The table switched off by hand.
    ns.nft(&["add", "table", "ip", nat::TABLE, "{ flags dormant; }"]);
    ns.run(|| {
        assert_differs(nat::observe(&spec).unwrap(), "flags");
        assert!(nat::ensure(&spec).unwrap());
        assert_eq!(nat::observe(&spec).unwrap(), NatObserved::Matches);
    });

    // The spec itself changes: new underlay and one more exception.
    let mut changed = spec.clone();
    changed.underlay = "ens6".into();
    changed.exceptions.push(net("192.0.2.0/24"));
    ns.run(|| {
        // The first difference is reported: the new exception comes first.
        assert_differs(nat::observe(&changed).unwrap(), "192.0.2.0/24");
        assert!(nat::ensure(&changed).unwrap());
        assert_eq!(nat::observe(&changed).unwrap(), NatObserved::Matches);
        assert!(matches!(
            nat::observe(&spec).unwrap(),
            NatObserved::Differs(_)
        ));
    });
    let text = ns.nft(&["list", "table", "ip", nat::TABLE]);
    assert!(!text.contains("\"ens5\""), "{text}");
    assert!(text.contains("ip daddr 192.0.2.0/24 accept"), "{text}");
}

#[test]
fn foreign_tables_are_untouched_by_ensure_and_remove() {
    require_netns!("foreign_tables_are_untouched_by_ensure_and_remove");
    let ns = Netns::new();
    let spec = spec();
    ns.nft_script(FOREIGN);
    let foreign = ns.snapshot("ip", "foreign");
    // Same name, other family: not ours either.
    let inet_overlayd = ns.snapshot("inet", nat::TABLE);

    ns.run(|| {
        assert_eq!(nat::observe(&spec).unwrap(), NatObserved::Absent);
        assert!(nat::ensure(&spec).unwrap());
    });
    assert_eq!(ns.snapshot("ip", "foreign"), foreign);
    assert_eq!(ns.snapshot("inet", nat::TABLE), inet_overlayd);

    ns.run(|| {
        assert!(nat::remove().unwrap());
        assert_eq!(nat::observe(&spec).unwrap(), NatObserved::Absent);
        assert!(!nat::remove().unwrap());
    });
    assert_eq!(ns.snapshot("ip", "foreign"), foreign);
    assert_eq!(ns.snapshot("inet", nat::TABLE), inet_overlayd);
}

#[test]
fn remove_deletes_once_then_reports_nothing_to_do() {
    require_netns!("remove_deletes_once_then_reports_nothing_to_do");
    let ns = Netns::new();
    let spec = spec();
    ns.run(|| {
        assert!(!nat::remove().unwrap(), "nothing to remove yet");
        assert!(nat::ensure(&spec).unwrap());
        assert!(nat::remove().unwrap());
        assert_eq!(nat::observe(&spec).unwrap(), NatObserved::Absent);
        assert!(!nat::remove().unwrap());
    });
    let tables = ns.nft(&["list", "tables"]);
    assert!(tables.trim().is_empty(), "{tables}");
}

#[test]
fn invalid_spec_is_rejected_without_writing() {
    require_netns!("invalid_spec_is_rejected_without_writing");
    let ns = Netns::new();
    let bad = NatSpec {
        underlay: "ens5\" accept".into(),
        ..spec()
    };
    ns.run(|| {
        assert!(matches!(nat::ensure(&bad), Err(NatError::InvalidSpec(_))));
        assert_eq!(nat::observe(&spec()).unwrap(), NatObserved::Absent);
    });
}
