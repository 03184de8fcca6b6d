// SPDX-License-Identifier: GPL-2.0

//! miglock: a guest-controlled migration lock.
//!
//! Applications in the guest tell the host "do not live-migrate this VM now"
//! through `/dev/mld`; the host decides. See `Documentation/`.

use kernel::{c_str, prelude::*, sync::Arc};

pub mod abi;
mod bindings;
mod cred;
mod kunit;
mod kunit_tests;
pub mod lockstate;
mod miscdev;
mod mld;

module! {
    type: Miglock,
    name: "miglock",
    author: "miglock developers",
    description: "Guest-controlled migration lock (/dev/mld)",
    license: "GPL",
}

/// Default and maximum lease: five minutes.
const MAX_LEASE_MS: u32 = 300_000;

struct Miglock {
    _dev: Pin<KBox<miscdev::Registration<mld::MldDevice>>>,
    shared: Arc<mld::Shared>,
}

impl kernel::Module for Miglock {
    fn init(module: &'static ThisModule) -> Result<Self> {
        if cfg!(miglock_selftest = "init_fail") {
            pr_err!("selftest build: failing init on purpose\n");
            return Err(EINVAL);
        }
        let config = mld::Config {
            max_lease_ms: MAX_LEASE_MS,
            lock_gid: None,
        };
        let shared = mld::Shared::new(config, false)?;
        // Anyone may open and read status; locking checks privilege.
        let dev = miscdev::Registration::new(c_str!("mld"), 0o666, module, shared.clone())?;
        pr_info!("loaded: /dev/mld ready (max lease {} ms)\n", MAX_LEASE_MS);
        Ok(Miglock { _dev: dev, shared })
    }
}

impl Drop for Miglock {
    fn drop(&mut self) {
        // No file is open (each pins the module), so only the detached hold
        // and the static lock can remain: release them rather than vanish
        // silently.
        match self.shared.release_all() {
            0 => pr_info!("unloaded\n"),
            n => pr_info!("unloaded while locked: released {} hold(s)\n", n),
        }
    }
}
