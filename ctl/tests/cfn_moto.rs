//! cfn/cluster.yaml in moto's CloudFormation: the part moto can deploy (everything but the
//! Transit Gateway multicast chain, the instances and what moto lacks), created with
//! CreateStack on the AWS emulator and checked resource by resource with describe calls
//! (ctl/tests/cfn_moto.py; every workaround it applies is proven necessary each run by a
//! probe stack). Needs moto (scripts/aws-emulator) and boto3/PyYAML (scripts/requirements-ci.txt).

mod common;

use common::*;
use std::process::Command;

#[test]
fn the_non_tgw_part_of_the_cluster_template_deploys_in_moto_and_matches_the_template() {
    let Some(emu) = Emulator::start() else {
        return;
    };
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string());
    let o = Command::new(python)
        .arg(repo_root().join("ctl/tests/cfn_moto.py"))
        .arg(&emu.url)
        .current_dir(repo_root())
        .output()
        .expect("run ctl/tests/cfn_moto.py");
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    println!("{out}");
    assert!(
        o.status.success(),
        "cfn_moto.py: {}\n{out}\nemulator log:\n{}",
        o.status,
        emu.log()
    );
}
