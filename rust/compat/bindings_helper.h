/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What miglock.ko needs beyond Linux 6.12's kernel::bindings. bindgen reads
 * this at build time with this kernel's own C flags (see rust/Kbuild), so the
 * layouts always match the kernel the module is built for.
 */
#include <linux/miscdevice.h>
#include <linux/poll.h>

/* Only in the test kernel (patches/0001-set_migration_flag-syscall.patch). */
#if __has_include(<linux/miglock.h>)
#include <linux/miglock.h>
#endif
