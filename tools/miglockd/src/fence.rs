// SPDX-License-Identifier: GPL-2.0

//! QEMU builds whose migrations are known to corrupt guests, fenced.
//!
//! Debian 12's QEMU 7.2 under TCG loses pages from the dirty log: a
//! pre-copy of a guest that writes "converges" early and the destination
//! runs on stale memory (oopses, lists poisoned, workload pages wrong), in
//! 1- and 2-vCPU guests, with and without the module. Post-copy from the
//! start sends each page once, after the switchover, and survived every
//! run; QEMU 10.0 survived every mode (Documentation/host-agent.rst,
//! "Which QEMU"). So on a QEMU older than the first one known good, under
//! TCG, the agent runs no mode that relies on the dirty log: it refuses
//! pre-copy and pre-copy then post-copy, and `auto` plans post-copy. KVM
//! keeps its own dirty log and is not fenced.

use crate::planner::Choice;
use serde_json::Value;

/// The first QEMU known to track dirty pages correctly under TCG here.
pub const FIRST_KNOWN_GOOD: (u64, u64, u64) = (10, 0, 0);

/// What the gate needs to know of a QEMU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Qemu {
    /// `query-version`'s major, minor, micro.
    pub version: (u64, u64, u64),
    /// Whether it runs the guest under KVM (else TCG).
    pub kvm: bool,
}

impl Qemu {
    /// From `query-version` and `query-kvm`.
    pub fn from_qmp(version: &Value, kvm: &Value) -> Qemu {
        let q = &version["qemu"];
        let n = |k: &str| q[k].as_u64().unwrap_or(0);
        Qemu {
            version: (n("major"), n("minor"), n("micro")),
            kvm: kvm["enabled"] == true,
        }
    }

    /// Asks QEMU through `qmp`.
    pub fn query(qmp: &miglock_qmp::Monitor) -> Result<Qemu, String> {
        let version = qmp.execute("query-version", None);
        let kvm = qmp.execute("query-kvm", None);
        match (version, kvm) {
            (Ok(version), Ok(kvm)) => Ok(Qemu::from_qmp(&version, &kvm)),
            _ => Err("QEMU did not say its version or accelerator".into()),
        }
    }

    /// Whether its dirty log can be trusted.
    pub fn dirty_log_trusted(&self) -> bool {
        self.kvm || self.version >= FIRST_KNOWN_GOOD
    }

    fn name(&self) -> String {
        let (a, b, c) = self.version;
        format!(
            "QEMU {a}.{b}.{c} under {}",
            if self.kvm { "KVM" } else { "TCG" }
        )
    }
}

/// Whether `choice` relies on the dirty log.
fn uses_dirty_log(choice: Choice) -> bool {
    matches!(choice, Choice::Precopy | Choice::PrecopyThenPostcopy)
}

/// Refuses an explicitly asked `choice` that would corrupt guests on `q`.
pub fn check(q: &Qemu, choice: Choice) -> Result<(), String> {
    if q.dirty_log_trusted() || !uses_dirty_log(choice) {
        return Ok(());
    }
    Err(format!(
        "{} loses pages from its dirty log, so a {} can corrupt a guest that writes; \
         use --mode postcopy, or QEMU {}.{} or later (see \"Which QEMU\" in \
         Documentation/host-agent.rst)",
        q.name(),
        match choice {
            Choice::Precopy => "pre-copy",
            _ => "pre-copy then post-copy",
        },
        FIRST_KNOWN_GOOD.0,
        FIRST_KNOWN_GOOD.1
    ))
}

/// What a plan becomes on `q`: a mode that does not rely on the dirty log,
/// and why, if it had to change.
pub fn safe(q: &Qemu, choice: Choice) -> (Choice, Option<String>) {
    if check(q, choice).is_ok() {
        return (choice, None);
    }
    (
        Choice::Postcopy,
        Some(format!(
            "{} is fenced: its dirty log loses pages, post-copy instead",
            q.name()
        )),
    )
}

/// The first QEMU whose post-copy phase after a pre-copy pass ran without
/// a bandwidth cap and verified every time here.
pub const FIRST_UNCAPPED_HYBRID: (u64, u64, u64) = (10, 0, 0);

/// The `max-postcopy-bandwidth` to set for `choice` on `q`, or `None` to
/// leave QEMU's own; `asked` is `--postcopy-bandwidth`, `link` is
/// `--bandwidth`.
///
/// An asked cap always holds, and otherwise the link's does ("the link is
/// the link"), except in pre-copy then post-copy's post-copy phase on a
/// QEMU where running it uncapped was proven correct: there it is 0,
/// QEMU's "no limit", set explicitly since QEMU keeps the last migration's
/// value. On QEMU 7.2 the uncapped phase corrupted a write-heavy guest's
/// memory (3 of 4 runs, one destination oops, with and without
/// `postcopy-preempt`) while the capped one verified 4 of 4; on QEMU 10.0
/// the uncapped one verified 4 of 4 and cut post-copy requests from 28-48
/// to 2-3 (Documentation/host-agent.rst, "Pre-copy then post-copy").
pub fn postcopy_cap(
    q: &Qemu,
    choice: Choice,
    asked: Option<u64>,
    link: Option<u64>,
) -> Option<u64> {
    if asked.is_some() {
        return asked;
    }
    if choice == Choice::PrecopyThenPostcopy && q.version >= FIRST_UNCAPPED_HYBRID {
        return Some(0);
    }
    link
}

/// The first QEMU whose `postcopy-preempt` is a supported feature
/// (QEMU's own documentation: "introduced in 8.0"); 7.2 has a capability
/// of that name, but there a pre-copy stream stalls unless both ends agree
/// and the one hybrid run here with it came out corrupted.
pub const FIRST_PREEMPT: (u64, u64, u64) = (8, 0, 0);

/// Why `q` cannot run `postcopy-preempt`, if it cannot.
pub fn preempt_refused(q: &Qemu) -> Option<String> {
    (q.version < FIRST_PREEMPT).then(|| {
        format!(
            "postcopy-preempt needs QEMU {}.{} or later; this is {}",
            FIRST_PREEMPT.0,
            FIRST_PREEMPT.1,
            q.name()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn q(v: (u64, u64, u64), kvm: bool) -> Qemu {
        Qemu { version: v, kvm }
    }

    #[test]
    fn reads_qmp() {
        let v = json!({"qemu": {"major": 7, "minor": 2, "micro": 22}, "package": "Debian"});
        assert_eq!(
            Qemu::from_qmp(&v, &json!({"enabled": false, "present": true})),
            q((7, 2, 22), false)
        );
    }

    #[test]
    fn old_tcg_refuses_what_uses_the_dirty_log() {
        let old = q((7, 2, 22), false);
        assert!(check(&old, Choice::Precopy).is_err());
        assert!(check(&old, Choice::PrecopyThenPostcopy).is_err());
        assert!(check(&old, Choice::Postcopy).is_ok());
        assert_eq!(safe(&old, Choice::Precopy).0, Choice::Postcopy);
        assert!(check(&old, Choice::Precopy)
            .unwrap_err()
            .contains("QEMU 7.2.22 under TCG"));
    }

    #[test]
    fn kvm_and_known_good_qemu_are_not_fenced() {
        for good in [
            q((7, 2, 22), true),
            q((10, 0, 2), false),
            q((10, 1, 0), false),
        ] {
            assert!(check(&good, Choice::Precopy).is_ok());
            assert_eq!(
                safe(&good, Choice::PrecopyThenPostcopy),
                (Choice::PrecopyThenPostcopy, None)
            );
        }
        assert!(check(&q((9, 2, 0), false), Choice::Precopy).is_err());
    }

    #[test]
    fn hybrid_post_copy_is_uncapped_only_where_proven() {
        let link = Some(32 << 20);
        for v in [(10, 0, 0), (10, 0, 2), (10, 1, 0)] {
            let q = q(v, false);
            assert_eq!(
                postcopy_cap(&q, Choice::PrecopyThenPostcopy, None, link),
                Some(0)
            );
            assert_eq!(
                postcopy_cap(&q, Choice::PrecopyThenPostcopy, None, None),
                Some(0)
            );
            // Post-copy from the start keeps the link's cap.
            assert_eq!(postcopy_cap(&q, Choice::Postcopy, None, link), link);
        }
        for old in [
            q((7, 2, 22), false),
            q((7, 2, 22), true),
            q((9, 2, 0), false),
        ] {
            assert_eq!(
                postcopy_cap(&old, Choice::PrecopyThenPostcopy, None, link),
                link
            );
            assert_eq!(
                postcopy_cap(&old, Choice::PrecopyThenPostcopy, None, None),
                None
            );
        }
        // An asked cap always holds.
        let asked = Some(8 << 20);
        for v in [(7, 2, 22), (10, 0, 2)] {
            assert_eq!(
                postcopy_cap(&q(v, false), Choice::PrecopyThenPostcopy, asked, link),
                asked
            );
        }
        assert_eq!(
            postcopy_cap(&q((10, 0, 2), false), Choice::Precopy, None, None),
            None
        );
    }

    #[test]
    fn preempt_only_where_qemu_supports_it() {
        assert!(preempt_refused(&q((7, 2, 22), false)).is_some_and(|w| w.contains("8.0")));
        assert_eq!(preempt_refused(&q((8, 0, 0), false)), None);
        assert_eq!(preempt_refused(&q((10, 0, 2), true)), None);
    }
}
