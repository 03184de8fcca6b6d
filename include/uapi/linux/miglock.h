/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * miglock: guest-controlled migration lock, /dev/mld.
 *
 * The numbers and layouts here mirror tools/miglock-abi (the one source);
 * a golden test compiles this header and compares every value.
 */
#ifndef _UAPI_LINUX_MIGLOCK_H
#define _UAPI_LINUX_MIGLOCK_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define MLD_DEVICE		"/dev/mld"
#define MLD_IOC_MAGIC		0xB9

/* Not upstream: the x86_64 syscall added by patches/ to the test kernel. */
#define __NR_set_migration_flag	499

/* Why an application locks (the paper's four reasons, plus two). */
enum mld_reason {
	MLD_REASON_CRITICAL_CODE	= 1,
	MLD_REASON_CRITICAL_OPERATION	= 2,
	MLD_REASON_CO_LOCATION		= 3,
	MLD_REASON_SPECIAL_HARDWARE	= 4,
	MLD_REASON_CONFIDENTIAL		= 5,
	MLD_REASON_OTHER		= 6,
};

#define MLD_LABEL_LEN		32

/* Not owned by the file: held until unlocked or the lease ends. */
#define MLD_LOCK_DETACHED	(1U << 0)

/**
 * struct mld_lock - MLD_IOC_LOCK argument
 * @reason:   an enum mld_reason value
 * @flags:    MLD_LOCK_* flags
 * @lease_ms: lease in milliseconds; 0 means the maximum lease
 * @reserved: must be zero
 * @label:    printable ASCII, NUL-terminated, zero-padded
 */
struct mld_lock {
	__u32 reason;
	__u32 flags;
	__u32 lease_ms;
	__u32 reserved;
	char label[MLD_LABEL_LEN];
};

/**
 * struct mld_renew - MLD_IOC_RENEW argument
 * @lease_ms: new lease from now in milliseconds; 0 means the maximum lease
 * @flags:    MLD_LOCK_DETACHED to renew the detached hold
 */
struct mld_renew {
	__u32 lease_ms;
	__u32 flags;
};

#define MLD_ST_LOCKED			(1U << 0)
#define MLD_ST_STATIC			(1U << 1)
#define MLD_ST_HELD_BY_ME		(1U << 2)
#define MLD_ST_DETACHED			(1U << 3)
#define MLD_ST_CHANNEL			(1U << 4)
#define MLD_ST_MIGRATION_PENDING	(1U << 5)
#define MLD_ST_FORCED_RELEASE		(1U << 6)
#define MLD_ST_LEASE_EXPIRED		(1U << 7)
#define MLD_ST_POSTCOPY			(1U << 8)
#define MLD_ST_MIGRATION_CANCELLED	(1U << 9)
#define MLD_ST_MIGRATED			(1U << 10)
#define MLD_ST_LOCAL_DECISION		(1U << 11)
/* A live checkpoint is being taken (the VM keeps running and stays here). */
#define MLD_ST_CHECKPOINT		(1U << 12)
/* A checkpoint ended since this file's last MLD_IOC_STATUS. */
#define MLD_ST_CHECKPOINT_DONE		(1U << 13)
/* Restored from a checkpoint (back to its start) since the last call. */
#define MLD_ST_RESTORED			(1U << 14)

#define MLD_DECISION_NONE	0
#define MLD_DECISION_GRANTED	1
#define MLD_DECISION_REFUSED	2
#define MLD_DECISION_LOCAL	3

/**
 * struct mld_status - MLD_IOC_STATUS result
 * @flags:              MLD_ST_* flags
 * @holders:            number of holds (the static lock is not one)
 * @earliest_expiry_ms: ms until the earliest lease ends; 0 if none
 * @own_expiry_ms:      ms until this file's lease ends; 0 if it holds none
 * @last_decision:      the last MLD_DECISION_*
 * @last_refusal:       the host's refusal reason, 0 if none
 * @max_lease_ms:       the maximum lease
 * @postcopy_gen:       times the host announced post-copy (MLD_ST_POSTCOPY)
 * @pending_deadline_ms: ms until the pending migration's deadline; 0 if none
 *                      is pending (MLD_ST_MIGRATION_PENDING) or it passed
 * @migration_gen:      times the VM arrived here by live migration
 *                      (MLD_ST_MIGRATED)
 * @reserved:           zero
 */
struct mld_status {
	__u32 flags;
	__u32 holders;
	__u64 earliest_expiry_ms;
	__u64 own_expiry_ms;
	__u32 last_decision;
	__u32 last_refusal;
	__u32 max_lease_ms;
	__u32 postcopy_gen;
	__u32 pending_deadline_ms;
	__u32 migration_gen;
	__u32 reserved[4];
};

#define MLD_MAX_HINTS		1024

/**
 * struct mld_hint_range - one ranked guest-physical range
 * @start_pfn: first page frame number
 * @pages:     number of pages, at least one
 * @score:     higher is hotter; ranges come hottest first
 */
struct mld_hint_range {
	__u64 start_pfn;
	__u32 pages;
	__u32 score;
};

/**
 * struct mld_hints - MLD_IOC_HINTS argument
 * @batch:             batch number, higher than the last
 * @count:             ranges at @ranges, at most MLD_MAX_HINTS
 * @ranges:            user address of @count struct mld_hint_range
 * @wss_pages:         pages the workload touched recently
 * @dirty_pages_per_s: pages written per second
 * @pfn_limit:         every frame number is below this
 * @interval_ms:       the tracer's sampling interval
 * @reserved:          must be zero
 */
struct mld_hints {
	__u32 batch;
	__u32 count;
	__u64 ranges;
	__u64 wss_pages;
	__u64 dirty_pages_per_s;
	__u64 pfn_limit;
	__u32 interval_ms;
	__u32 reserved;
};

/* flag: 1 = may migrate, 0 = locked ("Who Decides Migration?") */
#define SET_MIGRATION_FLAG	_IOW(MLD_IOC_MAGIC, 0x00, int)
#define MLD_IOC_LOCK		_IOW(MLD_IOC_MAGIC, 0x01, struct mld_lock)
#define MLD_IOC_UNLOCK		_IOW(MLD_IOC_MAGIC, 0x02, __u32)
#define MLD_IOC_RENEW		_IOW(MLD_IOC_MAGIC, 0x03, struct mld_renew)
#define MLD_IOC_STATUS		_IOR(MLD_IOC_MAGIC, 0x04, struct mld_status)
#define MLD_IOC_HINTS		_IOW(MLD_IOC_MAGIC, 0x05, struct mld_hints)

#endif /* _UAPI_LINUX_MIGLOCK_H */
