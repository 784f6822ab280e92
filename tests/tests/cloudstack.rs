//! The CloudStack scripts (scripts/cloudstack/, shipped in the overlayd package at
//! /usr/share/overlayd/cloudstack/): their dry-run transcripts for every supported
//! distribution and CloudStack version against the checked-in expectations, `--help` and bad
//! input, the zone script's API conversation (scripts/cloudstack/check-zone, against a
//! signature-checking stand-in for CloudStack's API); then, in the instance lab (Debian 12 containers, overlayd from the package),
//! `install-host` (= `kvm-host`) preparing two KVM hosts with Debian's libvirt: each host
//! reaches the other's libvirtd across the overlay (the live-migration path), the VPC client
//! reaches neither, a re-run changes nothing; and the management server's guard: 8250 from the
//! overlay only. CloudStack's own packages cannot be downloaded here (no route to
//! download.cloudstack.org): `--skip-cloudstack-packages`.

use overlay_tests::*;
use std::path::PathBuf;
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn script(name: &str, args: &[&str]) -> Output {
    Command::new(repo().join("scripts/cloudstack").join(name))
        .args(args)
        .env_remove("CLOUDSTACK_CONFIG")
        .output()
        .unwrap()
}

#[test]
fn dry_run_transcripts_match_for_every_distribution_and_version() {
    let o = Command::new(repo().join("scripts/cloudstack/check-transcripts"))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "a step of a CloudStack script changed: review the diff, then \
         scripts/cloudstack/check-transcripts --update\n{}",
        text(&o)
    );
}

#[test]
fn zone_builds_the_planned_zone_through_a_signature_checking_api_stand_in() {
    let o = Command::new(repo().join("scripts/cloudstack/check-zone"))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "scripts/cloudstack/check-zone:\n{}",
        text(&o)
    );
}

#[test]
fn every_script_teaches_and_refuses_bad_input_with_status_2() {
    for s in ["management", "kvm-host", "standalone", "zone"] {
        let o = script(s, &["--help"]);
        assert!(o.status.success(), "{s} --help: {}", text(&o));
        let help = String::from_utf8_lossy(&o.stdout);
        for want in ["Usage:", "--dry-run", "Exit status", "--version"] {
            assert!(help.contains(want), "{s} --help lacks {want}:\n{help}");
        }
        let o = script(s, &["--no-such-option"]);
        assert_eq!(o.status.code(), Some(2), "{s}: {}", text(&o));
        assert!(
            text(&o).contains("--no-such-option"),
            "{s}: the error names the option: {}",
            text(&o)
        );
        let o = script(s, &["--dry-run", "--version", "4.99"]);
        assert_eq!(o.status.code(), Some(2), "{s}: {}", text(&o));
        assert!(text(&o).contains("4.99"), "{s}: {}", text(&o));
    }
}

/// The overlayd package (revision 1) scripts/package built.
fn deb(test: &str) -> Option<PathBuf> {
    let p = bin_dir()
        .parent()
        .unwrap()
        .join("package")
        .join("overlayd_0.1.0-1_amd64.deb");
    if !ready(test) {
        return None;
    }
    let ok = overlay_testkit::gate(test, &["systemd-nspawn", "mmdebstrap", "nsenter"], || {
        if p.is_file() {
            Ok(())
        } else {
            Err(format!("{} missing: run scripts/package", p.display()))
        }
    });
    ok.then_some(p)
}

struct Nodes<'a> {
    prefix: &'a str,
}

impl Nodes<'_> {
    fn exec(&self, node: &str, cmd: &[&str]) -> Output {
        lab_exec(self.prefix, node, cmd)
    }

    fn ok(&self, node: &str, cmd: &[&str]) -> String {
        let o = self.exec(node, cmd);
        assert!(o.status.success(), "{node}: {cmd:?}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    fn sh(&self, node: &str, script: &str) -> Output {
        self.exec(node, &["bash", "-c", script])
    }

    /// Can `node` open a TCP connection to ip:port within 3 s?
    fn connects(&self, node: &str, ip: &str, port: u16) -> bool {
        self.sh(node, &format!("timeout 3 bash -c '</dev/tcp/{ip}/{port}'"))
            .status
            .success()
    }
}

/// What kvm-host manages on a host, for the re-run comparison: file contents and unit states.
const MANAGED: &str = "for f in /etc/libvirt/libvirtd.conf /etc/libvirt/libvirt.conf \
    /etc/default/libvirtd /etc/libvirt/qemu.conf /etc/overlayd/cloudstack/overlay_libvirt.nft \
    /etc/systemd/system/overlay-cloudstack-guard@.service /etc/cloudstack/agent/agent.properties; \
    do echo \"$f $(sha256sum < \"$f\" 2>/dev/null || echo missing)\"; done; \
    for u in libvirtd.service libvirtd.socket libvirtd-ro.socket libvirtd-admin.socket \
    libvirtd-tcp.socket libvirtd-tls.socket overlay-cloudstack-guard@overlay_libvirt.service; \
    do echo \"$u $(systemctl is-enabled $u 2>&1)\"; done; nft list table inet overlay_libvirt";

#[test]
fn kvm_host_prepares_libvirt_reachable_over_the_overlay_only() {
    let test = "kvm_host_prepares_libvirt_reachable_over_the_overlay_only";
    let Some(deb) = deb(test) else {
        return;
    };
    let _g = heavy_lock();
    let prefix = unique_prefix("cs");
    let deb_arg = deb.to_string_lossy().into_owned();
    let lab = Lab::up(
        &prefix,
        &[
            "--instances",
            "--deb",
            &deb_arg,
            "--hosts",
            "2",
            "--vms-per-host",
            "0",
        ],
    )
    .unwrap();
    assert_eq!(
        lab.up["reachability"]["all_ok"], true,
        "{}",
        lab.up["reachability"]
    );
    let n = Nodes { prefix: &prefix };
    let hosts = [
        ("h1", "10.101.0.10", "10.0.0.10"),
        ("h2", "10.101.0.11", "10.0.0.11"),
    ];

    // the user-data's entry point, as the stack runs it (no CloudStack packages here)
    for (h, _, _) in hosts {
        let o = n.exec(
            h,
            &[
                "/usr/share/overlayd/cloudstack/install-host",
                "--skip-cloudstack-packages",
            ],
        );
        assert!(o.status.success(), "{h}: install-host: {}", text(&o));
        assert_eq!(n.ok(h, &["systemctl", "is-active", "libvirtd"]), "active");
    }

    // the live-migration path: each host's libvirtd from the other, across the overlay
    for ((from, _, _), (_, peer, _)) in [(hosts[0], hosts[1]), (hosts[1], hosts[0])] {
        let uri = format!("qemu+tcp://{peer}/system");
        let got = n.ok(from, &["virsh", "-c", &uri, "uri"]);
        assert_eq!(got, uri, "{from} -> {peer}");
        assert!(n.connects(from, peer, 16509), "{from} -> {peer}:16509");
    }
    // not from the VPC: neither at the overlay address (routed by the router) nor the VPC one
    for (h, overlay, vpc) in hosts {
        for ip in [overlay, vpc] {
            assert!(
                !n.connects("client", ip, 16509),
                "the VPC client reached {h}'s libvirtd at {ip}:16509"
            );
        }
        // and on the VPC address not even from another host: libvirtd listens on the overlay
        // address only
        let other = if h == "h1" { "h2" } else { "h1" };
        assert!(!n.connects(other, vpc, 16509), "{other} -> {vpc}:16509");
    }

    // a re-run changes nothing
    let before: Vec<String> = hosts
        .iter()
        .map(|(h, _, _)| n.ok(h, &["bash", "-c", MANAGED]))
        .collect();
    for (i, (h, _, _)) in hosts.iter().enumerate() {
        let o = n.exec(
            h,
            &[
                "/usr/share/overlayd/cloudstack/kvm-host",
                "--skip-cloudstack-packages",
            ],
        );
        assert!(o.status.success(), "{h}: re-run: {}", text(&o));
        let after = n.ok(h, &["bash", "-c", MANAGED]);
        assert_eq!(
            before[i], after,
            "{h}: the re-run changed what kvm-host manages"
        );
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(
            !out.contains("[change]") && !out.contains("restart"),
            "{h}: the re-run did something:\n{out}"
        );
    }

    // the management server's guard: 8250 (agents, system VMs) from the overlay only, the UI
    // (8080) open; a listener stands in for CloudStack on both ports
    for port in ["8250", "8080"] {
        n.ok(
            "mgmt",
            &[
                "systemd-run",
                &format!("--unit=stand-in-{port}"),
                "python3",
                "-m",
                "http.server",
                port,
            ],
        );
    }
    let pw = "printf 'Passw0rdPassw0rd\\n' > /root/db.pw && chmod 600 /root/db.pw";
    assert!(n.sh("mgmt", pw).status.success());
    // packages skipped, no EFS: the guard is installed before the database step, which has no
    // database to reach here (exit 1 there; the steps before it are done)
    let o = n.exec(
        "mgmt",
        &[
            "/usr/share/overlayd/cloudstack/install-management",
            "--skip-cloudstack-packages",
            "--skip-efs",
            "--db-host",
            "127.0.0.1",
            "--db-password-file",
            "/root/db.pw",
            "--db-admin-password-file",
            "/root/db.pw",
        ],
    );
    assert_eq!(
        n.ok(
            "mgmt",
            &[
                "systemctl",
                "is-active",
                "overlay-cloudstack-guard@overlay_mgmt.service"
            ]
        ),
        "active",
        "install-management: {}",
        text(&o)
    );
    for _ in 0..50 {
        if n.connects("mgmt", "127.0.0.1", 8250) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        n.connects("h1", "10.101.0.2", 8250),
        "h1 -> mgmt:8250 over the overlay"
    );
    assert!(
        !n.connects("client", "10.101.0.2", 8250),
        "client -> mgmt:8250"
    );
    assert!(
        !n.connects("client", "10.0.0.5", 8250),
        "client -> mgmt's VPC address:8250"
    );
    assert!(
        n.connects("client", "10.0.0.5", 8080),
        "the UI stays reachable from the VPC"
    );
    drop(lab);
}
