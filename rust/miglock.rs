// SPDX-License-Identifier: GPL-2.0

//! miglock: a guest-controlled migration lock.
//!
//! Applications in the guest tell the host "do not live-migrate this VM now"
//! through `/dev/mld`; the host decides. See `Documentation/`.

use kernel::prelude::*;

pub mod abi;
mod kunit;
mod kunit_tests;

module! {
    type: Miglock,
    name: "miglock",
    author: "miglock developers",
    description: "Guest-controlled migration lock (/dev/mld)",
    license: "GPL",
}

struct Miglock;

impl kernel::Module for Miglock {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        if cfg!(miglock_selftest = "init_fail") {
            pr_err!("selftest build: failing init on purpose\n");
            return Err(EINVAL);
        }
        pr_info!("loaded\n");
        Ok(Miglock)
    }
}

impl Drop for Miglock {
    fn drop(&mut self) {
        pr_info!("unloaded\n");
    }
}
