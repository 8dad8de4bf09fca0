//! The daemon's async runtime and allocator settings.
//!
//! One thread runs every task (tokio's current-thread scheduler): the
//! daemon's work is one ops lock and two children, its mutations are
//! serialized by that lock anyway, and a call is a few microseconds of
//! CPU. A second worker bought no throughput on the socket, only
//! cross-thread wakeups (each spawned POST task woke the idle worker, which
//! found nothing to steal) and a thread's worth of memory. File work that
//! fsyncs or may block (the triple's writes, child spawns and records, log
//! rotation and tails, the install's extraction) runs on tokio's blocking
//! pool, bounded here so a burst of it cannot grow the daemon by a thread
//! stack each.

use std::io;
use std::time::Duration;

/// Most threads of the blocking pool at once (they exit after
/// [`BLOCKING_KEEP_ALIVE`] idle). Mutations hold the ops lock, so at most a
/// handful of blocking jobs are ever in flight: a reconcile's writes, a
/// child's spawn or record, a `logs` tail or two, an extraction.
pub const MAX_BLOCKING_THREADS: usize = 4;

/// How long an idle blocking-pool thread lingers before it exits.
const BLOCKING_KEEP_ALIVE: Duration = Duration::from_secs(10);

/// The daemon's runtime: current-thread scheduler, IO and timers on, a
/// small blocking pool. Also caps glibc's malloc arenas (see
/// [`limit_malloc_arenas`]); call it before any other thread exists.
///
/// # Errors
/// The runtime could not be created (no epoll or eventfd available).
pub fn build() -> io::Result<tokio::runtime::Runtime> {
    limit_malloc_arenas();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .thread_keep_alive(BLOCKING_KEEP_ALIVE)
        .build()
}

/// glibc gives every thread that allocates an arena of its own (up to
/// eight per core), each keeping freed memory for reuse: with the runtime
/// thread and a few blocking threads that is megabytes of RSS for a daemon
/// whose allocations are small and rarely contended. Two arenas: the
/// runtime thread's and one shared by the blocking pool. `MALLOC_ARENA_MAX`
/// in the environment, when set, wins (glibc reads it at the first malloc;
/// this call would override it, so it is skipped).
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a malloc tunable; called before the
        // runtime starts any thread.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}
