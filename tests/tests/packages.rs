//! The packages scripts/package builds (the README's test command builds them before the
//! tests): static binaries free of NSS, lintian clean, RPM metadata, the files an operator
//! expects. The .rpm is not installed anywhere: no EL root filesystem can be built from the
//! mirrors these machines reach (the .deb is installed by the instance-lab tests).

use overlay_tests::*;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// target/package of this build, with the packages of revision 1 (None, after saying why or
/// panicking under CI=true, when they cannot be checked here).
fn packages(test: &str) -> Option<PathBuf> {
    let dir = bin_dir().parent().unwrap().join("package");
    let ok = overlay_testkit::gate(
        test,
        &["dpkg-deb", "lintian", "rpm", "file", "strace"],
        || {
            for f in [
                "overlayd_0.1.0-1_amd64.deb",
                "overlayctl_0.1.0-1_amd64.deb",
                "overlayd-0.1.0-1.x86_64.rpm",
                "overlayctl-0.1.0-1.x86_64.rpm",
            ] {
                if !dir.join(f).is_file() {
                    return Err(format!(
                        "{} missing: run scripts/package",
                        dir.join(f).display()
                    ));
                }
            }
            Ok(())
        },
    );
    ok.then_some(dir)
}

fn out(c: &mut Command) -> String {
    let o = run(c, Duration::from_secs(120)).unwrap();
    assert!(o.status.success(), "{:?}: {}", c, text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Unpacks a .deb into a fresh directory.
fn unpack(deb: &PathBuf, tag: &str) -> PathBuf {
    let d = temp_dir(tag);
    out(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&d));
    d
}

#[test]
fn binaries_are_static_and_resolve_names_without_nss() {
    let Some(dir) = packages("binaries_are_static_and_resolve_names_without_nss") else {
        return;
    };
    let d = unpack(&dir.join("overlayd_0.1.0-1_amd64.deb"), "pkgd");
    let c = unpack(&dir.join("overlayctl_0.1.0-1_amd64.deb"), "pkgc");
    for bin in [d.join("usr/sbin/overlayd"), c.join("usr/bin/overlayctl")] {
        let f = out(Command::new("file").arg("-b").arg(&bin));
        assert!(f.contains("statically linked"), "{}: {f}", bin.display());
        // ldd refuses a static executable
        let o = run(Command::new("ldd").arg(&bin), Duration::from_secs(10)).unwrap();
        assert!(
            text(&o).contains("not a dynamic executable"),
            "ldd {}: {}",
            bin.display(),
            text(&o)
        );
    }
    // overlayctl resolves `localhost` (its endpoint) itself: no libnss module or nsswitch.conf
    // is ever opened (a static glibc binary using getaddrinfo would dlopen libnss_files).
    let cfg = temp_dir("pkgcfg").join("cluster.toml");
    std::fs::write(
        &cfg,
        "name = \"nss\"\nregion = \"us-east-1\"\nvpc_id = \"vpc-0123456789abcdef0\"\n\
         subnet_id = \"subnet-0123456789abcdef0\"\nsecond_subnet_id = \"subnet-0123456789abcdef1\"\n\
         overlay_cidr = \"100.64.0.0/16\"\nmulticast_group = \"239.1.1.1\"\n\
         router_instance_id = \"i-0123456789abcdef0\"\naccess_cidr = \"203.0.113.0/24\"\n",
    )
    .unwrap();
    let trace = temp_dir("pkgtrace").join("strace.txt");
    let o = run(
        Command::new("strace")
            .args(["-f", "-e", "trace=openat,open,connect", "-o"])
            .arg(&trace)
            .arg(c.join("usr/bin/overlayctl"))
            .args(["status", "--config"])
            .arg(&cfg)
            .args(["--endpoint-url", "http://localhost:9"])
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_EC2_METADATA_DISABLED", "true"),
        Duration::from_secs(60),
    )
    .unwrap();
    let t = std::fs::read_to_string(&trace).unwrap();
    assert!(
        !t.contains("libnss"),
        "overlayctl opened an NSS module:\n{t}"
    );
    assert!(
        !t.contains("nsswitch.conf"),
        "overlayctl read nsswitch.conf:\n{t}"
    );
    assert!(
        t.contains("/etc/hosts"),
        "expected hickory to read /etc/hosts for localhost:\n{t}"
    );
    // it did try the endpoint: a connection to 127.0.0.1:9 (refused), then exit 1
    assert!(t.contains("htons(9)"), "no connect to port 9:\n{t}");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
}

#[test]
fn lintian_finds_no_errors() {
    let Some(dir) = packages("lintian_finds_no_errors") else {
        return;
    };
    let o = run(
        Command::new("lintian")
            .arg(dir.join("overlayd_0.1.0-1_amd64.deb"))
            .arg(dir.join("overlayctl_0.1.0-1_amd64.deb")),
        Duration::from_secs(300),
    )
    .unwrap();
    let report = text(&o);
    println!("lintian:\n{report}");
    let errors: Vec<&str> = report.lines().filter(|l| l.starts_with("E:")).collect();
    assert!(errors.is_empty(), "lintian errors:\n{}", errors.join("\n"));
    // the override for the static binary is used, not just shipped
    assert!(!report.contains("statically-linked-binary"), "{report}");
}

#[test]
fn deb_contents_and_maintainer_scripts() {
    let Some(dir) = packages("deb_contents_and_maintainer_scripts") else {
        return;
    };
    let deb = dir.join("overlayd_0.1.0-1_amd64.deb");
    let list = out(Command::new("dpkg-deb").arg("-c").arg(&deb));
    for f in [
        "./usr/sbin/overlayd",
        "./lib/systemd/system/overlayd.service",
        "./etc/overlayd/overlayd.toml",
        "./usr/lib/NetworkManager/conf.d/90-overlayd-unmanaged.conf",
        "./usr/lib/systemd/network/05-overlayd-unmanaged.network",
        "./usr/lib/systemd/network/10-overlayd.link",
        "./usr/share/man/man8/overlayd.8.gz",
        "./usr/share/man/man8/overlayd-run.8.gz",
        "./usr/share/bash-completion/completions/overlayd",
        "./usr/share/zsh/vendor-completions/_overlayd",
        "./usr/share/fish/vendor_completions.d/overlayd.fish",
        "./usr/share/doc/overlayd/operations.md",
        "./usr/share/doc/overlayd/copyright",
        "./usr/share/overlayd/router-pair.conf",
        "./usr/share/overlayd/evpn.conf",
    ] {
        assert!(list.contains(f), "{f} not in {}:\n{list}", deb.display());
    }
    let info = out(Command::new("dpkg-deb").arg("-f").arg(&deb));
    assert!(info.contains("Depends: nftables\n"), "{info}");
    assert!(info.contains("Recommends: keepalived, frr\n"), "{info}");
    let ctl = out(Command::new("dpkg-deb")
        .arg("-f")
        .arg(dir.join("overlayctl_0.1.0-1_amd64.deb")));
    // (cargo-deb writes an empty Depends: for a static binary; lintian warns, no error)
    let ctl_deps = ctl
        .lines()
        .find_map(|l| l.strip_prefix("Depends:"))
        .unwrap_or("")
        .trim();
    assert_eq!(ctl_deps, "", "overlayctl needs nothing:\n{ctl}");
    let ctl_list = out(Command::new("dpkg-deb")
        .arg("-c")
        .arg(dir.join("overlayctl_0.1.0-1_amd64.deb")));
    for f in [
        "./usr/bin/overlayctl",
        "./usr/share/man/man1/overlayctl-bootstrap.1.gz",
    ] {
        assert!(ctl_list.contains(f), "{f}:\n{ctl_list}");
    }
    let ctrl = temp_dir("pkgctrl");
    out(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&ctrl));
    let conffiles = std::fs::read_to_string(ctrl.join("conffiles")).unwrap();
    assert!(
        conffiles.contains("/etc/overlayd/overlayd.toml"),
        "{conffiles}"
    );
    let postrm = std::fs::read_to_string(ctrl.join("postrm")).unwrap();
    assert!(postrm.contains("rm -rf /var/lib/overlayd"), "{postrm}");
    // the man page was generated from the same clap definition the binary parses
    let man = out(Command::new("sh").arg("-c").arg(format!(
        "gzip -dc {}",
        unpack(&deb, "pkgman")
            .join("usr/share/man/man8/overlayd-run.8.gz")
            .display()
    )));
    assert!(
        man.contains("resync"),
        "overlayd-run.8 does not describe run's flags:\n{man}"
    );
}

#[test]
fn rpm_metadata() {
    let Some(dir) = packages("rpm_metadata") else {
        return;
    };
    let rpm = dir.join("overlayd-0.1.0-1.x86_64.rpm");
    let info = out(Command::new("rpm").arg("-qpi").arg(&rpm));
    assert!(info.contains("License     : Apache-2.0"), "{info}");
    assert!(info.contains("URL         : https://"), "{info}");
    let req = out(Command::new("rpm").arg("-qpR").arg(&rpm));
    let deps: Vec<&str> = req
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("rpmlib(") && *l != "/bin/sh" && !l.starts_with("config("))
        .collect();
    assert_eq!(deps, ["nftables"], "overlayd's only dependency:\n{req}");
    let rec = out(Command::new("rpm").arg("-qp").arg("--recommends").arg(&rpm));
    assert_eq!(
        rec.lines()
            .map(str::trim)
            .collect::<std::collections::BTreeSet<_>>(),
        ["frr", "keepalived"].into(),
        "the router pair's keepalived, flood = evpn's FRR:\n{rec}"
    );
    let ctl_req = out(Command::new("rpm")
        .arg("-qpR")
        .arg(dir.join("overlayctl-0.1.0-1.x86_64.rpm")));
    assert!(
        ctl_req.lines().all(|l| l.starts_with("rpmlib(")),
        "overlayctl needs nothing:\n{ctl_req}"
    );
    let conf = out(Command::new("rpm").arg("-qpc").arg(&rpm));
    assert_eq!(conf.trim(), "/etc/overlayd/overlayd.toml");
    let files = out(Command::new("rpm").arg("-qpl").arg(&rpm));
    for f in [
        "/usr/sbin/overlayd",
        "/usr/lib/systemd/system/overlayd.service",
        "/usr/share/man/man8/overlayd.8.gz",
        "/usr/share/overlayd/evpn.conf",
    ] {
        assert!(files.lines().any(|l| l == f), "{f}:\n{files}");
    }
    let scripts = out(Command::new("rpm").arg("-qp").arg("--scripts").arg(&rpm));
    assert!(
        scripts.contains("try-restart overlayd.service"),
        "{scripts}"
    );
    assert!(scripts.contains("rm -rf /var/lib/overlayd"), "{scripts}");
}
