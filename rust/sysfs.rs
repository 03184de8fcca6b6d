// SPDX-License-Identifier: GPL-2.0

//! `/sys/kernel/miglock/`: the lock state for scripts and monitoring.
//!
//! Read-only files: `state` (locked/unlocked), `holders`, `lease` (ms until
//! the earliest lease ends, 0 if none), `channel` (host channel or local),
//! `holds` (one line per hold: owner, reason, remaining ms, label; a file's
//! id is the hold id the host knows), `channel_stats` (the host channel's
//! counters).

use crate::abi::types::{check_label, Reason};
use crate::compat::sysfs::{Directory, Page, Show};
use crate::lockstate::status::ms_until;
use crate::lockstate::table::Owner;
use crate::service::Service;
use core::fmt::{self, Write};
use kernel::{c_str, prelude::*, str::CStr, sync::Arc};

/// The files, in the order of [`View::show`]'s indices.
const FILES: &[&CStr] = &[
    c_str!("state"),
    c_str!("holders"),
    c_str!("lease"),
    c_str!("channel"),
    c_str!("holds"),
    c_str!("channel_stats"),
];

/// What the files show.
pub(crate) struct View {
    service: Arc<Service>,
}

/// Creates `/sys/kernel/miglock/` showing `service`.
pub(crate) fn create(service: Arc<Service>) -> Result<Directory<View>> {
    let view = Arc::new(View { service }, GFP_KERNEL)?;
    Directory::create(c_str!("miglock"), FILES, view)
}

impl Show for View {
    fn show(&self, file: usize, out: &mut Page<'_>) -> fmt::Result {
        let s = &self.service;
        if file == 5 {
            // Not under the state lock: the counters have their own.
            let c = s.channel_stats();
            return writeln!(
                out,
                "requests {} retries {} failures {} interrupted {} dropped {} stale {} hint_batches {} hint_frames {} answered {} send_ns {} wait_ns {} rescued {}",
                c.requests, c.retries, c.failures, c.interrupted, c.dropped, c.stale, c.hint_batches, c.hint_frames,
                c.answered, c.send_ns, c.wait_ns, c.rescued
            );
        }
        if file == 3 {
            let channel = match (s.channel_present(), s.channel_connected()) {
                (false, _) => "local",
                (true, true) => "connected",
                (true, false) => "disconnected",
            };
            return writeln!(out, "{channel}");
        }
        s.with_table(|t, now| match file {
            0 => writeln!(out, "{}", if t.locked() { "locked" } else { "unlocked" }),
            1 => writeln!(out, "{}", t.holders()),
            2 => writeln!(
                out,
                "{}",
                t.earliest_expiry().map_or(0, |e| ms_until(e, now))
            ),
            4 => {
                if t.static_lock() {
                    writeln!(out, "static - - static lock (module parameter)")?;
                }
                for h in t.iter() {
                    match h.owner {
                        Owner::File(id) => write!(out, "file:{id} ")?,
                        Owner::Detached => write!(out, "detached ")?,
                    }
                    let reason = Reason::from_u32(h.reason).map_or("?", Reason::name);
                    let label = check_label(&h.label).unwrap_or(b"?");
                    writeln!(
                        out,
                        "{reason} {} {}",
                        ms_until(h.expires_at, now),
                        core::str::from_utf8(label).unwrap_or("?")
                    )?;
                }
                Ok(())
            }
            _ => Ok(()),
        })
    }
}
