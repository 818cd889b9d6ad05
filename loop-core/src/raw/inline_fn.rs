//! Closures stored inline, in a fixed number of bytes, without allocation.
//!
//! Every handler, timer and callback of the loop is an [`InlineFn`]: the closure's captured
//! state is written into [`INLINE_CAPTURE_BYTES`] bytes of storage next to one pointer to a
//! static table of two functions (call and drop), generated per closure type. That keeps
//! tables fixed-size (`[InlineFn; N]`) and the loop allocation-free.
//!
//! A closure that does not fit — more than [`INLINE_CAPTURE_BYTES`] bytes of captures, or an
//! alignment above 8 — **fails to compile** (a post-monomorphisation `const` assertion), it
//! never silently allocates. Capture a reference to a `static`, an `Rc`, or (with `alloc`) a
//! `Box` to carry more state.
//!
//! ```compile_fail
//! # use loop_core::inline_fn_fits;
//! let big = [0u8; 200];
//! inline_fn_fits(move || big.len()); // 200 bytes of captures: does not compile
//! ```
//!
//! ```
//! # use loop_core::inline_fn_fits;
//! let small = [0u8; 40];
//! inline_fn_fits(move || small.len()); // fits
//! ```
//!
//! Part of the core's unsafe storage (`raw/`; every module allowed `unsafe` is listed in
//! ARCHITECTURE.md, "Unsafe inventory"). The invariant is simple: `storage` always holds exactly one live value of the type the
//! `vtable` was made for, from `new` until `drop`.

use core::marker::PhantomData;
use core::mem::{align_of, size_of, MaybeUninit};
use core::ptr;

/// How many bytes a closure may capture to be stored by the loop (handlers, timers, callbacks).
pub const INLINE_CAPTURE_BYTES: usize = 56;

/// Storage for one closure. Eight-byte alignment covers every integer and pointer type on the
/// targets we build for (including `u64` on 32-bit ARM).
#[repr(C, align(8))]
struct Storage([MaybeUninit<u8>; INLINE_CAPTURE_BYTES]);

/// The `call` entry: the value's own table pointer (a `FnOnce` switches it to its spent
/// table *before* moving the closure out, so neither a second call nor a drop, also during
/// unwinding, touches it again; a `FnMut` leaves it alone, so its call pays no test for it),
/// its storage, and the arguments.
type CallFn<A, X, R> = unsafe fn(&mut &'static VTable<A, X, R>, *mut Storage, &mut A, X) -> R;

struct VTable<A: ?Sized + 'static, X: 'static, R: 'static> {
    call: CallFn<A, X, R>,
    drop: unsafe fn(*mut Storage),
    /// The user closure's type name (`crate::function::{{closure}}`): names it in watchdog
    /// reports at no per-value cost.
    name: fn() -> &'static str,
}

impl<A: ?Sized + 'static, X: 'static, R: 'static> VTable<A, X, R> {
    /// The table of `call` and `drop`, named after the type `N`.
    const fn of<N>(call: CallFn<A, X, R>, drop: unsafe fn(*mut Storage)) -> Self {
        VTable {
            call,
            drop,
            name: core::any::type_name::<N>,
        }
    }
}

/// Fails (at compile time, where used in a `const`) if an `F` does not fit in [`Storage`].
const fn assert_fits<F>() {
    assert!(
        size_of::<F>() <= INLINE_CAPTURE_BYTES && align_of::<F>() <= align_of::<Storage>(),
        "closure too large for ioloop's inline storage (56 bytes, align 8): capture a reference, an Rc or a Box instead"
    );
}

/// Drop the `F` in `s`.
///
/// # Safety
/// `s` points to a live `F` (for a `FnOnce`, one never called); it is dead afterwards.
unsafe fn drop_as<F>(s: *mut Storage) {
    // SAFETY: the caller guarantees `s` holds a live `F` and never uses it again.
    unsafe { ptr::drop_in_place(s.cast::<F>()) }
}

/// An inline `FnMut(&mut A, X) -> R`.
///
/// Not `Send`: the closures it holds may capture `Rc`s, and the loop that owns them is
/// single-threaded.
pub(crate) struct InlineFn<A: ?Sized + 'static, X: 'static, R: 'static> {
    vtable: &'static VTable<A, X, R>,
    storage: Storage,
    _not_send: PhantomData<*mut ()>,
}

/// The signature an `InlineFn` erases.
type Signature<A, X, R> = fn(&mut A, X) -> R;

struct Thunk<F, N, A: ?Sized, X, R>(PhantomData<(Signature<A, X, R>, F, N)>);

impl<F, N, A, X, R> Thunk<F, N, A, X, R>
where
    F: FnMut(&mut A, X) -> R,
    A: ?Sized + 'static,
    X: 'static,
    R: 'static,
{
    const FITS: () = assert_fits::<F>();

    const VTABLE: VTable<A, X, R> = VTable::of::<N>(Self::call, drop_as::<F>);

    /// # Safety
    /// `s` points to a live `F` written by `InlineFn::new`.
    unsafe fn call(_: &mut &'static VTable<A, X, R>, s: *mut Storage, a: &mut A, x: X) -> R {
        // SAFETY: the caller guarantees `s` holds a live, properly aligned `F` (FITS checked
        // size and alignment when it was written), and `&mut self` on `InlineFn::call` makes
        // this the only access.
        let f = unsafe { &mut *s.cast::<F>() };
        f(a, x)
    }
}

struct OnceThunk<F, N, A: ?Sized, X, R>(PhantomData<(Signature<A, X, R>, F, N)>);

impl<F: FnOnce(&mut A, X) -> R, N, A: ?Sized + 'static, X: 'static, R: Default + 'static>
    OnceThunk<F, N, A, X, R>
{
    const FITS: () = assert_fits::<F>();

    const VTABLE: VTable<A, X, R> = VTable::of::<N>(Self::call, drop_as::<F>);

    /// # Safety
    /// `s` points to a live `F` and `vtable` is its value's table: switched to the spent
    /// table here, before the read, so the `F` read out is never read or dropped again.
    unsafe fn call(vtable: &mut &'static VTable<A, X, R>, s: *mut Storage, a: &mut A, x: X) -> R {
        *vtable = &Spent::<N, A, X, R>::VTABLE;
        // SAFETY: the caller guarantees a live `F`; the value is marked spent (above), so
        // nothing else will use it.
        let f = unsafe { ptr::read(s.cast::<F>()) };
        f(a, x)
    }
}

/// The table of a `FnOnce` that has been called: calling returns `R::default()`, dropping
/// does nothing (the closure was moved out and consumed by the call).
struct Spent<N, A: ?Sized, X, R>(PhantomData<(Signature<A, X, R>, N)>);

impl<N, A: ?Sized + 'static, X: 'static, R: Default + 'static> Spent<N, A, X, R> {
    const VTABLE: VTable<A, X, R> = VTable::of::<N>(Self::call, Self::drop);

    unsafe fn call(_: &mut &'static VTable<A, X, R>, _: *mut Storage, _: &mut A, _: X) -> R {
        R::default()
    }

    unsafe fn drop(_: *mut Storage) {}
}

impl<A: ?Sized + 'static, X: 'static, R: 'static> InlineFn<A, X, R> {
    /// Store `f`. Fails to compile if `f` does not fit.
    #[inline]
    pub(crate) fn new<F>(f: F) -> Self
    where
        F: FnMut(&mut A, X) -> R + 'static,
    {
        Self::named::<F, F>(f)
    }

    /// Store `f`, named after the type `N` (the user's closure that `f` wraps).
    #[inline]
    pub(crate) fn named<N, F>(f: F) -> Self
    where
        F: FnMut(&mut A, X) -> R + 'static,
    {
        #[allow(clippy::let_unit_value)]
        let () = Thunk::<F, N, A, X, R>::FITS;
        // SAFETY: FITS proved `F` fits; the vtable was made for `F`.
        unsafe { Self::store(f, &Thunk::<F, N, A, X, R>::VTABLE) }
    }

    /// Write `f` into fresh storage next to `vtable`.
    ///
    /// # Safety
    /// `F` must fit the storage (size and alignment: the caller's `FITS` check) and `vtable`
    /// must have been made for `F`.
    #[inline]
    unsafe fn store<F>(f: F, vtable: &'static VTable<A, X, R>) -> Self {
        let mut storage = Storage([MaybeUninit::uninit(); INLINE_CAPTURE_BYTES]);
        // SAFETY: the caller guarantees `F` fits; the storage is fresh, so nothing is
        // overwritten.
        unsafe { ptr::write(storage.0.as_mut_ptr().cast::<F>(), f) };
        InlineFn {
            vtable,
            storage,
            _not_send: PhantomData,
        }
    }

    /// Call the closure.
    #[inline]
    pub(crate) fn call(&mut self, a: &mut A, x: X) -> R {
        let call = self.vtable.call;
        // SAFETY: the invariant of this type: `storage` holds the live closure `vtable` was
        // made for. A `FnOnce`'s entry switches `vtable` to its spent table before reading
        // the closure out (exactly once: the spent table's call reads nothing), so it stays
        // spent also if the closure panics and this `InlineFn` is dropped while unwinding.
        unsafe { call(&mut self.vtable, &mut self.storage, a, x) }
    }

    /// The stored closure's type name (of the user closure for wrapped ones).
    #[inline]
    pub(crate) fn name(&self) -> &'static str {
        (self.vtable.name)()
    }

    /// The function that returns [`name`](Self::name): one load, for a caller that needs
    /// the name only on a rare path after the value is gone (`EventLoop::release`).
    #[inline]
    pub(crate) fn namer(&self) -> fn() -> &'static str {
        self.vtable.name
    }
}

impl<A: ?Sized + 'static, X: 'static, R: Default + 'static> InlineFn<A, X, R> {
    /// Store a `FnOnce` in the full [`INLINE_CAPTURE_BYTES`] (no flag is added to it): the
    /// first call runs it, later calls return `R::default()`. Fails to compile if `f` does not
    /// fit.
    #[cfg(test)]
    pub(crate) fn once<F: FnOnce(&mut A, X) -> R + 'static>(f: F) -> Self {
        Self::once_named::<F, F>(f)
    }

    /// [`once`](Self::once), named after the type `N`.
    #[inline]
    pub(crate) fn once_named<N, F: FnOnce(&mut A, X) -> R + 'static>(f: F) -> Self {
        #[allow(clippy::let_unit_value)]
        let () = OnceThunk::<F, N, A, X, R>::FITS;
        // SAFETY: FITS proved `F` fits; the vtable was made for `F`.
        unsafe { Self::store(f, &OnceThunk::<F, N, A, X, R>::VTABLE) }
    }

    /// [`once_named`](Self::once_named) built straight into `slot`: only the table pointer
    /// and the closure's own bytes are written (the rest of the storage stays as it was, as
    /// `MaybeUninit` bytes may), with no copy of the value through the stack. `slot` is
    /// initialised afterwards; whatever it held before is overwritten, not dropped.
    #[inline(always)]
    pub(crate) fn write_once_named<N, F: FnOnce(&mut A, X) -> R + 'static>(
        slot: &mut MaybeUninit<Self>,
        f: F,
    ) {
        #[allow(clippy::let_unit_value)]
        let () = OnceThunk::<F, N, A, X, R>::FITS;
        let p = slot.as_mut_ptr();
        // SAFETY: `p` is valid for writes and aligned (it comes from `&mut MaybeUninit<Self>`);
        // `addr_of_mut!` takes the fields' addresses without reading or referencing the
        // uninitialised value. FITS proved that `F` fits the storage with the storage's
        // alignment, and the table was made for `F`. Afterwards every field is initialised:
        // `vtable` written, `storage` is `MaybeUninit` bytes (valid whatever they hold) now
        // holding the live `F`, `_not_send` zero-sized: the invariant of this type holds.
        unsafe {
            ptr::addr_of_mut!((*p).vtable).write(&OnceThunk::<F, N, A, X, R>::VTABLE);
            ptr::addr_of_mut!((*p).storage).cast::<F>().write(f);
        }
    }
}

/// A value that builds a `V` straight into its place.
///
/// # Safety
/// [`init`](Self::init) initialises the slot it is handed, and does not unwind: a table
/// that hands it a slot counts the slot initialised once it returns.
pub(crate) unsafe trait InitInPlace<V> {
    /// Write the value into `slot` (whatever `slot` held is overwritten, not dropped).
    fn init(self, slot: &mut MaybeUninit<V>);
}

/// A `FnOnce` to be stored as an [`InlineFn`] named after `N`, built in place
/// ([`InlineFn::write_once_named`]).
pub(crate) struct OnceNamed<N, F>(F, PhantomData<fn() -> N>);

impl<N, F> OnceNamed<N, F> {
    /// Wrap `f`.
    #[inline(always)]
    pub(crate) fn new(f: F) -> Self {
        OnceNamed(f, PhantomData)
    }
}

// SAFETY: `write_once_named` initialises the slot with two plain writes (no call that could
// unwind).
unsafe impl<N, F, A, X, R> InitInPlace<InlineFn<A, X, R>> for OnceNamed<N, F>
where
    F: FnOnce(&mut A, X) -> R + 'static,
    A: ?Sized + 'static,
    X: 'static,
    R: Default + 'static,
{
    #[inline(always)]
    fn init(self, slot: &mut MaybeUninit<InlineFn<A, X, R>>) {
        InlineFn::write_once_named::<N, F>(slot, self.0);
    }
}

impl<A: ?Sized + 'static, X: 'static, R: 'static> Drop for InlineFn<A, X, R> {
    fn drop(&mut self) {
        // SAFETY: the invariant of this type; after this the value is gone, so the closure is
        // never used again.
        unsafe { (self.vtable.drop)(&mut self.storage) }
    }
}

/// Compile-time check that a closure fits the loop's inline storage; a no-op at run time.
/// (Exists so the documentation can show the compile error.)
#[doc(hidden)]
pub fn inline_fn_fits<F: FnMut() -> R + 'static, R: 'static>(mut f: F) {
    let _ = InlineFn::<(), (), R>::new(move |_: &mut (), ()| f());
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    #[test]
    fn calls_reach_the_closure_and_keep_its_state() {
        let mut counter = 0u32;
        let mut f = InlineFn::<u32, u32, u32>::new(move |a: &mut u32, x| {
            counter += x;
            *a += 1;
            counter
        });
        let mut a = 0;
        assert_eq!(f.call(&mut a, 5), 5);
        assert_eq!(f.call(&mut a, 7), 12);
        assert_eq!(a, 2);
    }

    #[test]
    fn captured_state_is_dropped_exactly_once_even_after_moves() {
        let rc = Rc::new(());
        let held = rc.clone();
        let f = InlineFn::<(), (), ()>::new(move |_: &mut (), ()| {
            let _ = &held;
        });
        assert_eq!(Rc::strong_count(&rc), 2);
        let mut moved = [None, None];
        moved[1] = Some(f);
        let f = moved[1].take().unwrap();
        assert_eq!(Rc::strong_count(&rc), 2);
        drop(f);
        assert_eq!(Rc::strong_count(&rc), 1);
    }

    #[test]
    fn once_runs_once_then_returns_default_and_drops_its_captures_when_run() {
        let rc = Rc::new(Cell::new(0));
        let held = rc.clone();
        let mut f = InlineFn::<(), (), u8>::once(move |_: &mut (), ()| {
            held.set(held.get() + 1);
            9
        });
        assert_eq!(f.call(&mut (), ()), 9);
        // The closure was consumed by the first call: its Rc is already released.
        assert_eq!(Rc::strong_count(&rc), 1);
        assert_eq!(f.call(&mut (), ()), 0);
        assert_eq!(rc.get(), 1);
    }

    #[test]
    fn once_built_in_place_runs_once_and_drops_its_captures_once() {
        let rc = Rc::new(Cell::new(0));
        let held = rc.clone();
        let mut slot = MaybeUninit::<InlineFn<(), (), u8>>::uninit();
        InlineFn::write_once_named::<(), _>(&mut slot, move |_: &mut (), ()| {
            held.set(held.get() + 1);
            7
        });
        // SAFETY: `write_once_named` initialised the slot.
        let mut f = unsafe { slot.assume_init() };
        assert_eq!(Rc::strong_count(&rc), 2);
        assert_eq!(f.call(&mut (), ()), 7);
        assert_eq!(Rc::strong_count(&rc), 1);
        assert_eq!(f.call(&mut (), ()), 0);
        drop(f);
        assert_eq!((rc.get(), Rc::strong_count(&rc)), (1, 1));
        // Unrun: dropping it drops the captures, once.
        let held = rc.clone();
        let mut slot = MaybeUninit::<InlineFn<(), (), u8>>::uninit();
        InlineFn::write_once_named::<(), _>(&mut slot, move |_: &mut (), ()| {
            let _ = &held;
            1
        });
        // SAFETY: as above.
        drop(unsafe { slot.assume_init() });
        assert_eq!(Rc::strong_count(&rc), 1);
    }

    #[test]
    fn largest_once_built_in_place_round_trips_its_bytes() {
        let data: [u8; INLINE_CAPTURE_BYTES] = core::array::from_fn(|i| i as u8 + 1);
        let mut slot = MaybeUninit::<InlineFn<(), usize, u8>>::uninit();
        InlineFn::write_once_named::<(), _>(&mut slot, move |_: &mut (), i| {
            data[0].wrapping_add(data[i])
        });
        // SAFETY: `write_once_named` initialised the slot.
        let mut f = unsafe { slot.assume_init() };
        assert_eq!(f.call(&mut (), INLINE_CAPTURE_BYTES - 1), 1 + 56);
    }

    #[test]
    fn largest_closure_that_fits_round_trips_its_bytes() {
        let data = [0xA5u8; INLINE_CAPTURE_BYTES];
        let mut f = InlineFn::<(), usize, u8>::new(move |_: &mut (), i| data[i]);
        for i in [0, INLINE_CAPTURE_BYTES / 2, INLINE_CAPTURE_BYTES - 1] {
            assert_eq!(f.call(&mut (), i), 0xA5);
        }
    }

    #[test]
    fn once_takes_the_full_capture_size() {
        let data = [7u8; INLINE_CAPTURE_BYTES];
        let mut f =
            InlineFn::<(), (), u8>::once(move |_: &mut (), ()| data[INLINE_CAPTURE_BYTES - 1]);
        assert_eq!(f.call(&mut (), ()), 7);
    }

    #[test]
    fn unused_once_drops_its_captures() {
        let rc = Rc::new(());
        let held = rc.clone();
        let f = InlineFn::<(), (), ()>::once(move |_: &mut (), ()| drop(held));
        assert_eq!(Rc::strong_count(&rc), 2);
        drop(f);
        assert_eq!(Rc::strong_count(&rc), 1);
    }

    #[test]
    fn panicking_once_is_not_dropped_twice() {
        let rc = Rc::new(());
        let held = rc.clone();
        let mut f = InlineFn::<(), (), ()>::once(move |_: &mut (), ()| {
            let _keep = held;
            panic!("boom");
        });
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f.call(&mut (), ())));
        assert!(r.is_err());
        drop(f);
        assert_eq!(Rc::strong_count(&rc), 1, "captures released exactly once");
    }

    #[test]
    fn name_is_the_user_closures_type_and_survives_the_call() {
        fn make() -> impl FnOnce(&mut (), ()) {
            |_: &mut (), ()| {}
        }
        let mut f = InlineFn::<(), (), ()>::once(make());
        assert!(f.name().contains("make"), "{}", f.name());
        f.call(&mut (), ());
        assert!(f.name().contains("make"), "{}", f.name());
        let g = InlineFn::<(), (), ()>::named::<u8, _>(|_: &mut (), ()| {});
        assert_eq!(g.name(), "u8");
    }

    #[test]
    fn zero_sized_closures_work() {
        let mut f = InlineFn::<u8, (), ()>::new(|a: &mut u8, ()| *a = 3);
        let mut a = 0;
        f.call(&mut a, ());
        assert_eq!(a, 3);
    }
}
