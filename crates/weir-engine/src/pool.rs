//! The worker pool every rule's operator chains run on: a fixed set of threads sized to the
//! machine and shared by every dataflow of the process (as Flink's task slots or timely's
//! workers), so a rule costs tasks and state, not threads. Chains are tasks that wait on their
//! bounded channels without holding a thread; a keyed rule's partitions are tasks too, so its
//! keys spread over the pool. A node runs its rules' feeds and sinks here as well (with timers
//! and I/O enabled), so a batch never waits for a thread of another runtime to wake.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use tokio::runtime::{Builder, Handle, Runtime};
use tokio::task::JoinHandle;

/// Where a dataflow's tasks run. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Pool {
    handle: Handle,
}

impl Pool {
    /// The process's pool: one thread per core, named `weir-work-N`, started on first use.
    pub fn shared() -> Pool {
        static SHARED: OnceLock<Runtime> = OnceLock::new();
        let runtime = SHARED.get_or_init(|| {
            let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
            let next = AtomicUsize::new(0);
            Builder::new_multi_thread()
                .worker_threads(threads)
                .enable_all()
                .thread_name_fn(move || {
                    format!("weir-work-{}", next.fetch_add(1, Ordering::Relaxed))
                })
                .build()
                .expect("the worker pool's threads start")
        });
        Pool {
            handle: runtime.handle().clone(),
        }
    }

    /// Runs `task` on the pool.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.handle.spawn(task)
    }
}

/// Waits for `f` on a thread outside the pool (a feeder or reader of a dataflow). Never call it
/// from a task: it holds the thread until `f` is done. Unconstrained, because a thread inside
/// some runtime's `block_on` has a task budget that nothing would refill while this one waits.
pub(crate) fn block_on<F: Future>(f: F) -> F::Output {
    futures::executor::block_on(tokio::task::unconstrained(f))
}
