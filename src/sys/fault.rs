//! Making system calls fail on purpose, for the tests of error paths.
//!
//! Each fallible call the region makes on its file goes through [`check`]
//! first. In a test build, a test arms a failure for one kind of call on
//! its own thread (`fail_after`): the call made after that many more of
//! its kind fails with the error given, without reaching the kernel. In
//! other builds [`check`] is an empty inline function.

use std::io;

/// The system calls a test can make fail.
#[cfg_attr(not(test), allow(dead_code))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Call {
    /// `msync` and `fsync` in `Mapping::sync`.
    Sync,
    /// `fallocate` in `Mapping::grow`.
    Fallocate,
    /// `pwrite` in `Mapping::write_zeros` and `Mapping::write_bytes`.
    Pwrite,
    /// `fallocate(PUNCH_HOLE)` in `Mapping::punch_hole`.
    Punch,
    /// `sync_file_range` in `Mapping::write_back`.
    WriteBack,
    /// Reading `/proc/sys/kernel/random/boot_id` in `file::boot_id`.
    BootId,
    /// The waiting `fcntl` of `ReadersLock::hold_shared`.
    ReadersLock,
}

#[cfg(test)]
thread_local! {
    /// Armed failures: the call, the calls of its kind to let through
    /// first, and the error to return.
    static ARMED: std::cell::RefCell<Vec<(Call, u32, i32)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Fails the call of kind `call` made after `skip` more of its kind on this
/// thread with the OS error `errno` (once).
#[cfg(test)]
pub(crate) fn fail_after(call: Call, skip: u32, errno: i32) {
    ARMED.with(|armed| armed.borrow_mut().push((call, skip, errno)));
}

/// Disarms every failure armed on this thread.
#[cfg(test)]
pub(crate) fn disarm() {
    ARMED.with(|armed| armed.borrow_mut().clear());
}

/// Whether a failure of kind `call` is still armed on this thread (it has
/// not fired yet).
#[cfg(test)]
pub(crate) fn armed(call: Call) -> bool {
    ARMED.with(|armed| armed.borrow().iter().any(|&(c, _, _)| c == call))
}

/// How many more calls of kind `call` the failure armed for it lets
/// through, if one is armed: a test arms one far ahead and reads this to
/// count the calls made.
#[cfg(test)]
pub(crate) fn skips_left(call: Call) -> Option<u32> {
    ARMED.with(|armed| {
        armed
            .borrow()
            .iter()
            .find(|&&(c, _, _)| c == call)
            .map(|&(_, skip, _)| skip)
    })
}

/// Before a system call of kind `call`: an armed failure, if its turn.
#[cfg(test)]
pub(crate) fn check(call: Call) -> io::Result<()> {
    ARMED.with(|armed| {
        let mut armed = armed.borrow_mut();
        let Some(at) = armed.iter().position(|&(c, _, _)| c == call) else {
            return Ok(());
        };
        if armed[at].1 > 0 {
            armed[at].1 -= 1;
            return Ok(());
        }
        let (_, _, errno) = armed.remove(at);
        Err(io::Error::from_raw_os_error(errno))
    })
}

/// Before a system call of kind `call`: nothing outside tests.
#[cfg(not(test))]
#[inline(always)]
pub(crate) fn check(_call: Call) -> io::Result<()> {
    Ok(())
}
