// SPDX-License-Identifier: GPL-2.0

//! `miglockd`: the miglock host agent.
//!
//! Serves each configured VM's doorbell (QEMU chardev socket), keeps every
//! VM's lock state and policy, writes each decision to the audit log, and
//! gates migrations requested through the control socket (miglockctl).

mod agent;
mod audit;
mod blocker;
mod bucket;
mod change;
mod checkpoint;
mod clock;
mod commit;
mod control;
mod dial;
mod enforce;
mod fence;
mod gate;
mod hints;
mod incoming;
mod journal;
mod ledger;
mod libvirt;
mod log;
mod outbox;
mod pause;
mod planner;
mod runahead;
mod session;
mod store;
mod watcher;

use anyhow::Result;
use clap::Parser;
use miglockd::cli::Daemon;
use nix::sys::signal::{SigSet, Signal};
use sd_notify::NotifyState;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use tracing::{error, info, warn};

fn main() -> ExitCode {
    let cli = Daemon::parse();
    log::init();
    let config = match agent::Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            error!("{e:#}");
            return ExitCode::FAILURE;
        }
    };
    if cli.check_config {
        println!(
            "{}: valid; {} VM(s); state {}, audit {}, control {}",
            cli.config.display(),
            config.vms.len(),
            config.state.display(),
            config.audit.display(),
            config.control.display()
        );
        return ExitCode::SUCCESS;
    }
    match serve(&config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The signals the agent handles itself, on its own thread.
fn handled() -> SigSet {
    let mut set = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        set.add(s);
    }
    set
}

fn serve(config: &agent::Config) -> Result<()> {
    // Blocked before any thread starts, so every thread inherits the mask
    // and only the signal thread (sigwait) ever sees them.
    handled().thread_block()?;
    let agent = Arc::new(agent::Agent::new(config)?);
    let listener = control::bind(&config.control)?;
    agent.audit.record(
        "-",
        "agent-start",
        serde_json::json!({"epoch": agent.epoch, "vms": agent.vms.keys().collect::<Vec<_>>()}),
    );
    let a = agent.clone();
    std::thread::spawn(move || a.commit.run(|| a.sync_batch()));
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
    let (a, control) = (agent.clone(), config.control.clone());
    std::thread::spawn(move || signals(&a, control));
    let status = format!("serving {} VM(s)", agent.vms.len());
    info!(control = %config.control.display(), "{status}");
    // The control socket listens (connections queue until served): ready.
    if let Err(e) = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(&status)]) {
        warn!("cannot tell systemd that the agent is ready: {e}");
    }
    control::serve(agent, listener);
    Ok(())
}

/// Waits for signals: SIGHUP reopens the audit log (logrotate moved it);
/// SIGTERM or SIGINT ends the agent with status 0, after ending the
/// migrations its gates follow (at most `pause::STOP_WAIT`) and once the
/// audit record being written is whole.
fn signals(agent: &Arc<agent::Agent>, control: PathBuf) {
    let set = handled();
    loop {
        match set.wait() {
            Ok(Signal::SIGHUP) => match agent.audit.reopen() {
                Ok(()) => info!("SIGHUP: audit log reopened"),
                Err(e) => error!("SIGHUP: cannot reopen the audit log: {e:#}"),
            },
            Ok(sig) => {
                info!("{sig}: stopping");
                let _ = sd_notify::notify(&[NotifyState::Stopping]);
                // miglockctl then says "not running" rather than hanging.
                let _ = std::fs::remove_file(&control);
                // No migration this agent gates may wait at its switchover
                // for a continue that will never come.
                pause::on_stop(agent, sig.as_str(), pause::STOP_WAIT);
                agent.journal.sync();
                agent
                    .audit
                    .close("agent-stop", serde_json::json!({"signal": sig.as_str()}));
                std::process::exit(0);
            }
            Err(e) => {
                error!("waiting for signals: {e}");
                return;
            }
        }
    }
}
