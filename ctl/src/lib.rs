//! overlayctl: provisions and tears down the AWS side of the overlay (transit gateway multicast,
//! security groups, router routes, EFS, Secrets Manager, RDS). AWS is the state: every resource
//! carries the tag `overlay:cluster=<name>` and is found again by it. `doctor` reads the same
//! resources (and the VPC around them) and names what is wrong.

pub mod aws;
pub mod bootstrap;
pub mod cli;
pub mod config;
pub mod ctx;
pub mod doctor;
pub mod ec2;
pub mod efs;
pub mod error;
pub mod iam;
pub mod model;
pub mod rds;
pub mod teardown;
