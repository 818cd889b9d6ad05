//! The loop's fixed-capacity tables: the handler table and its fd index, the timer heap and
//! the callback queue. Safe code over the storage in [`crate::raw`].

pub(crate) mod callback_queue;
pub(crate) mod fd_index;
pub(crate) mod handler_table;
pub(crate) mod timer_heap;
