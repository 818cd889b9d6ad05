//! The loop's fixed-capacity tables: the handler table and its fd index, the timer heap and
//! the callback queue. Safe code over the storage in [`crate::raw`].

#[allow(unsafe_code)] // ring of `MaybeUninit` closures; ZeroInit
pub(crate) mod callback_queue;
#[allow(unsafe_code)] // ZeroInit
pub(crate) mod fd_index;
#[allow(unsafe_code)] // ZeroInit
pub(crate) mod handler_table;
#[allow(unsafe_code)] // `MaybeUninit` timer closures indexed by the heap; ZeroInit
pub(crate) mod timer_heap;
