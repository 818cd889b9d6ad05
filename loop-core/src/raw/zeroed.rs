//! Construction of tables whose empty state is all zero bytes.
//!
//! The loop's tables are fixed arrays sized by const generics; a loop for 10^6 timers holds
//! tens of megabytes. Building such a value on the stack and moving it into place would
//! overflow the stack (debug builds do not elide the copy), so every table is designed so that
//! **all-zero bytes are its valid empty state** (counters at 0, "none" encoded as 0, unused
//! entries `MaybeUninit`). A zeroed allocation (`Box::new_zeroed`, a `static` in `.bss`) is then
//! a ready, empty table, and making one costs a `memset` or nothing.

use core::mem::MaybeUninit;

/// Types whose all-zero bit pattern is a valid (empty) value.
///
/// # Safety
/// Implementors guarantee that a value whose every byte is zero is valid and that dropping it
/// is sound (it owns nothing).
pub(crate) unsafe trait ZeroInit {}

/// A zeroed (empty) value, built by value: for small tables in tests.
#[cfg(test)]
#[inline]
pub(crate) fn zeroed<T: ZeroInit>() -> T {
    // SAFETY: `T: ZeroInit` promises all-zero bytes are a valid value of `T`.
    unsafe { MaybeUninit::<T>::zeroed().assume_init() }
}

/// Zero `slot` in place and return it initialised: no copy of `T` passes through the stack.
#[inline]
pub(crate) fn zero_in_place<T: ZeroInit>(slot: &mut MaybeUninit<T>) -> &mut T {
    // SAFETY: `slot` is valid for writes of one `T`; after zeroing, `T: ZeroInit` makes the
    // bytes a valid value, so `assume_init_mut` is sound.
    unsafe {
        slot.as_mut_ptr().write_bytes(0, 1);
        slot.assume_init_mut()
    }
}

macro_rules! zero_init_plain {
    ($($t:ty),*) => {$(
        // SAFETY: integers are valid as zero and own nothing.
        unsafe impl ZeroInit for $t {}
    )*};
}
zero_init_plain!(u8, u16, u32, u64, usize, i32);

// SAFETY: an array of zero-valid elements is zero-valid.
unsafe impl<T: ZeroInit, const N: usize> ZeroInit for [T; N] {}
// SAFETY: `MaybeUninit` accepts any bytes and its drop does nothing.
unsafe impl<T> ZeroInit for MaybeUninit<T> {}
