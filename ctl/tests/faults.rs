//! Inject a failure at each mutating step of bootstrap in turn (both before the call reaches AWS
//! and after AWS executed it but the response was lost) and assert that a re-run converges, and
//! that a third run then makes zero mutating calls.

mod common;

use common::*;

/// The distinct mutating actions of a clean bootstrap, in first-seen order.
async fn mutating_steps(emu: &Emulator) -> Vec<String> {
    let sdk = sdk(emu).await;
    let seed = seed(&sdk).await;
    let cfg = write_config(emu, "cluster.toml", &config_text(&seed));
    emu.reset_calls();
    let r = overlayctl(emu, &["bootstrap", "--config", &cfg, "-q"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let mut steps: Vec<String> = Vec::new();
    for (_, action, _) in emu.mutating_calls() {
        if !steps.contains(&action) {
            steps.push(action);
        }
    }
    assert!(steps.len() >= 15, "{steps:?}");
    steps
}

async fn fail_each_step(when: &str) {
    let Some(emu) = Emulator::start() else { return };
    let steps = mutating_steps(&emu).await;
    for step in &steps {
        emu.reset_all();
        let sdk = sdk(&emu).await;
        let seed = seed(&sdk).await;
        let cfg = write_config(&emu, "cluster.toml", &config_text(&seed));
        emu.fail_next(step, when);
        let first = overlayctl(&emu, &["bootstrap", "--config", &cfg, "-q"]);
        assert_eq!(
            first.code,
            1,
            "fault on {step} ({when}) must fail the run:\n{}",
            first.all()
        );
        assert!(
            first.stderr.contains(step.as_str()),
            "error names the failed call {step}:\n{}",
            first.stderr
        );
        let injected = emu
            .mutating_calls()
            .iter()
            .any(|(_, a, failed)| a == step && *failed);
        assert!(injected, "fault on {step} was not hit");

        let second = overlayctl(&emu, &["bootstrap", "--config", &cfg, "-q"]);
        assert_eq!(
            second.code,
            0,
            "re-run after a fault on {step} ({when}):\n{}",
            second.all()
        );
        verify_converged(&sdk, &seed).await;

        emu.reset_calls();
        let third = overlayctl(&emu, &["bootstrap", "--config", &cfg, "-q"]);
        assert_eq!(third.code, 0, "{}", third.all());
        assert_eq!(
            emu.mutating_calls(),
            vec![],
            "after fault on {step} ({when}) the cluster is not converged"
        );
    }
}

#[tokio::test]
async fn fault_before_each_mutating_step_then_rerun_converges() {
    fail_each_step("before").await;
}

#[tokio::test]
async fn lost_response_of_each_mutating_step_then_rerun_converges() {
    fail_each_step("after").await;
}

/// Teardown interrupted at each of its mutating steps resumes on re-run.
#[tokio::test]
async fn fault_at_each_teardown_step_then_rerun_finishes() {
    let Some(emu) = Emulator::start() else { return };
    let sdk = sdk(&emu).await;
    let s0 = seed(&sdk).await;
    let cfg = write_config(&emu, "cluster.toml", &config_text(&s0));
    let r = overlayctl(&emu, &["bootstrap", "--config", &cfg, "-q"]);
    assert_eq!(r.code, 0, "{}", r.all());
    emu.reset_calls();
    let r = overlayctl(&emu, &["teardown", "--config", &cfg, "--yes", "-q"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let mut steps: Vec<String> = Vec::new();
    for (_, action, _) in emu.mutating_calls() {
        if !steps.contains(&action) {
            steps.push(action);
        }
    }
    for step in &steps {
        emu.reset_all();
        let s1 = seed(&sdk).await;
        let cfg = write_config(&emu, "cluster.toml", &config_text(&s1));
        let r = overlayctl(&emu, &["bootstrap", "--config", &cfg, "-q"]);
        assert_eq!(r.code, 0, "{}", r.all());
        emu.fail_next(step, "before");
        let first = overlayctl(&emu, &["teardown", "--config", &cfg, "--yes", "-q"]);
        assert_eq!(first.code, 1, "fault on {step}:\n{}", first.all());
        let second = overlayctl(&emu, &["teardown", "--config", &cfg, "--yes", "-q"]);
        assert_eq!(
            second.code,
            0,
            "re-run after fault on {step}:\n{}",
            second.all()
        );
        let g = sdk
            .ec2
            .describe_security_groups()
            .filters(tag_filter())
            .send()
            .await
            .unwrap();
        assert!(g.security_groups().is_empty(), "after fault on {step}");
        emu.reset_calls();
        let third = overlayctl(&emu, &["teardown", "--config", &cfg, "--yes", "-q"]);
        assert_eq!(third.code, 0);
        assert_eq!(emu.mutating_calls(), vec![], "after fault on {step}");
    }
}
