// SPDX-License-Identifier: GPL-2.0

//! Suites against a host (the harness's stub host or a real `miglockd`):
//! what a lock call returns must be what the host holds, however the call
//! ends and however many run at once; every open file hears the host's
//! notices.

use crate::{lock, Checks};
use miglock_dev::{Device, Reason, Status};
use std::io::{self, BufRead, Write};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

static SIGNALS: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_alarm(_: libc::c_int) {
    SIGNALS.fetch_add(1, Ordering::Relaxed);
}

/// SIGALRM runs a handler installed without `SA_RESTART`, as applications
/// with timers have: a system call it interrupts fails with EINTR.
fn install_alarm_handler() -> io::Result<()> {
    // SAFETY: a zeroed `sigaction` is valid; the handler only touches an
    // atomic; the mask is initialised before use.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_alarm as extern "C" fn(libc::c_int) as usize;
        sa.sa_flags = 0;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(libc::SIGALRM, &sa, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Arms the real-time timer to send SIGALRM in `us` microseconds (0: off).
fn alarm_in(us: u64) {
    let it = libc::itimerval {
        it_interval: libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        },
        it_value: libc::timeval {
            tv_sec: (us / 1_000_000) as libc::time_t,
            tv_usec: (us % 1_000_000) as libc::suseconds_t,
        },
    };
    // SAFETY: a valid timer value; the old value is not asked for.
    unsafe { libc::setitimer(libc::ITIMER_REAL, &it, std::ptr::null_mut()) };
}

/// The hold ids in `/sys/kernel/miglock/holds` (a file's id is the hold id
/// the host knows; the detached hold is 0), sorted, comma-separated.
pub(crate) fn hold_ids() -> String {
    let text = std::fs::read_to_string("/sys/kernel/miglock/holds").unwrap_or_default();
    let mut ids: Vec<u32> = text
        .lines()
        .filter_map(|l| match l.split(' ').next()? {
            "detached" => Some(0),
            o => o.strip_prefix("file:")?.parse().ok(),
        })
        .collect();
    ids.sort_unstable();
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

/// The host channel's counters (`/sys/kernel/miglock/channel_stats`).
fn channel_stat(name: &str) -> u64 {
    let text = std::fs::read_to_string("/sys/kernel/miglock/channel_stats").unwrap_or_default();
    let words: Vec<&str> = text.split_whitespace().collect();
    words
        .windows(2)
        .find(|w| w[0] == name)
        .and_then(|w| w[1].parse().ok())
        .unwrap_or(0)
}

/// `mldtest interrupted-lock ROUNDS SEED`: locks against a host that
/// answers slowly while SIGALRM (no `SA_RESTART`) fires at a random moment
/// of each call. A call returns 0 only with a hold the host granted; one
/// the signal interrupts returns EINTR and leaves the file as it was. Ends
/// with the guest's holds on the console, for the harness to compare with
/// the host's.
pub(crate) fn interrupted_lock(c: &mut Checks, rounds: usize, seed: u64) -> io::Result<()> {
    install_alarm_handler()?;
    let files: Vec<Device> = (0..4).map(|_| Device::open()).collect::<io::Result<_>>()?;
    let mut rng = fastrand::Rng::with_seed(seed);
    let (mut granted, mut interrupted, mut refused, mut mismatches) = (0u32, 0u32, 0u32, 0u32);
    let mut why = Vec::new();
    for round in 0..rounds {
        let d = &files[round % files.len()];
        let before = d.status()?.held_by_me();
        // The stub host answers after 10 ms, after the answer to a request
        // given up before, if any: many signals land while the call waits,
        // many after it returned.
        alarm_in(rng.u64(1_000..40_000));
        let r = d.lock(&lock(Reason::CriticalOperation, 60_000, "interrupted"));
        alarm_in(0);
        let st = d.status()?;
        let ok = match &r {
            Ok(()) => {
                granted += 1;
                st.held_by_me() && st.last_decision() == "granted" && !st.local_decision()
            }
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {
                interrupted += 1;
                st.held_by_me() == before
            }
            Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
                refused += 1;
                st.held_by_me() == before
            }
            Err(_) => false,
        };
        if !ok {
            mismatches += 1;
            if why.len() < 5 {
                why.push(format!(
                    "round {round}: {r:?}, held before {before}, now {st:?}"
                ));
            }
        }
        if st.held_by_me() && rng.u8(0..4) == 0 {
            d.unlock(false)?;
        }
    }
    println!(
        "@@MIGLOCK interrupted-lock rounds={rounds} interrupted={interrupted} granted={granted} \
         refused={refused} mismatches={mismatches} signals={}@@",
        SIGNALS.load(Ordering::Relaxed)
    );
    println!("@@MIGLOCK holds ids={}@@", hold_ids());
    c.check(
        "no call returned 0 without a host grant, none left a hold it did not have",
        mismatches == 0,
        || why.join("; "),
    );
    c.check("signals landed while calls waited", interrupted > 0, || {
        "no call was interrupted".into()
    });
    // The holds stay while the harness compares them with the host's.
    next_step()
}

/// `mldtest request-storm THREADS ROUNDS`: every thread locks (with a lease
/// of its own) and unlocks ROUNDS times at once against the host agent.
/// Each call must get its own answer: a grant with the thread's lease,
/// decided by the host, or a refusal; no call may time out or fall back to
/// a local decision.
pub(crate) fn request_storm(c: &mut Checks, threads: usize, rounds: usize) -> io::Result<()> {
    let failures0 = channel_stat("failures");
    let wrong = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let why = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (wrong, refused, why) = (wrong.clone(), refused.clone(), why.clone());
            std::thread::spawn(move || -> io::Result<()> {
                let d = Device::open()?;
                let lease = 10_000 + 1_000 * t as u64;
                let bad = |what: String| {
                    wrong.fetch_add(1, Ordering::Relaxed);
                    let mut w = why.lock().unwrap_or_else(|e| e.into_inner());
                    if w.len() < 8 {
                        w.push(format!("thread {t}: {what}"));
                    }
                };
                for _ in 0..rounds {
                    match d.lock(&lock(Reason::CriticalCode, lease, "storm")) {
                        Ok(()) => {
                            let st = d.status()?;
                            let own = st.own_expiry().map_or(0, |e| e.as_millis() as u64);
                            if !st.held_by_me()
                                || st.local_decision()
                                || own > lease
                                || own + 900 < lease
                            {
                                bad(format!("asked {lease} ms, got {own} ms: {st:?}"));
                            }
                            if let Err(e) = d.unlock(false) {
                                bad(format!("unlock: {e}"));
                            }
                        }
                        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) => {
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => bad(format!("lock: {e}")),
                    }
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        match h.join() {
            Ok(Ok(())) => {}
            _ => {
                wrong.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    // An answer that never came ends in a failure of the channel.
    let failures = channel_stat("failures") - failures0;
    let connected = Device::open()?.status()?.channel();
    let wrong_or_lost = wrong.load(Ordering::Relaxed) + failures + u64::from(!connected);
    println!(
        "@@MIGLOCK request-storm threads={threads} calls={} wrong_or_lost={wrong_or_lost} \
         refused={} failures={failures} retries={} stale={} interrupted={}@@",
        threads * rounds,
        refused.load(Ordering::Relaxed),
        channel_stat("retries"),
        channel_stat("stale"),
        channel_stat("interrupted"),
    );
    c.check(
        &format!("{threads} threads x {rounds} locks: each got its own answer"),
        wrong_or_lost == 0,
        || {
            let w = why.lock().unwrap_or_else(|e| e.into_inner());
            format!("{wrong_or_lost} wrong or lost ({failures} channel failures, connected {connected}): {}", w.join("; "))
        },
    );
    check_clean(c);
    Ok(())
}

fn check_clean(c: &mut Checks) {
    let st = Device::open().and_then(|d| d.status());
    c.check(
        "afterwards: unlocked with zero holders",
        st.as_ref().is_ok_and(|s| !s.locked() && s.holders() == 0),
        || format!("{st:?}"),
    );
}

/// Waits for the harness's next line on stdin.
fn next_step() -> io::Result<()> {
    io::stdout().flush()?;
    let mut line = String::new();
    io::stdin().lock().read_line(&mut line)?;
    Ok(())
}

/// `mldtest flag-release`: two holders, one of them by the paper's ioctl;
/// it releases with `SET_MIGRATION_FLAG 1` while the other holds on; then
/// the other closes. After each step the guest's holds go on the console
/// and the harness compares them with the host's before it types the next
/// line.
pub(crate) fn flag_release(c: &mut Checks) -> io::Result<()> {
    let a = Device::open()?;
    let b = Device::open()?;
    a.set_migration_flag(0)?;
    b.lock(&lock(Reason::CriticalCode, 60_000, "second holder"))?;
    let two = hold_ids();
    println!("@@MIGLOCK holds step=two ids={two}@@");
    next_step()?;
    a.set_migration_flag(1)?;
    let st = a.status()?;
    c.check(
        "SET_MIGRATION_FLAG 1 ends this file's hold; the other holds on",
        !st.held_by_me() && st.locked() && st.holders() == 1,
        || format!("{st:?}"),
    );
    println!("@@MIGLOCK holds step=one ids={}@@", hold_ids());
    next_step()?;
    drop(b);
    println!("@@MIGLOCK holds step=none ids={}@@", hold_ids());
    next_step()?;
    drop(a);
    Ok(())
}

/// `mldtest fast-paths`: the locks the guest takes without a host round
/// trip. One file's unlock/lock pairs take its grant back from the host's
/// linger; a second file's lock inside that grant is taken at once (the
/// host hears of it after); neither sends a request. Then the first file
/// closes (released at once) and the second unlocks (released once its
/// linger ends). After each step the harness compares the host's holds
/// with the guest's, as in `flag-release`.
pub(crate) fn fast_paths(c: &mut Checks) -> io::Result<()> {
    let a = Device::open()?;
    let b = Device::open()?;
    let txn = lock(Reason::CriticalOperation, 60_000, "txn");
    a.lock(&txn)?;
    let asked = channel_stat("requests");
    for _ in 0..100 {
        a.unlock(false)?;
        a.lock(&txn)?;
    }
    c.check(
        "100 unlock/lock pairs of one file: its grant is taken back, no request",
        channel_stat("requests") == asked,
        || format!("{} requests", channel_stat("requests") - asked),
    );
    b.lock(&lock(Reason::CriticalCode, 10_000, "second"))?;
    let st = b.status()?;
    c.check(
        "a second holder inside a held grant: taken as granted, no request",
        channel_stat("requests") == asked && st.held_by_me() && st.last_decision() == "granted",
        || format!("{} requests; {st:?}", channel_stat("requests") - asked),
    );
    println!("@@MIGLOCK holds step=covered ids={}@@", hold_ids());
    next_step()?;
    drop(a);
    println!("@@MIGLOCK holds step=second ids={}@@", hold_ids());
    next_step()?;
    b.unlock(false)?;
    println!("@@MIGLOCK holds step=none ids={}@@", hold_ids());
    next_step()?;
    // Another label is another decision.
    b.lock(&lock(Reason::CriticalCode, 10_000, "another"))?;
    c.check(
        "a lock with another label asks the host",
        channel_stat("requests") == asked + 1,
        || format!("{} requests", channel_stat("requests") - asked),
    );
    drop(b);
    Ok(())
}

/// `mldtest notice-app lock|idle`: an application that hears the host.
/// With `lock` it holds a lock (and unlocks when "unlock" comes on stdin);
/// `idle` holds none. It prints `locked` or `ready` once its file is open,
/// then one line per event it sees in its status (`pending
/// deadline_ms=N`, `cancelled`, `migrated gen=N`), and exits after the
/// arrival.
pub(crate) fn notice_app(holds: bool) -> io::Result<()> {
    let d = Device::open()?;
    if holds {
        d.lock(&lock(Reason::CriticalOperation, 120_000, "notice app"))?;
        println!("locked");
    } else {
        println!("ready");
    }
    io::stdout().flush()?;
    let stdin = io::stdin();
    let mut input = holds;
    loop {
        let mut fds = [
            libc::pollfd {
                fd: d.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: if input { 0 } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfds (a negative fd is ignored).
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if fds[0].revents & libc::POLLIN != 0 {
            let st = d.status()?;
            if report(&st) {
                return Ok(());
            }
        }
        if fds[1].revents != 0 {
            let mut line = String::new();
            if stdin.lock().read_line(&mut line)? == 0 {
                input = false;
            } else if line.trim() == "unlock" {
                d.unlock(false)?;
                println!("unlocked");
            }
        }
        io::stdout().flush()?;
    }
}

/// Prints what `st` says happened; true once the VM arrived.
fn report(st: &Status) -> bool {
    if let Some(d) = st.pending_deadline() {
        println!("pending deadline_ms={}", d.as_millis());
    }
    if st.migration_cancelled() {
        println!("cancelled");
    }
    if st.migrated() {
        println!("migrated gen={}", st.migration_gen());
        return true;
    }
    false
}
