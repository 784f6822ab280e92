//! The MySQL major of the database: a new cluster gets `model::DB_MYSQL` (8.4, no cost note); a
//! cluster whose instance still runs 8.0 (created before the switch) keeps 8.0 and its
//! `-mysql80` parameter group — no major version upgrade as a side effect, a re-run mutates
//! nothing — and plan/bootstrap state the RDS Extended Support cost; teardown removes the old
//! parameter group too.

mod common;

use aws_sdk_rds::types::Tag;
use common::*;
use overlay_ctl::model;

fn notes(v: &serde_json::Value) -> String {
    v["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

fn tags(role: &str) -> Vec<Tag> {
    [("overlay:cluster", "lab1"), ("overlay:role", role)]
        .into_iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

async fn parameter_groups(sdk: &Sdk) -> Vec<String> {
    let mut v: Vec<String> = sdk
        .rds
        .describe_db_parameter_groups()
        .send()
        .await
        .unwrap()
        .db_parameter_groups()
        .iter()
        .filter_map(|g| g.db_parameter_group_name().map(str::to_string))
        .filter(|n| n.starts_with("overlay-lab1-"))
        .collect();
    v.sort();
    v
}

const COST: &str =
    "RDS MySQL 8.0 is in RDS Extended Support since 2026-07-31 (billed per vCPU-hour)";

#[tokio::test]
async fn an_instance_on_mysql_8_0_keeps_its_major_and_the_cost_is_stated() {
    let Some(emu) = Emulator::start() else { return };
    let sdk = sdk(&emu).await;
    let seed = seed(&sdk).await;
    let cfg = write_config(&emu, "cluster.toml", &config_text(&seed));

    // a cluster whose database an earlier overlayctl created on MySQL 8.0
    sdk.rds
        .create_db_parameter_group()
        .db_parameter_group_name("overlay-lab1-mysql80")
        .db_parameter_group_family("mysql8.0")
        .description("overlay lab1 CloudStack settings")
        .set_tags(Some(tags("db-parameter-group")))
        .send()
        .await
        .unwrap();
    sdk.rds
        .create_db_instance()
        .db_instance_identifier("overlay-lab1-db")
        .engine("mysql")
        .engine_version("8.0.42")
        .db_instance_class("db.m6g.large")
        .allocated_storage(20)
        .max_allocated_storage(100)
        .master_username("admin")
        .master_user_password("legacy-password-0123456789")
        .db_parameter_group_name("overlay-lab1-mysql80")
        .set_tags(Some(tags("db")))
        .send()
        .await
        .unwrap();

    // plan: the 8.0 instance and its group are the ones planned, and the cost is stated
    emu.reset_calls();
    let plan = overlayctl(&emu, &["plan", "--config", &cfg, "-o", "json"]);
    assert_eq!(plan.code, 0, "{}", plan.all());
    let v: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    let n = notes(&v);
    assert!(n.contains(COST), "{n}");
    assert!(n.contains("--allow-major-version-upgrade"), "{n}");
    let items = v["plan"].as_array().unwrap();
    let pg = items
        .iter()
        .find(|i| i["resource"] == "db-parameter-group")
        .unwrap();
    assert_eq!(pg["id"], "overlay-lab1-mysql80");
    assert_eq!(pg["detail"], "mysql8.0");
    let db = items
        .iter()
        .find(|i| i["resource"] == "db-instance")
        .unwrap();
    assert!(
        db["detail"].as_str().unwrap().contains("mysql 8.0 "),
        "{db}"
    );
    assert!(!plan.stdout.contains("mysql84"), "{}", plan.stdout);
    assert!(
        emu.mutating_calls().is_empty(),
        "{:?}",
        emu.mutating_calls()
    );

    // bootstrap converges without a major version upgrade
    let run = overlayctl(&emu, &["bootstrap", "--config", &cfg]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.stdout.contains(COST), "{}", run.stdout);
    assert!(!emu
        .mutating_calls()
        .iter()
        .any(|(_, a, _)| a == "CreateDBInstance" || a == "CreateDBParameterGroup"));
    let d = sdk
        .rds
        .describe_db_instances()
        .db_instance_identifier("overlay-lab1-db")
        .send()
        .await
        .unwrap();
    let d = &d.db_instances()[0];
    assert_eq!(d.engine_version(), Some("8.0.42"));
    assert_eq!(
        d.db_parameter_groups()[0].db_parameter_group_name(),
        Some("overlay-lab1-mysql80")
    );
    assert_eq!(parameter_groups(&sdk).await, ["overlay-lab1-mysql80"]);
    let params = sdk
        .rds
        .describe_db_parameters()
        .db_parameter_group_name("overlay-lab1-mysql80")
        .source("user")
        .send()
        .await
        .unwrap();
    assert_eq!(params.parameters().len(), model::DB_PARAMETERS.len());

    // a re-run changes nothing
    emu.reset_calls();
    let again = overlayctl(&emu, &["bootstrap", "--config", &cfg]);
    assert_eq!(again.code, 0, "{}", again.all());
    assert!(
        emu.mutating_calls().is_empty(),
        "{:?}",
        emu.mutating_calls()
    );

    // teardown removes the 8.0 group with everything else
    let down = overlayctl(&emu, &["teardown", "--config", &cfg, "--yes", "-o", "json"]);
    assert_eq!(down.code, 0, "{}", down.all());
    let v: serde_json::Value = serde_json::from_str(&down.stdout).unwrap();
    assert!(
        v["deleted"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["id"] == "overlay-lab1-mysql80" && i["action"] == "delete"),
        "{}",
        down.stdout
    );
    nothing_tagged_left(&sdk).await;
    assert!(parameter_groups(&sdk).await.is_empty());

    // a new database is created on the decided major, without a cost note
    let plan = overlayctl(&emu, &["plan", "--config", &cfg, "-o", "json"]);
    assert_eq!(plan.code, 0, "{}", plan.all());
    let v: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    assert!(!notes(&v).contains("Extended Support"), "{}", notes(&v));
    let pg = v["plan"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["resource"] == "db-parameter-group")
        .unwrap()
        .clone();
    assert_eq!(pg["id"], db_parameter_group());
    assert_eq!(pg["detail"], model::DB_PARAMETER_GROUP_FAMILY);
    let run = overlayctl(&emu, &["bootstrap", "--config", &cfg]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(!run.stdout.contains("Extended Support"), "{}", run.stdout);
    let d = sdk
        .rds
        .describe_db_instances()
        .db_instance_identifier("overlay-lab1-db")
        .send()
        .await
        .unwrap();
    let engine = d.db_instances()[0].engine_version().unwrap();
    assert_eq!(
        model::engine_major(engine).as_deref(),
        Some(model::DB_ENGINE_VERSION)
    );
    assert_eq!(parameter_groups(&sdk).await, [db_parameter_group()]);
}
