// SPDX-License-Identifier: GPL-2.0

//! `miglockd`: the miglock host agent.
//!
//! Serves each configured VM's doorbell (QEMU chardev socket), keeps every
//! VM's lock state and policy, writes each decision to the audit log, and
//! gates migrations requested through the control socket (miglockctl).

mod agent;
mod audit;
mod blocker;
mod control;
mod enforce;
mod fence;
mod gate;
mod hints;
mod incoming;
mod ledger;
mod libvirt;
mod planner;
mod session;
mod store;
mod watcher;

use anyhow::{Context, Result};
use clap::Parser;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

#[derive(Parser)]
#[command(version, about = "miglock host agent")]
struct Cli {
    /// Configuration file (TOML; see Documentation/admin-guide.rst).
    #[arg(long, short)]
    config: PathBuf,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let text = std::fs::read_to_string(&cli.config)
        .with_context(|| format!("reading {}", cli.config.display()))?;
    let config: agent::Config =
        toml::from_str(&text).with_context(|| format!("parsing {}", cli.config.display()))?;
    let agent = Arc::new(agent::Agent::new(&config)?);
    let listener = control::bind(&config.control)?;
    agent.audit.record(
        "-",
        "agent-start",
        serde_json::json!({"epoch": agent.epoch, "vms": agent.vms.keys().collect::<Vec<_>>()}),
    );
    eprintln!(
        "miglockd: serving {} VM(s); control socket {}",
        agent.vms.len(),
        config.control.display()
    );
    let stop = Arc::new(AtomicBool::new(false));
    for vm in agent.vms.values() {
        let (a, v, s) = (agent.clone(), vm.clone(), stop.clone());
        std::thread::spawn(move || session::run(a, v, s));
        let (a, v, s) = (agent.clone(), vm.clone(), stop.clone());
        std::thread::spawn(move || watcher::run(a, v, s));
        if vm.config.libvirt.is_some() {
            let (tx, rx) = std::sync::mpsc::channel();
            *vm.published.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
            let (a, v) = (agent.clone(), vm.clone());
            std::thread::spawn(move || libvirt::publisher(a, v, rx));
        }
    }
    control::serve(agent, listener);
    Ok(())
}
