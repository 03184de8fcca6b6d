// SPDX-License-Identifier: GPL-2.0

//! Hint batches from the tracer: checked here, rate limited, then forwarded
//! to the host over the host channel.
//!
//! Hints are advice, so over the rate a batch is refused with `EAGAIN`
//! rather than queued: the tracer's next batch supersedes it anyway, and a
//! flood can never build a backlog in front of lock requests.

use crate::abi::types::{MldHints, MLD_MAX_HINTS};
use crate::abi::wire::{HINT_LEN, MAX_HINTS};
use kernel::prelude::*;

const NSEC_PER_SEC: u64 = 1_000_000_000;

/// Wire frames a batch of `count` ranges takes: one `Workload`, then the
/// `Hints` frames.
pub(crate) fn frames_for(count: u32) -> u32 {
    1 + count.div_ceil(MAX_HINTS as u32).max(1)
}

/// Checks a request and the ranges it points to (`raw`, in the
/// `mld_hint_range` layout, which is also the wire layout).
pub(crate) fn check(req: &MldHints, raw: &[u8]) -> Result {
    if req.reserved != 0 || req.count > MLD_MAX_HINTS || req.interval_ms == 0 {
        return Err(EINVAL);
    }
    if raw.len() != req.count as usize * HINT_LEN {
        return Err(EINVAL);
    }
    for r in raw.chunks_exact(HINT_LEN) {
        let mut start = [0u8; 8];
        start.copy_from_slice(&r[..8]);
        let mut pages = [0u8; 4];
        pages.copy_from_slice(&r[8..12]);
        let (start, pages) = (u64::from_le_bytes(start), u32::from_le_bytes(pages));
        let end = start.checked_add(pages.into()).ok_or(EINVAL)?;
        if pages == 0 || (req.pfn_limit != 0 && end > req.pfn_limit) {
            return Err(EINVAL);
        }
    }
    Ok(())
}

/// Token bucket over wire frames.
pub(crate) struct Limiter {
    /// Frames per second; 0 turns hints off.
    rate: u32,
    /// Tokens, in frames × 10^9 (nanosecond resolution without floats).
    tokens: u64,
    at_ns: u64,
}

impl Limiter {
    /// A full bucket of `rate` frames per second.
    pub(crate) const fn new(rate: u32) -> Self {
        Limiter {
            rate,
            tokens: Self::capacity(rate),
            at_ns: 0,
        }
    }

    /// A bucket holds a second's worth, and at least one full batch.
    const fn capacity(rate: u32) -> u64 {
        let full = 2 + MLD_MAX_HINTS.div_ceil(MAX_HINTS as u32);
        let frames = if rate > full { rate } else { full };
        frames as u64 * NSEC_PER_SEC
    }

    /// Takes the tokens for `frames` frames at `now_ns`: `EOPNOTSUPP` with
    /// hints off, `EAGAIN` over the rate.
    pub(crate) fn admit(&mut self, frames: u32, now_ns: u64) -> Result {
        if self.rate == 0 {
            return Err(crate::compat::errno::eopnotsupp());
        }
        let gained = now_ns
            .saturating_sub(self.at_ns)
            .saturating_mul(self.rate.into());
        self.tokens = self
            .tokens
            .saturating_add(gained)
            .min(Self::capacity(self.rate));
        self.at_ns = now_ns;
        let cost = u64::from(frames) * NSEC_PER_SEC;
        if self.tokens < cost {
            return Err(EAGAIN);
        }
        self.tokens -= cost;
        Ok(())
    }
}
