#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Prints the make variables that select the kernel toolchain: Debian's rustc
# (the version the kernel crate is built with), its clippy, LLVM 19 and the
# pinned bindgen. Used for the kernel build and for every module build, so
# both always agree.
cargo_bin=${CARGO_HOME:-$HOME/.cargo}/bin
echo "ARCH=x86_64 LLVM=-19 RUSTC=/usr/bin/rustc HOSTRUSTC=/usr/bin/rustc" \
	"RUSTDOC=/usr/bin/rustdoc CLIPPY_DRIVER=/usr/bin/clippy-driver" \
	"BINDGEN=$cargo_bin/bindgen"
