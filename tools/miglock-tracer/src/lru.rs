// SPDX-License-Identifier: GPL-2.0

//! Which frames idle page tracking can see: only LRU pages can be marked
//! idle, so every other frame (free, slab, page tables, kernel) reads as
//! "not idle" forever and would count as accessed in every sample. The LRU
//! bit of `/proc/kpageflags` (8 bytes per frame) filters them out; it is
//! refreshed every `--lru-refresh` samples because reading it costs about
//! as much kernel time as the idle bitmap.

use crate::bitset::Bitset;
use crate::idle::read_full;
use crate::sysmem::PfnRange;
use anyhow::{Context, Result};
use std::fs::File;
use std::path::Path;

/// `KPF_LRU` in `include/uapi/linux/kernel-page-flags.h`.
pub const KPF_LRU: u32 = 5;

/// Frames per read (64 KiB of flags).
const CHUNK: usize = 8192;

/// The open `/proc/kpageflags`.
pub struct KpageFlags {
    file: File,
    buf: Vec<u8>,
}

impl KpageFlags {
    /// Opens `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        Ok(KpageFlags {
            file,
            buf: vec![0; CHUNK * 8],
        })
    }

    /// Sets `lru` to the LRU frames in `ram` (others cleared).
    pub fn read_lru(&mut self, ram: &[PfnRange], lru: &mut Bitset) -> Result<()> {
        lru.clear();
        for r in ram {
            let mut pfn = r.start;
            while pfn < r.end.min(lru.len()) {
                let n = ((r.end - pfn) as usize).min(CHUNK);
                let got = read_full(&self.file, &mut self.buf[..n * 8], pfn * 8)
                    .with_context(|| format!("reading kpageflags at frame {pfn:#x}"))?;
                for (k, c) in self.buf[..got].chunks_exact(8).enumerate() {
                    let flags = u64::from_ne_bytes(c.try_into().unwrap_or_default());
                    if flags >> KPF_LRU & 1 != 0 {
                        lru.set(pfn + k as u64);
                    }
                }
                if got < n * 8 {
                    break;
                }
                pfn += n as u64;
            }
        }
        Ok(())
    }
}

/// Sets `accessed` to the frames that are not idle, are LRU and are RAM:
/// `!idle & lru`, word by word.
pub fn accessed_from_idle(idle: &Bitset, lru: &Bitset, accessed: &mut Bitset) {
    for ((a, i), l) in accessed
        .words_mut()
        .iter_mut()
        .zip(idle.words())
        .zip(lru.words())
    {
        *a = !i & l;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_bits_from_flags() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("kpageflags");
        let flags: Vec<u64> = (0..100u64)
            .map(|i| {
                if i % 3 == 0 {
                    1 << KPF_LRU | 1
                } else {
                    1 << 10
                }
            })
            .collect();
        let b: Vec<u8> = flags.iter().flat_map(|f| f.to_ne_bytes()).collect();
        std::fs::write(&p, b).unwrap();
        let mut k = KpageFlags::open(&p).unwrap();
        let mut lru = Bitset::new(100);
        lru.set(1); // stale bits are cleared
        k.read_lru(&[PfnRange { start: 10, end: 40 }], &mut lru)
            .unwrap();
        let want: Vec<u64> = (10..40).filter(|i| i % 3 == 0).collect();
        let got: Vec<u64> = (0..100).filter(|&i| lru.get(i)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn accessed_is_not_idle_and_lru() {
        let mut idle = Bitset::new(64);
        let mut lru = Bitset::new(64);
        idle.words_mut()[0] = 0b1100;
        lru.words_mut()[0] = 0b1010;
        let mut a = Bitset::new(64);
        accessed_from_idle(&idle, &lru, &mut a);
        assert_eq!(a.words(), &[0b0010]);
    }
}
