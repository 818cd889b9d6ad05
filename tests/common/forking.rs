//! Real `fork`s for the harness-less fork tests (`tests/fork.rs`, `tests/edges_fork.rs`): the
//! process has one thread, the child runs the test's code and `_exit`s with a status the
//! parent checks.

/// `fork()`: 0 in the child, the child's pid in the parent.
pub fn fork() -> libc::pid_t {
    // SAFETY: the calling test binary has one thread (no harness), so the child inherits no
    // lock held by another thread; it runs the test's code and `_exit`s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    pid
}

/// End the child without running destructors of what it shares with the parent.
pub fn exit_child(code: i32) -> ! {
    // SAFETY: `_exit` never returns and runs no destructors or atexit handlers.
    unsafe { libc::_exit(code) }
}

/// The child's exit status (0 = its checks passed).
pub fn wait_child(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    // SAFETY: waits for the child forked by this process; `status` is a valid out pointer.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid);
    assert!(libc::WIFEXITED(status), "the child died: status {status}");
    libc::WEXITSTATUS(status)
}
