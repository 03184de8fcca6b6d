// SPDX-License-Identifier: GPL-2.0

//! Random `struct mld_lock` bytes through the checks the module applies to
//! them: no panic, and an accepted label is printable and terminated.

#![no_main]

use libfuzzer_sys::fuzz_target;
use miglock_abi::types::{check_label, Reason, MLD_LABEL_LEN};

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 + MLD_LABEL_LEN {
        return;
    }
    let reason = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
    if let Some(r) = Reason::from_u32(reason) {
        assert_eq!(r as u32, reason);
    }
    let mut label = [0u8; MLD_LABEL_LEN];
    label.copy_from_slice(&data[4..4 + MLD_LABEL_LEN]);
    if let Ok(text) = check_label(&label) {
        assert!(text.len() < MLD_LABEL_LEN);
        assert!(text.iter().all(|b| (0x20..0x7f).contains(b)));
    }
});
