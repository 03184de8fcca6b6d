// SPDX-License-Identifier: GPL-2.0

//! `set_migration_flag 0|1`, as in "Who Decides Migration?": 0 locks the VM,
//! 1 lets it migrate again.
//!
//! Uses the paper's syscall when the kernel has it (the test kernel's patch),
//! otherwise the equivalent detached hold through `/dev/mld`. Either way the
//! lock outlives this process and is bounded by the maximum lease.

use clap::Parser;
use miglock_cli::cli::SetMigrationFlag;
use miglock_dev::{syscall_set_migration_flag, Device, Lock, Reason};
use std::io;
use std::process::ExitCode;

fn via_ioctl(flag: i32) -> io::Result<()> {
    let dev = Device::open()?;
    match flag {
        0 => dev.lock(&Lock {
            reason: Reason::Other,
            lease: None,
            label: "set_migration_flag".into(),
            detached: true,
        }),
        _ => match dev.unlock(true) {
            // Already free to migrate: not an error, as with the syscall.
            Err(e) if e.raw_os_error() == Some(libc::ENOLCK) => Ok(()),
            r => r,
        },
    }
}

fn main() -> ExitCode {
    // A bad argument exits 2 with the usage, as it always did.
    let flag = i32::from(SetMigrationFlag::parse().flag == "1");
    let r = match syscall_set_migration_flag(flag) {
        Ok(_) => Ok("syscall"),
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => via_ioctl(flag).map(|()| "/dev/mld"),
        Err(e) => Err(e),
    };
    match r {
        Ok(path) => {
            println!("migration flag set to {flag} (via {path})");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("set_migration_flag: {e}");
            ExitCode::FAILURE
        }
    }
}
