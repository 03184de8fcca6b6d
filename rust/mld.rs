// SPDX-License-Identifier: GPL-2.0

//! `/dev/mld`: one open file of the migration-lock device.
//!
//! The per-file adapter: decodes each ioctl, copies its argument in,
//! validates it (`lockstate::request`), asks the service, and copies the
//! answer out. A lock taken through a file belongs to it and ends when the
//! file is closed, so a crashed application never leaves the VM locked.

use crate::abi::{ioctl as nr, types::*};
use crate::compat::miscdevice::{MiscDevice, EPOLLIN, EPOLLRDNORM};
use crate::compat::poll::PollTable;
use crate::lockstate::request::{self, FlagRequest, Invalid, LockRequest, Target};
use crate::lockstate::status::Seen;
use crate::lockstate::table::Owner;
use crate::service::Service;
use core::mem::size_of;
use kernel::{
    new_mutex,
    prelude::*,
    sync::{Arc, Mutex},
    types::FromBytes,
    uaccess::UserSlice,
};

/// The device type registered as `/dev/mld`.
pub(crate) struct MldDevice;

/// One open file of `/dev/mld`.
#[pin_data]
pub(crate) struct MldFile {
    service: Arc<Service>,
    id: u32,
    /// Serialises this file's lock, unlock, renew and flag requests (a host
    /// round trip included), so two threads never race about its hold.
    #[pin]
    ops: Mutex<()>,
    /// What this file has seen (status, poll).
    #[pin]
    seen: Mutex<Seen>,
}

#[vtable]
impl MiscDevice for MldDevice {
    type Ctx = Arc<Service>;
    type Ptr = Pin<KBox<MldFile>>;

    fn open(service: &Arc<Service>) -> Result<Pin<KBox<MldFile>>> {
        let (id, seen) = service.open_file();
        KBox::pin_init(
            pin_init!(MldFile {
                service: service.clone(),
                id,
                ops <- new_mutex!(()),
                seen <- new_mutex!(seen),
            }),
            GFP_KERNEL,
        )
    }

    fn release(file: Pin<KBox<MldFile>>) {
        file.service.release(file.own(), false);
    }

    fn ioctl(file: Pin<&MldFile>, cmd: u32, arg: usize) -> Result<isize> {
        file.ioctl(cmd, arg).map(|()| 0)
    }

    fn poll(file: Pin<&MldFile>, table: &PollTable<'_>) -> u32 {
        table.register_wait(file.service.pollers());
        let seen = *file.seen.lock();
        if file.service.has_event(file.own(), &seen) {
            EPOLLIN | EPOLLRDNORM
        } else {
            0
        }
    }
}

fn read_arg<T: FromBytes>(arg: usize) -> Result<T> {
    UserSlice::new(arg, size_of::<T>()).reader().read::<T>()
}

/// Every invalid request is `EINVAL` to the caller.
fn invalid(_: Invalid) -> Error {
    EINVAL
}

impl MldFile {
    /// This file as a lock owner.
    fn own(&self) -> Owner {
        Owner::File(self.id.into())
    }

    fn owner(&self, target: Target) -> Owner {
        match target {
            Target::ThisFile => self.own(),
            Target::Detached => Owner::Detached,
        }
    }

    fn ioctl(&self, cmd: u32, arg: usize) -> Result {
        let max = self.service.max_lease_ms();
        match cmd {
            nr::SET_MIGRATION_FLAG => {
                let flag = request::check_flag(read_arg::<i32>(arg)?).map_err(invalid)?;
                self.set_flag(flag)
            }
            nr::MLD_IOC_LOCK => {
                let req = request::check_lock(&read_arg::<MldLock>(arg)?, max).map_err(invalid)?;
                self.lock(&req)
            }
            nr::MLD_IOC_UNLOCK => {
                let target = request::check_unlock(read_arg::<u32>(arg)?).map_err(invalid)?;
                self.unlock(target)
            }
            nr::MLD_IOC_RENEW => {
                let r = request::check_renew(&read_arg::<MldRenew>(arg)?, max).map_err(invalid)?;
                self.renew(self.owner(r.target), r.lease_ms)
            }
            nr::MLD_IOC_HINTS => self.hints(&read_arg::<MldHints>(arg)?),
            nr::MLD_IOC_STATUS => {
                let status = self.service.status(self.own(), &mut self.seen.lock());
                UserSlice::new(arg, size_of::<MldStatus>())
                    .writer()
                    .write(&status)
            }
            _ => Err(ENOTTY),
        }
    }

    /// Notes a lock or renewal that succeeded (`local`: decided in the
    /// guest alone).
    fn took(&self, owner: Owner, local: bool) {
        let mut seen = self.seen.lock();
        seen.local = local;
        if owner == self.own() {
            seen.expect_hold = true;
        }
    }

    /// Notes that this file ends its own hold.
    fn letting_go(&self) {
        self.seen.lock().expect_hold = false;
    }

    fn lock(&self, req: &LockRequest) -> Result {
        let owner = self.owner(req.target);
        let _ops = self.ops.lock();
        let local = self.service.lock(owner, req)?;
        self.took(owner, local);
        Ok(())
    }

    /// The paper's `SET_MIGRATION_FLAG`: 0 locks (this file), 1 ends this
    /// file's hold.
    fn set_flag(&self, flag: FlagRequest) -> Result {
        let _ops = self.ops.lock();
        if flag == FlagRequest::Unlock {
            self.letting_go();
        }
        let local = self.service.set_flag(self.own(), flag)?;
        if flag == FlagRequest::Lock {
            self.took(self.own(), local);
        }
        Ok(())
    }

    fn unlock(&self, target: Target) -> Result {
        let _ops = self.ops.lock();
        if target == Target::ThisFile {
            self.letting_go();
        }
        self.service.unlock(self.owner(target))
    }

    fn renew(&self, owner: Owner, lease_ms: u32) -> Result {
        let _ops = self.ops.lock();
        let local = self.service.renew(owner, lease_ms)?;
        self.took(owner, local);
        Ok(())
    }

    /// `MLD_IOC_HINTS`: the batch's ranges are copied in and checked before
    /// any of it reaches the host.
    fn hints(&self, req: &MldHints) -> Result {
        self.service.check_privilege()?;
        if req.count > MLD_MAX_HINTS {
            return Err(EINVAL);
        }
        let len = req.count as usize * size_of::<MldHintRange>();
        let mut raw = KVec::with_capacity(len, GFP_KERNEL)?;
        let addr = usize::try_from(req.ranges).map_err(|_| EFAULT)?;
        UserSlice::new(addr, len)
            .reader()
            .read_all(&mut raw, GFP_KERNEL)?;
        self.service.hints(req, &raw)
    }
}
