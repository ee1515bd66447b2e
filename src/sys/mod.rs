//! What safe Rust cannot say: the file's memory mapping and the CPU's CRC
//! instruction, and the other questions put to the kernel about a region's
//! file. This is the only module with `unsafe` code; every block says why
//! it holds in a `// SAFETY:` comment, and everything it exports is safe to
//! call.
#![allow(unsafe_code)]

pub(crate) mod checksum;
pub(crate) mod fault;
pub(crate) mod file;
pub(crate) mod mapping;

/// Asks the CPU to bring `value`'s first cache line in ahead of a read (a
/// hint: nothing happens on other targets than x86-64).
#[inline]
pub(crate) fn prefetch<T>(value: &T) {
    prefetch_address(std::ptr::from_ref(value).cast());
}

/// Asks the CPU to bring the cache line holding `address` in ahead of a
/// read. Any address will do: a prefetch is a hint that never faults and
/// neither reads nor writes memory in the language's sense, so no
/// reference (which a writer's racing stores would make unsound) is made.
/// Nothing happens on other targets than x86-64.
#[inline]
pub(crate) fn prefetch_address(address: *const u8) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    // SAFETY: a prefetch only hints the cache: it never faults, whatever
    // the address, and changes no memory.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(address.cast::<i8>());
    }
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    let _ = address;
}
