// SPDX-License-Identifier: GPL-2.0

//! The module's KUnit suite: runs in the guest at `insmod`.

use crate::{
    abi::ioctl as abi,
    kunit::{kunit_expect, kunit_expect_eq, kunit_suite, Test},
};
use kernel::ioctl;

/// The ABI crate's encoding agrees with the kernel's own `_IO*` macros.
fn ioctl_encoding_matches_kernel(test: &mut Test) {
    let ty = u32::from(abi::MLD_IOC_MAGIC);
    kunit_expect_eq!(test, abi::SET_MIGRATION_FLAG, ioctl::_IOW::<i32>(ty, 0));
    for nr in [0u8, 1, 0x7f, 0xff] {
        let n = u32::from(nr);
        kunit_expect_eq!(
            test,
            abi::ioc(abi::IOC_NONE, abi::MLD_IOC_MAGIC, nr, 0),
            ioctl::_IO(ty, n)
        );
        kunit_expect_eq!(test, abi::iow::<u64>(nr), ioctl::_IOW::<u64>(ty, n));
        kunit_expect_eq!(
            test,
            abi::ioc(abi::IOC_READ, abi::MLD_IOC_MAGIC, nr, 24),
            ioctl::_IOR::<[u8; 24]>(ty, n)
        );
        kunit_expect_eq!(
            test,
            abi::ioc(abi::IOC_READ | abi::IOC_WRITE, abi::MLD_IOC_MAGIC, nr, 40),
            ioctl::_IOWR::<[u8; 40]>(ty, n)
        );
    }
}

/// The ioctl size field round-trips through the kernel's `_IOC_SIZE`.
fn ioctl_size_field_round_trips(test: &mut Test) {
    kunit_expect_eq!(test, ioctl::_IOC_SIZE(abi::SET_MIGRATION_FLAG), 4);
    kunit_expect_eq!(test, ioctl::_IOC_TYPE(abi::SET_MIGRATION_FLAG), 0xB9);
    kunit_expect!(test, ioctl::_IOC_NR(abi::SET_MIGRATION_FLAG) == 0);
}

/// Proves the harness notices a failing case; only in the selftest build.
#[cfg(miglock_selftest = "kunit_fail")]
fn selftest_deliberate_failure(test: &mut Test) {
    kunit_expect!(
        test,
        1 + 1 == 3,
        "deliberate failure (MIGLOCK_SELFTEST=kunit_fail)"
    );
}

kunit_suite!(
    "miglock",
    [
        ioctl_encoding_matches_kernel,
        ioctl_size_field_round_trips,
        #[cfg(miglock_selftest = "kunit_fail")]
        selftest_deliberate_failure,
    ]
);
