// SPDX-License-Identifier: GPL-2.0

//! Sample: lock the VM around a critical section made of steps, and finish
//! early if `/dev/mld` signals an event (the lease ended, or the host wants
//! to migrate), instead of being cut off mid-step.

use miglock_dev::{Device, Lock, Reason};
use std::time::Duration;

/// Waits up to `ms` for an event on the device; true if one came.
fn event(dev: &Device, ms: i32) -> std::io::Result<bool> {
    let mut p = libc::pollfd {
        fd: dev.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    if unsafe { libc::poll(&mut p, 1, ms) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(p.revents & libc::POLLIN != 0)
}

fn main() -> std::io::Result<()> {
    let dev = Device::open()?;
    dev.lock(&Lock {
        reason: Reason::CriticalOperation,
        lease: Some(Duration::from_millis(600)),
        label: "rust sample batch".into(),
        detached: false,
    })?;
    println!("locked: {:?} left", dev.status()?.own_expiry());
    // Ten 100 ms steps need 1 s, but the lease is 600 ms: the sample stops
    // cleanly between steps when the lease ends.
    let mut done = 0;
    for _ in 0..10 {
        if event(&dev, 100)? {
            let st = dev.status()?;
            println!(
                "event after {done} steps: lease expired={} migration pending={}",
                st.lease_expired(),
                st.migration_pending()
            );
            break;
        }
        done += 1;
    }
    println!("finished {done} of 10 steps under the lock");
    Ok(())
}
