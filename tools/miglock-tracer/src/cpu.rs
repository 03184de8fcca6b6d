// SPDX-License-Identifier: GPL-2.0

//! CPU time used, user + system, from `getrusage`.

use std::time::Duration;

fn rusage(who: libc::c_int) -> Duration {
    // SAFETY: an all-zero rusage is valid; getrusage only writes into it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage for the call.
    if unsafe { libc::getrusage(who, &mut ru) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// This process, all threads.
pub fn process() -> Duration {
    rusage(libc::RUSAGE_SELF)
}

/// The calling thread.
pub fn thread() -> Duration {
    rusage(libc::RUSAGE_THREAD)
}

/// `cpu` per sample as a percentage of one CPU at `interval`.
pub fn percent_of_cpu(per_sample: Duration, interval: Duration) -> f64 {
    if interval.is_zero() {
        return 0.0;
    }
    100.0 * per_sample.as_secs_f64() / interval.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent() {
        assert_eq!(
            percent_of_cpu(Duration::from_millis(10), Duration::from_secs(1)),
            1.0
        );
        assert_eq!(
            percent_of_cpu(Duration::from_millis(10), Duration::ZERO),
            0.0
        );
    }

    #[test]
    fn clocks_advance() {
        let (p, t) = (process(), thread());
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        assert!(process() >= p && thread() >= t);
    }
}
