// SPDX-License-Identifier: GPL-2.0

//! Hint ranges from the model: frames with any access in the last eight
//! samples, adjacent ones coalesced while they share a heat class, ranked by
//! score, hottest first, at most `max` ranges.
//!
//! The class is the top three bits of the aging byte (the access pattern of
//! the last three samples), so a range never mixes a frame used every
//! interval with one last used long ago. A range's score is the mean of its
//! frames' scores ([`crate::model::score`]): it still orders ranges within
//! a class and stays comparable across range lengths.

use crate::model::{score, Model};
use miglock_abi::types::MldHintRange;
use std::cmp::Ordering;

/// Longest range (the ABI's page count is a u32).
pub const MAX_RANGE_PAGES: u64 = u32::MAX as u64;

/// Heat class of an aging byte.
pub fn class(age: u8) -> u8 {
    age >> 5
}

/// Hottest first; equal scores by address so the order is deterministic.
fn hotter(a: &MldHintRange, b: &MldHintRange) -> Ordering {
    b.score.cmp(&a.score).then(a.start_pfn.cmp(&b.start_pfn))
}

/// Ranks the model's frames into at most `max` ranges.
pub fn rank(model: &Model, max: usize) -> Vec<MldHintRange> {
    rank_frames(model.ages(), model.freqs(), max)
}

/// [`rank`] over raw aging and frequency bytes.
pub fn rank_frames(ages: &[u8], freqs: &[u8], max: usize) -> Vec<MldHintRange> {
    let mut out: Vec<MldHintRange> = Vec::new();
    if max == 0 {
        return out;
    }
    // Run under construction: start, pages, score sum, class.
    let mut run: Option<(u64, u64, u64, u8)> = None;
    let push = |out: &mut Vec<MldHintRange>, r: (u64, u64, u64, u8)| {
        out.push(MldHintRange {
            start_pfn: r.0,
            pages: r.1 as u32,
            score: (r.2 / r.1) as u32,
        });
    };
    for (ci, (ac, fc)) in ages.chunks(64).zip(freqs.chunks(64)).enumerate() {
        // Blocks of cold frames (most of a guest) are skipped whole.
        if ac.iter().all(|&a| a == 0) {
            if let Some(r) = run.take() {
                push(&mut out, r);
            }
            continue;
        }
        for (i, (&a, &f)) in ac.iter().zip(fc).enumerate() {
            let pfn = (ci * 64 + i) as u64;
            if a == 0 {
                if let Some(r) = run.take() {
                    push(&mut out, r);
                }
                continue;
            }
            let s = u64::from(score(a, f));
            match &mut run {
                Some(r) if r.3 == class(a) && r.1 < MAX_RANGE_PAGES => {
                    r.1 += 1;
                    r.2 += s;
                }
                _ => {
                    if let Some(r) = run.take() {
                        push(&mut out, r);
                    }
                    run = Some((pfn, 1, s, class(a)));
                }
            }
        }
    }
    if let Some(r) = run {
        push(&mut out, r);
    }
    if out.len() > max {
        out.select_nth_unstable_by(max - 1, hotter);
        out.truncate(max);
    }
    out.sort_unstable_by(hotter);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start_pfn: u64, pages: u32, score: u32) -> MldHintRange {
        MldHintRange {
            start_pfn,
            pages,
            score,
        }
    }

    #[test]
    fn coalesces_by_class_and_ranks() {
        //          0     1     2     3     4     5     6     7
        let ages = [0x00, 0xff, 0xf0, 0x80, 0x00, 0x40, 0x41, 0x01];
        let freqs = [0, 8, 4, 1, 0, 1, 2, 1];
        let got = rank_frames(&ages, &freqs, 10);
        // 1,2 share class 7 (mean of 0xff08 and 0xf004 = 0xf786);
        // 3 is class 4; 5,6 class 2 (mean of 0x4001, 0x4102 = 0x4081);
        // 7 is class 0.
        assert_eq!(
            got,
            vec![
                r(1, 2, 0xf786),
                r(3, 1, 0x8001),
                r(5, 2, 0x4081),
                r(7, 1, 0x0101),
            ]
        );
    }

    #[test]
    fn keeps_the_hottest_max() {
        let ages = [0x20, 0, 0xa0, 0, 0x80, 0, 0xe0];
        let freqs = [0; 7];
        assert_eq!(
            rank_frames(&ages, &freqs, 2),
            vec![r(6, 1, 0xe000), r(2, 1, 0xa000)]
        );
        assert!(rank_frames(&ages, &freqs, 0).is_empty());
    }

    #[test]
    fn never_over_max_and_sorted() {
        let mut rng = fastrand::Rng::with_seed(3);
        for max in [1, 7, 64, 1024] {
            let ages: Vec<u8> = (0..20000)
                .map(|_| if rng.bool() { 0 } else { rng.u8(..) })
                .collect();
            let freqs: Vec<u8> = (0..20000).map(|_| rng.u8(..)).collect();
            let got = rank_frames(&ages, &freqs, max);
            assert!(got.len() <= max);
            assert!(got.windows(2).all(|w| w[0].score >= w[1].score));
            // Ranges are disjoint, cover only touched frames, and the
            // dropped ones are no hotter than the last kept.
            let all = rank_frames(&ages, &freqs, usize::MAX);
            let floor = got.last().unwrap().score;
            assert!(all[got.len()..].iter().all(|x| x.score <= floor));
            for x in &got {
                let s = x.start_pfn as usize;
                assert!(ages[s..s + x.pages as usize].iter().all(|&a| a != 0));
            }
        }
    }

    #[test]
    fn equal_scores_by_address() {
        let got = rank_frames(&[0x80, 0, 0x80, 0, 0x80], &[0; 5], 2);
        assert_eq!(got, vec![r(0, 1, 0x8000), r(2, 1, 0x8000)]);
    }
}
