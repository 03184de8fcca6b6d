// SPDX-License-Identifier: GPL-2.0

//! The guest CLIs' command lines, shared with the man page generator.

pub mod cli;
