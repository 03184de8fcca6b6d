// SPDX-License-Identifier: GPL-2.0

//! The clock leases and quotas run on: `CLOCK_BOOTTIME`, which no one can
//! set (a wall clock stepped by NTP or an administrator would end or
//! stretch every lease at once) and which goes on through a suspend, as a
//! lease should. It is the same for every process of one boot, so a
//! restarted agent reads its saved leases on it; a state saved in another
//! boot is tagged with that boot's id and its holds are not carried over.
//! Only the audit log's timestamps are wall-clock (`audit::wall_ms`).

use std::sync::OnceLock;

/// Lease-clock milliseconds since the host booted.
pub fn now_ms() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    t.tv_sec as u64 * 1000 + t.tv_nsec as u64 / 1_000_000
}

/// This boot's id (the kernel's random boot id), which names the clock
/// saved times count on.
pub fn boot() -> &'static str {
    static BOOT: OnceLock<String> = OnceLock::new();
    BOOT.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Leases do not run on the wall clock: the lease clock counts from
    /// boot, and only goes forward.
    #[test]
    fn the_lease_clock_is_the_boot_clock() {
        let (a, wall) = (now_ms(), crate::audit::wall_ms());
        assert!(
            a < wall / 2,
            "lease clock {a} looks like the wall clock {wall}"
        );
        let uptime: f64 = std::fs::read_to_string("/proc/uptime")
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            (a as f64 / 1000.0 - uptime).abs() < 5.0,
            "{a} ms vs uptime {uptime} s"
        );
        assert!(now_ms() >= a);
        assert_eq!(boot().len(), 36, "{}", boot());
    }
}
