// SPDX-License-Identifier: GPL-2.0

//! Unsigned LEB128: seven bits a byte, low first, high bit = more follows.

/// Appends `v`.
pub fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Decodes one varint a byte at a time; rejects more than 64 bits.
#[derive(Default)]
pub struct Decoder {
    value: u64,
    shift: u32,
}

impl Decoder {
    /// Feeds a byte: the value when complete, `Err` when too long.
    pub fn push(&mut self, b: u8) -> Result<Option<u64>, ()> {
        let bits = u64::from(b & 0x7f);
        if self.shift == 63 && bits > 1 || self.shift > 63 {
            return Err(());
        }
        self.value |= bits << self.shift;
        self.shift += 7;
        Ok((b & 0x80 == 0).then_some(self.value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_edges() {
        for v in [0, 1, 127, 128, 300, u32::MAX as u64, u64::MAX - 1, u64::MAX] {
            let mut b = Vec::new();
            put(&mut b, v);
            let mut d = Decoder::default();
            let got = b.iter().map(|&x| d.push(x).unwrap()).last().flatten();
            assert_eq!(got, Some(v), "{v}");
        }
    }

    #[test]
    fn rejects_overlong() {
        let mut d = Decoder::default();
        let r: Result<Vec<_>, _> = [0xffu8; 11].iter().map(|&b| d.push(b)).collect();
        assert!(r.is_err());
    }
}
