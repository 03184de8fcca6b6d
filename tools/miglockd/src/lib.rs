// SPDX-License-Identifier: GPL-2.0

//! What of miglockd other programs need: the command lines of `miglockd`,
//! `miglockctl` and the libvirt hook, from which the man pages and shell
//! completions are generated.

pub mod cli;
