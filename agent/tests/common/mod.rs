//! Network-namespace fixtures for the agent's root tests.
#![allow(dead_code)]

use overlay_testkit::NsGuard;
use std::path::PathBuf;
use std::process::{Command, Output};

/// Root + netns available? The one gate: under CI=true a missing capability is a failure.
pub fn require_root(test: &str) -> bool {
    overlay_testkit::gate(test, &["ip"], || Ok(()))
}

pub fn overlayd() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let p = dir.join("overlayd");
    assert!(
        p.exists(),
        "{} missing: run `cargo build --bins` first",
        p.display()
    );
    p
}

fn check(o: Output, what: &str) -> String {
    if !o.status.success() {
        panic!(
            "{what} failed ({}):\nstdout: {}\nstderr: {}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    String::from_utf8_lossy(&o.stdout).to_string()
}

pub fn sh(cmd: &str) -> String {
    check(Command::new("sh").arg("-c").arg(cmd).output().unwrap(), cmd)
}

/// A namespace pair: `node` (the overlayd under test, underlay eth0 10.77.0.2/24, and, as on
/// EC2, a DHCP default route via 10.77.0.1) and `peer` (the other end of eth0). Both deleted on drop, even when the test panics.
pub struct Ns {
    pub name: String,
    pub peer: String,
    pub dir: PathBuf,
    _guard: NsGuard,
}

impl Ns {
    pub fn new(tag: &str) -> Ns {
        let name = overlay_testkit::unique_name(&format!("oa{tag}"));
        let peer = format!("{name}p");
        let dir = std::env::temp_dir().join(format!("overlayd-test-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("hosts"), "127.0.0.1 localhost\n").unwrap();
        let guard = NsGuard::new(&[&name, &peer]);
        let ns = Ns {
            name,
            peer,
            dir,
            _guard: guard,
        };
        sh(&format!(
            "ip link add eth0 netns {n} type veth peer name eth0 netns {p} && \
             ip -n {n} link set lo up && ip -n {n} addr add 10.77.0.2/24 dev eth0 && ip -n {n} link set eth0 up && \
             ip -n {n} route add default via 10.77.0.1 dev eth0 proto dhcp && \
             ip -n {p} link set lo up && ip -n {p} addr add 10.77.0.1/24 dev eth0 && ip -n {p} link set eth0 up",
            n = ns.name,
            p = ns.peer
        ));
        ns
    }

    pub fn ip(&self, args: &str) -> String {
        sh(&format!("ip -n {} {args}", self.name))
    }

    pub fn exec(&self, cmd: &str) -> String {
        sh(&format!("ip netns exec {} {cmd}", self.name))
    }

    /// Flags that keep overlayd's files inside this test's directory.
    pub fn base_args(&self) -> Vec<String> {
        let d = self.dir.display();
        vec![
            "--underlay".into(),
            "eth0".into(),
            "--state-dir".into(),
            format!("{d}/state"),
            "--hosts-file".into(),
            format!("{d}/hosts"),
            "--resolv-conf".into(),
            format!("{d}/resolv.conf"),
            "--control-socket".into(),
            format!("{d}/ctl.sock"),
            "--metrics-address".into(),
            "off".into(),
        ]
    }

    /// Role flags followed by [`Ns::base_args`].
    pub fn args(&self, flags: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
        v.extend(self.base_args());
        v
    }

    pub fn host_args(&self) -> Vec<String> {
        self.args(&[
            "--role",
            "host",
            "--address",
            "10.101.0.10/16",
            "--gateway",
            "10.101.0.1",
            "--group",
            "239.255.0.1",
        ])
    }

    pub fn overlayd(&self, sub: &str, args: &[String]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .arg(overlayd())
            .arg(sub)
            .args(args)
            .output()
            .unwrap()
    }

    pub fn overlayd_ok(&self, sub: &str, args: &[String]) -> String {
        check(self.overlayd(sub, args), &format!("overlayd {sub}"))
    }

    /// Number of planned operations (0 = converged).
    pub fn pending(&self, args: &[String]) -> usize {
        let out = self.overlayd_ok("plan", &[args, &["--json".to_string()]].concat());
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["ops"].as_array().unwrap().len()
    }

    /// The VTEP's all-zeros FDB destinations (unicast flooding's peers), sorted.
    pub fn flood_list(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .exec("bridge fdb show dev ethvxlan0")
            .lines()
            .filter(|l| l.starts_with("00:00:00:00:00:00"))
            .filter_map(|l| {
                l.split_whitespace()
                    .skip_while(|w| *w != "dst")
                    .nth(1)
                    .map(String::from)
            })
            .collect();
        v.sort();
        v
    }

    pub fn sysctl(&self, key: &str) -> String {
        self.exec(&format!("cat /proc/sys/{key}"))
            .trim()
            .to_string()
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        // the namespaces (and every process in them) go with the guard
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
