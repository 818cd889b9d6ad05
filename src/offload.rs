//! Blocking work off the loop, on a thread **you** create (Tornado's `run_in_executor`, with
//! the executor made explicit): file I/O, DNS, a library without async.
//!
//! A blocking call made in a task stalls the whole loop (every timer, handler and task waits
//! for it; the watchdog reports it). [`worker`] makes a bounded job queue: the [`Worker`]
//! end (cheap to clone) submits closures from tasks and gives back a future for the result,
//! the [`WorkerThread`] end runs them on whatever thread you move it to. The loop never
//! starts a thread of its own; when you want two blocking calls at once, start two threads
//! on one queue (`WorkerThread` is `Clone`) or make two queues.
//!
//! Each job is boxed (one allocation per call, on the submitting side): offloaded calls take
//! milliseconds, where an allocation is noise, and the loop's own tables stay allocation-free.
//! The result travels back through a shared slot and wakes the awaiting task through its
//! waker (across threads, that is the loop's [`Remote`](crate::Remote) notifier).
//!
//! ```
//! use std::time::Duration;
//! use ioloop::offload::worker;
//! use ioloop::{EventLoop, Executor, Remote};
//!
//! static REMOTE: Remote<EventLoop, 16> = Remote::new();
//! static EXEC: Executor<4> = Executor::new();
//!
//! let (jobs, thread) = worker(8);
//! let runner = std::thread::spawn(move || thread.run()); // your thread, your choice
//! let mut lp: EventLoop = EventLoop::new()?;
//! lp.attach_remote(&REMOTE)?;
//! lp.attach_executor(&EXEC)?;
//! // Submitting needs no loop; awaiting does (here `run_sync`, usually a task).
//! let pending = jobs
//!     .submit(|| std::fs::read("/proc/self/stat").map(|b| b.len()))
//!     .map_err(|r| r.error)?;
//! let len = lp.run_sync(pending, Some(Duration::from_secs(10)))?;
//! assert!(matches!(len, Ok(Ok(n)) if n > 0));
//! drop(jobs); // the thread's `run` returns once every `Worker` is gone
//! runner.join().unwrap();
//! # Ok::<(), ioloop::Error>(())
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use loop_core::{Error, Refused, Resource};

type Job = Box<dyn FnOnce() + Send>;

/// Why an offloaded call produced no value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OffloadError {
    /// The closure panicked on the worker thread; the message if it was a string.
    Panicked(String),
    /// The job was dropped without running: every [`WorkerThread`] was dropped (or stopped
    /// running) before it reached the job.
    WorkerGone,
}

impl fmt::Display for OffloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OffloadError::Panicked(m) => write!(f, "offloaded call panicked: {m}"),
            OffloadError::WorkerGone => f.write_str("offloaded call dropped: no worker thread"),
        }
    }
}

impl std::error::Error for OffloadError {}

/// A bounded job queue for blocking calls: the submitting end and the running end.
/// `capacity` jobs may wait at once (at least 1); more are refused with the closure handed
/// back. See the [module docs](self).
pub fn worker(capacity: usize) -> (Worker, WorkerThread) {
    let (tx, rx) = mpsc::sync_channel(capacity.max(1));
    (
        Worker { tx },
        WorkerThread {
            rx: Arc::new(Mutex::new(rx)),
        },
    )
}

/// The submitting end of a [`worker`] queue: `Clone + Send`, usable from any task (or thread).
#[derive(Clone, Debug)]
pub struct Worker {
    tx: SyncSender<Job>,
}

/// The running end of a [`worker`] queue: move it to a thread you start and call
/// [`run`](Self::run). `Clone`: several threads may serve one queue.
#[derive(Clone, Debug)]
pub struct WorkerThread {
    rx: Arc<Mutex<Receiver<Job>>>,
}

impl WorkerThread {
    /// Run jobs until every [`Worker`] is dropped and the queue is empty. A job that panics is
    /// reported to its awaiting task as [`OffloadError::Panicked`]; the thread goes on.
    pub fn run(self) {
        loop {
            // The lock is held only while waiting for the next job, not while running it.
            let job = {
                let rx = self.rx.lock().unwrap_or_else(|p| p.into_inner());
                rx.recv()
            };
            match job {
                Ok(job) => job(),
                Err(_) => return,
            }
        }
    }
}

struct Slot<T> {
    result: Option<Result<T, OffloadError>>,
    waker: Option<Waker>,
}

fn lock<T>(m: &Mutex<Slot<T>>) -> MutexGuard<'_, Slot<T>> {
    // A panic while the lock is held can only come from a `Waker::wake`, which leaves the
    // slot's data consistent: carry on with it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Completes the slot exactly once: with the result, or with `WorkerGone` if the job is
/// dropped without running (queue dropped by a stopping thread).
struct Completion<T> {
    slot: Option<Arc<Mutex<Slot<T>>>>,
}

impl<T> Completion<T> {
    fn complete(&mut self, result: Result<T, OffloadError>) {
        let Some(slot) = self.slot.take() else {
            return;
        };
        let waker = {
            let mut s = lock(&slot);
            s.result = Some(result);
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Drop for Completion<T> {
    fn drop(&mut self) {
        self.complete(Err(OffloadError::WorkerGone));
    }
}

impl Worker {
    /// Queue `f` for the worker thread and return a future for its result.
    ///
    /// The call runs even if the future is dropped first (a blocking call cannot be cancelled
    /// half-way); its result is then dropped on the worker thread.
    ///
    /// # Errors
    /// `f` comes back inside [`Refused`] with [`Error::Full`] (`Resource::Callbacks`) when
    /// `capacity` jobs are already waiting, or [`Error::Closed`] when every
    /// [`WorkerThread`] was dropped.
    pub fn submit<T, F>(&self, f: F) -> Result<Offloaded<T>, Refused<F>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let slot = Arc::new(Mutex::new(Slot {
            result: None,
            waker: None,
        }));
        // The closure travels inside the job and comes back out on refusal, so it is
        // held in a shared cell the job takes it from.
        let cell = Arc::new(Mutex::new(Some(f)));
        let job_cell = Arc::clone(&cell);
        let mut completion = Completion {
            slot: Some(Arc::clone(&slot)),
        };
        let job: Job = Box::new(move || {
            let f = job_cell.lock().unwrap_or_else(|p| p.into_inner()).take();
            let Some(f) = f else { return };
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
                .map_err(|p| OffloadError::Panicked(panic_message(p.as_ref())));
            completion.complete(result);
        });
        match self.tx.try_send(job) {
            Ok(()) => Ok(Offloaded { slot }),
            Err(e) => {
                let error = match e {
                    TrySendError::Full(_) => Error::Full {
                        what: Resource::Callbacks,
                    },
                    TrySendError::Disconnected(_) => Error::Closed,
                };
                // The job (and its completion) is dropped here; nobody awaits `slot`.
                drop(e);
                let f = cell.lock().unwrap_or_else(|p| p.into_inner()).take();
                match f {
                    Some(value) => Err(Refused { error, value }),
                    // A refused job never ran, so the closure is still there; were it not, the
                    // dropped job already completed `slot` with `WorkerGone`.
                    None => Ok(Offloaded { slot }),
                }
            }
        }
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_string()
    }
}

/// The result of an offloaded call, as a future: made by [`Worker::submit`].
#[must_use = "futures do nothing unless polled"]
pub struct Offloaded<T> {
    slot: Arc<Mutex<Slot<T>>>,
}

impl<T> fmt::Debug for Offloaded<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Offloaded").finish_non_exhaustive()
    }
}

impl<T> Future for Offloaded<T> {
    type Output = Result<T, OffloadError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut s = lock(&self.slot);
        if let Some(r) = s.result.take() {
            return Poll::Ready(r);
        }
        if !s.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            s.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}
