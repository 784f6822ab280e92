//! `overlay-gen OUT_DIR`: writes, from the binaries' own clap definitions,
//! - `OUT_DIR/man/`: `overlayd.8`, `overlayd-<command>.8` (section 8: a system daemon and its
//!   administration commands) and `overlayctl.1`, `overlayctl-<command>.1`;
//! - `OUT_DIR/completions/`: `<bin>.bash`, `_<bin>` (zsh), `<bin>.fish`.
//!
//! scripts/package runs it and compresses the man pages; the packages install both.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Command, CommandFactory};
use clap_complete::Shell;

fn main() -> Result<()> {
    let out: PathBuf = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .context("usage: overlay-gen OUT_DIR")?;
    let man = out.join("man");
    let completions = out.join("completions");
    fs::create_dir_all(&man)?;
    fs::create_dir_all(&completions)?;
    for (cmd, section) in [
        (overlay_agent::cli::Cli::command(), "8"),
        (overlay_ctl::cli::Cli::command(), "1"),
    ] {
        let mut n = man_pages(cmd.clone(), section, &man)?;
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut cmd = cmd.clone();
            let name = cmd.get_name().to_string();
            clap_complete::generate_to(shell, &mut cmd, name, &completions)?;
            n += 1;
        }
        println!("overlay-gen: {} ({n} files)", cmd.get_name());
    }
    Ok(())
}

/// One page for the command and one per (visible) subcommand, named `<bin>-<sub>`.
fn man_pages(mut cmd: Command, section: &str, dir: &Path) -> Result<usize> {
    cmd.build();
    let bin = cmd.get_name().to_string();
    page(&cmd, section, dir)?;
    let mut n = 1;
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        let named = sub.clone().name(format!("{bin}-{}", sub.get_name()));
        page(&named, section, dir)?;
        n += 1;
    }
    Ok(n)
}

fn page(cmd: &Command, section: &str, dir: &Path) -> Result<()> {
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .section(section)
        .render(&mut buf)?;
    let path = dir.join(format!("{}.{section}", cmd.get_name()));
    fs::write(&path, buf).with_context(|| format!("write {}", path.display()))
}
