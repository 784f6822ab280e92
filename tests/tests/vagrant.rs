//! The vagrant lab (vagrant/): `vagrant validate` with Debian's vagrant and vagrant-libvirt
//! (the libvirt provider's settings checked), with every provider setting ignored, and with
//! bad input (each refused with the variable's name). `vagrant up` cannot run here: no box
//! can be downloaded and these machines have no nested KVM (vagrant/README.md).

use std::path::PathBuf;
use std::process::{Command, Output};

fn vagrant_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("vagrant")
}

/// `vagrant ARGS` in vagrant/ with `env`, its state in a temporary directory (nothing is
/// written under vagrant/ or ~/.vagrant.d). None: vagrant missing outside CI (skip).
fn vagrant(args: &[&str], env: &[(&str, &str)]) -> Option<Output> {
    if Command::new("vagrant").arg("--version").output().is_err() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("vagrant missing and CI=true: scripts/install-deps installs it");
        }
        eprintln!("SKIPPED: vagrant not installed (apt-get install vagrant vagrant-libvirt)");
        return None;
    }
    let state = overlay_tests::TempDir(overlay_tests::temp_dir("vagrant"));
    let mut c = Command::new("vagrant");
    c.args(args)
        .current_dir(vagrant_dir())
        .env("VAGRANT_DOTFILE_PATH", state.0.join("dot"))
        .env("VAGRANT_HOME", state.0.join("home"))
        .env("VAGRANT_CHECKPOINT_DISABLE", "1")
        .env_remove("BOX")
        .env_remove("HOSTS");
    for (k, v) in env {
        c.env(k, v);
    }
    Some(c.output().unwrap())
}

fn text(o: &Output) -> String {
    format!(
        "{}\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn vagrantfile_validates_for_libvirt_and_any_provider() {
    let libvirt_plugin = Command::new("dpkg-query")
        .args(["-W", "-f", "${Status}", "vagrant-libvirt"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("ok installed"))
        .unwrap_or(false);
    let Some(o) = vagrant(&["validate", "--ignore-provider"], &[]) else {
        return;
    };
    assert!(
        o.status.success(),
        "vagrant validate --ignore-provider: {}",
        text(&o)
    );
    if libvirt_plugin || std::env::var("CI").as_deref() == Ok("true") {
        let o = vagrant(&["validate"], &[("VAGRANT_DEFAULT_PROVIDER", "libvirt")]).unwrap();
        assert!(
            o.status.success(),
            "vagrant validate (libvirt): {}",
            text(&o)
        );
    }
    for (env, what) in [
        (
            vec![("BOX", "generic/rocky9"), ("HOSTS", "5")],
            "an EL box, 5 hosts",
        ),
        (vec![("BOX", "bento/ubuntu-24.04")], "an Ubuntu box"),
    ] {
        let o = vagrant(&["validate", "--ignore-provider"], &env).unwrap();
        assert!(o.status.success(), "{what}: {}", text(&o));
    }
}

#[test]
fn vagrantfile_refuses_bad_settings_naming_them() {
    for (k, v) in [("HOSTS", "0"), ("HOSTS", "abc"), ("BOX", "nope/nope")] {
        let Some(o) = vagrant(&["validate", "--ignore-provider"], &[(k, v)]) else {
            return;
        };
        assert!(!o.status.success(), "{k}={v} accepted: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(k) && err.contains(v),
            "{k}={v}: the error names the variable and value: {}",
            text(&o)
        );
    }
}
