// SPDX-License-Identifier: GPL-2.0
/*
 * Lock the VM against live migration around a critical section: the Linux
 * counterpart of Figure 5 of "Who Decides Migration?".
 *
 *   cc -I include/uapi samples/c/mld_critical.c -o mld_critical
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <linux/miglock.h>

static int show(int fd, const char *when)
{
	struct mld_status st;

	if (ioctl(fd, MLD_IOC_STATUS, &st) < 0) {
		perror("MLD_IOC_STATUS");
		return -1;
	}
	printf("%-28s locked=%d holders=%u mine=%d lease_left_ms=%llu\n", when,
	       !!(st.flags & MLD_ST_LOCKED), st.holders,
	       !!(st.flags & MLD_ST_HELD_BY_ME),
	       (unsigned long long)st.own_expiry_ms);
	return 0;
}

int main(void)
{
	struct mld_lock req = {
		.reason = MLD_REASON_CRITICAL_OPERATION,
		.lease_ms = 5000,
	};
	int flag, fd;

	fd = open(MLD_DEVICE, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		perror("open " MLD_DEVICE);
		return 1;
	}

	/* The paper's interface: flag 0 = do not migrate, 1 = may migrate. */
	flag = 0;
	if (ioctl(fd, SET_MIGRATION_FLAG, &flag) < 0) {
		perror("SET_MIGRATION_FLAG 0");
		return 1;
	}
	show(fd, "SET_MIGRATION_FLAG 0:");
	flag = 1;
	if (ioctl(fd, SET_MIGRATION_FLAG, &flag) < 0) {
		perror("SET_MIGRATION_FLAG 1");
		return 1;
	}
	show(fd, "SET_MIGRATION_FLAG 1:");

	/* The richer call: why, for how long, and a label for the admin. */
	strncpy(req.label, "c sample commit", sizeof(req.label) - 1);
	if (ioctl(fd, MLD_IOC_LOCK, &req) < 0) {
		perror("MLD_IOC_LOCK");
		return 1;
	}
	show(fd, "MLD_IOC_LOCK (5 s lease):");
	/* ... the critical section: the VM is not migrated here ... */

	/* Closing the file releases the lock, even if the program crashes. */
	close(fd);
	fd = open(MLD_DEVICE, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || show(fd, "after close:") < 0)
		return 1;
	close(fd);
	return 0;
}
