// SPDX-License-Identifier: GPL-2.0

//! Golden test: `include/uapi/linux/miglock.h`, compiled by the C compiler,
//! agrees with this crate on every ioctl number, struct size, field offset
//! and code.

use miglock_abi::ioctl;
use miglock_abi::types::*;
use std::collections::HashMap;
use std::mem::{offset_of, size_of};
use std::path::Path;
use std::process::Command;

const PROBE: &str = r#"
#include <stdio.h>
#include <stddef.h>
#include <linux/miglock.h>
#define P(x) printf("%s %llu\n", #x, (unsigned long long)(x))
int main(void)
{
	P(SET_MIGRATION_FLAG); P(MLD_IOC_LOCK); P(MLD_IOC_UNLOCK);
	P(MLD_IOC_RENEW); P(MLD_IOC_STATUS); P(MLD_IOC_HINTS); P(MLD_IOC_MAGIC);
	P(sizeof(struct mld_hints)); P(sizeof(struct mld_hint_range)); P(MLD_MAX_HINTS);
	P(offsetof(struct mld_hints, ranges)); P(offsetof(struct mld_hints, wss_pages));
	P(offsetof(struct mld_hints, dirty_pages_per_s)); P(offsetof(struct mld_hints, pfn_limit));
	P(offsetof(struct mld_hints, interval_ms)); P(offsetof(struct mld_hint_range, score));
	P(offsetof(struct mld_status, postcopy_gen)); P(MLD_ST_POSTCOPY);
	P(offsetof(struct mld_status, pending_deadline_ms)); P(offsetof(struct mld_status, migration_gen));
	P(MLD_ST_MIGRATION_CANCELLED); P(MLD_ST_MIGRATED); P(MLD_ST_LOCAL_DECISION);
	P(MLD_ST_CHECKPOINT); P(MLD_ST_CHECKPOINT_DONE); P(MLD_ST_RESTORED);
	P(sizeof(struct mld_lock)); P(sizeof(struct mld_renew)); P(sizeof(struct mld_status));
	P(offsetof(struct mld_lock, reason)); P(offsetof(struct mld_lock, flags));
	P(offsetof(struct mld_lock, lease_ms)); P(offsetof(struct mld_lock, reserved));
	P(offsetof(struct mld_lock, label)); P(MLD_LABEL_LEN);
	P(offsetof(struct mld_renew, lease_ms)); P(offsetof(struct mld_renew, flags));
	P(offsetof(struct mld_status, flags)); P(offsetof(struct mld_status, holders));
	P(offsetof(struct mld_status, earliest_expiry_ms)); P(offsetof(struct mld_status, own_expiry_ms));
	P(offsetof(struct mld_status, last_decision)); P(offsetof(struct mld_status, last_refusal));
	P(offsetof(struct mld_status, max_lease_ms)); P(offsetof(struct mld_status, reserved));
	P(MLD_LOCK_DETACHED);
	P(MLD_ST_LOCKED); P(MLD_ST_STATIC); P(MLD_ST_HELD_BY_ME); P(MLD_ST_DETACHED);
	P(MLD_ST_CHANNEL); P(MLD_ST_MIGRATION_PENDING); P(MLD_ST_FORCED_RELEASE); P(MLD_ST_LEASE_EXPIRED);
	P(MLD_DECISION_NONE); P(MLD_DECISION_GRANTED); P(MLD_DECISION_REFUSED); P(MLD_DECISION_LOCAL);
	P(MLD_REASON_CRITICAL_CODE); P(MLD_REASON_CRITICAL_OPERATION); P(MLD_REASON_CO_LOCATION);
	P(MLD_REASON_SPECIAL_HARDWARE); P(MLD_REASON_CONFIDENTIAL); P(MLD_REASON_OTHER);
	P(__NR_set_migration_flag);
	return 0;
}
"#;

fn c_values() -> HashMap<String, u64> {
    let top = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let src = dir.join("miglock_h_probe.c");
    let exe = dir.join("miglock_h_probe");
    std::fs::write(&src, PROBE).unwrap();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .args(["-std=c11", "-Wall", "-Werror", "-I"])
        .arg(top.join("include/uapi"))
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .output()
        .expect("a C compiler (cc) is needed for the golden header test");
    assert!(
        out.status.success(),
        "header does not compile:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(&exe).output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

#[test]
fn c_header_matches_rust_abi() {
    let c = c_values();
    let reason = |r: Reason| r as u64;
    let rust: Vec<(&str, u64)> = vec![
        ("SET_MIGRATION_FLAG", ioctl::SET_MIGRATION_FLAG.into()),
        ("MLD_IOC_LOCK", ioctl::MLD_IOC_LOCK.into()),
        ("MLD_IOC_UNLOCK", ioctl::MLD_IOC_UNLOCK.into()),
        ("MLD_IOC_RENEW", ioctl::MLD_IOC_RENEW.into()),
        ("MLD_IOC_STATUS", ioctl::MLD_IOC_STATUS.into()),
        ("MLD_IOC_HINTS", ioctl::MLD_IOC_HINTS.into()),
        ("sizeof(struct mld_hints)", size_of::<MldHints>() as u64),
        (
            "sizeof(struct mld_hint_range)",
            size_of::<MldHintRange>() as u64,
        ),
        ("MLD_MAX_HINTS", MLD_MAX_HINTS.into()),
        (
            "offsetof(struct mld_hints, ranges)",
            offset_of!(MldHints, ranges) as u64,
        ),
        (
            "offsetof(struct mld_hints, wss_pages)",
            offset_of!(MldHints, wss_pages) as u64,
        ),
        (
            "offsetof(struct mld_hints, dirty_pages_per_s)",
            offset_of!(MldHints, dirty_pages_per_s) as u64,
        ),
        (
            "offsetof(struct mld_hints, pfn_limit)",
            offset_of!(MldHints, pfn_limit) as u64,
        ),
        (
            "offsetof(struct mld_hints, interval_ms)",
            offset_of!(MldHints, interval_ms) as u64,
        ),
        (
            "offsetof(struct mld_hint_range, score)",
            offset_of!(MldHintRange, score) as u64,
        ),
        (
            "offsetof(struct mld_status, postcopy_gen)",
            offset_of!(MldStatus, postcopy_gen) as u64,
        ),
        ("MLD_ST_POSTCOPY", MLD_ST_POSTCOPY.into()),
        (
            "offsetof(struct mld_status, pending_deadline_ms)",
            offset_of!(MldStatus, pending_deadline_ms) as u64,
        ),
        (
            "offsetof(struct mld_status, migration_gen)",
            offset_of!(MldStatus, migration_gen) as u64,
        ),
        (
            "MLD_ST_MIGRATION_CANCELLED",
            MLD_ST_MIGRATION_CANCELLED.into(),
        ),
        ("MLD_ST_MIGRATED", MLD_ST_MIGRATED.into()),
        ("MLD_ST_LOCAL_DECISION", MLD_ST_LOCAL_DECISION.into()),
        ("MLD_ST_CHECKPOINT", MLD_ST_CHECKPOINT.into()),
        ("MLD_ST_CHECKPOINT_DONE", MLD_ST_CHECKPOINT_DONE.into()),
        ("MLD_ST_RESTORED", MLD_ST_RESTORED.into()),
        ("MLD_IOC_MAGIC", ioctl::MLD_IOC_MAGIC.into()),
        ("sizeof(struct mld_lock)", size_of::<MldLock>() as u64),
        ("sizeof(struct mld_renew)", size_of::<MldRenew>() as u64),
        ("sizeof(struct mld_status)", size_of::<MldStatus>() as u64),
        (
            "offsetof(struct mld_lock, reason)",
            offset_of!(MldLock, reason) as u64,
        ),
        (
            "offsetof(struct mld_lock, flags)",
            offset_of!(MldLock, flags) as u64,
        ),
        (
            "offsetof(struct mld_lock, lease_ms)",
            offset_of!(MldLock, lease_ms) as u64,
        ),
        (
            "offsetof(struct mld_lock, reserved)",
            offset_of!(MldLock, reserved) as u64,
        ),
        (
            "offsetof(struct mld_lock, label)",
            offset_of!(MldLock, label) as u64,
        ),
        ("MLD_LABEL_LEN", MLD_LABEL_LEN as u64),
        (
            "offsetof(struct mld_renew, lease_ms)",
            offset_of!(MldRenew, lease_ms) as u64,
        ),
        (
            "offsetof(struct mld_renew, flags)",
            offset_of!(MldRenew, flags) as u64,
        ),
        (
            "offsetof(struct mld_status, flags)",
            offset_of!(MldStatus, flags) as u64,
        ),
        (
            "offsetof(struct mld_status, holders)",
            offset_of!(MldStatus, holders) as u64,
        ),
        (
            "offsetof(struct mld_status, earliest_expiry_ms)",
            offset_of!(MldStatus, earliest_expiry_ms) as u64,
        ),
        (
            "offsetof(struct mld_status, own_expiry_ms)",
            offset_of!(MldStatus, own_expiry_ms) as u64,
        ),
        (
            "offsetof(struct mld_status, last_decision)",
            offset_of!(MldStatus, last_decision) as u64,
        ),
        (
            "offsetof(struct mld_status, last_refusal)",
            offset_of!(MldStatus, last_refusal) as u64,
        ),
        (
            "offsetof(struct mld_status, max_lease_ms)",
            offset_of!(MldStatus, max_lease_ms) as u64,
        ),
        (
            "offsetof(struct mld_status, reserved)",
            offset_of!(MldStatus, reserved) as u64,
        ),
        ("MLD_LOCK_DETACHED", MLD_LOCK_DETACHED.into()),
        ("MLD_ST_LOCKED", MLD_ST_LOCKED.into()),
        ("MLD_ST_STATIC", MLD_ST_STATIC.into()),
        ("MLD_ST_HELD_BY_ME", MLD_ST_HELD_BY_ME.into()),
        ("MLD_ST_DETACHED", MLD_ST_DETACHED.into()),
        ("MLD_ST_CHANNEL", MLD_ST_CHANNEL.into()),
        ("MLD_ST_MIGRATION_PENDING", MLD_ST_MIGRATION_PENDING.into()),
        ("MLD_ST_FORCED_RELEASE", MLD_ST_FORCED_RELEASE.into()),
        ("MLD_ST_LEASE_EXPIRED", MLD_ST_LEASE_EXPIRED.into()),
        ("MLD_DECISION_NONE", MLD_DECISION_NONE.into()),
        ("MLD_DECISION_GRANTED", MLD_DECISION_GRANTED.into()),
        ("MLD_DECISION_REFUSED", MLD_DECISION_REFUSED.into()),
        ("MLD_DECISION_LOCAL", MLD_DECISION_LOCAL.into()),
        ("MLD_REASON_CRITICAL_CODE", reason(Reason::CriticalCode)),
        (
            "MLD_REASON_CRITICAL_OPERATION",
            reason(Reason::CriticalOperation),
        ),
        ("MLD_REASON_CO_LOCATION", reason(Reason::CoLocation)),
        (
            "MLD_REASON_SPECIAL_HARDWARE",
            reason(Reason::SpecialHardware),
        ),
        ("MLD_REASON_CONFIDENTIAL", reason(Reason::Confidential)),
        ("MLD_REASON_OTHER", reason(Reason::Other)),
        (
            "__NR_set_migration_flag",
            ioctl::NR_SET_MIGRATION_FLAG as u64,
        ),
    ];
    assert_eq!(
        rust.len(),
        c.len(),
        "the probe and this list must cover the same names"
    );
    for (name, value) in rust {
        assert_eq!(
            c.get(name),
            Some(&value),
            "{name}: C header and Rust ABI disagree"
        );
    }
}
