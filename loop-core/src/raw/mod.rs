//! The unsafe storage the rest of the crate is built on.
//!
//! **Warning: this is the crate's unsafe core.** Every module here stores values in raw
//! memory whose type the compiler no longer tracks: closures in fixed inline buffers
//! (`inline_fn`), zero-initialised tables built in place (`zeroed`), the slot storage of the
//! handler and timer tables (`slab`), and the pool of leaked executors and remotes that loops
//! own (`pool`). Their invariants are stated at the top of each file and
//! at every `unsafe` block; ARCHITECTURE.md lists them. Change them only with Miri
//! (`cargo +nightly miri test -p loop-core --features sim`) at hand.

pub(crate) mod inline_fn;
#[cfg(feature = "alloc")]
pub(crate) mod pool;
pub(crate) mod slab;
pub(crate) mod zeroed;
