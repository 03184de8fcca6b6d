// SPDX-License-Identifier: GPL-2.0

//! Picks the accelerator: KVM only when it really works here, TCG otherwise.
//!
//! /dev/kvm existing is not enough (on some hosts a KVM guest hangs at boot),
//! so `auto` boots the test guest once under KVM with a short deadline.

use crate::scenario::{self, Env, Scenario};
use crate::vm::{Accel, Echo};
use std::fs::OpenOptions;
use std::time::Duration;

/// The user's choice on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Choice {
    /// KVM if a probe boot under KVM succeeds, else TCG.
    Auto,
    /// Always TCG.
    Tcg,
    /// Always KVM.
    Kvm,
}

/// Resolves `choice`, probing with `env` (its accel field is ignored).
pub fn resolve(choice: Choice, env: &Env<'_>) -> Accel {
    match choice {
        Choice::Tcg => Accel::Tcg,
        Choice::Kvm => Accel::Kvm,
        Choice::Auto => {
            if let Err(e) = OpenOptions::new().read(true).write(true).open("/dev/kvm") {
                eprintln!("harness: accel: TCG (/dev/kvm: {e})");
                return Accel::Tcg;
            }
            let probe = Scenario {
                name: "kvm-probe",
                timeout: Duration::from_secs(10),
                ..scenario::SCENARIOS[0].clone()
            };
            let env = Env {
                accel: Accel::Kvm,
                echo: Echo::Off,
                dir: env.dir.clone(),
                ..*env
            };
            match scenario::run(&probe, &env) {
                Ok(()) => {
                    eprintln!("harness: accel: KVM (probe boot passed)");
                    Accel::Kvm
                }
                Err(f) => {
                    eprintln!("harness: accel: TCG (a probe boot under KVM failed: {f})");
                    Accel::Tcg
                }
            }
        }
    }
}
