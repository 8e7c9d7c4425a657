//! CPU-heavy request work (decoding a body, editing the document, validating and rendering a
//! config, diffing) runs on tokio's blocking pool, at most [`HEAVY_CONCURRENCY`] at a time.
//!
//! The operator's runtime is single-threaded (the reconcile loop, DNS gates, `/status` and the
//! API share one thread, see `bin/kres-operator.rs`): work measured in milliseconds to seconds
//! on a 4 MiB document must not run there, or one misbehaving client stalls rollouts and every
//! other request. The limit is process-wide, so N clients cannot multiply memory: a request
//! holds its permit while its body is buffered (up to the 4 MiB body limit) and while its work
//! runs; requests beyond the limit wait (their bodies stay in the kernel's socket buffers),
//! within their request timeout.

use tokio::sync::{Semaphore, SemaphorePermit};

/// Heavy request work items running at once (one per core of a small host; more only queue
/// for the same CPUs and multiply memory).
pub const HEAVY_CONCURRENCY: usize = 2;

static PERMITS: Semaphore = Semaphore::const_new(HEAVY_CONCURRENCY);

/// A right to do heavy work; released when dropped.
#[derive(Debug)]
pub struct Permit {
    _held: SemaphorePermit<'static>,
}

/// The heavy work panicked (a bug); the request fails, the operator goes on.
#[derive(Debug, thiserror::Error)]
#[error("internal error: request work failed: {0}")]
pub struct WorkFailed(String);

/// Wait for a permit.
pub async fn permit() -> Permit {
    // The semaphore is static and never closed.
    loop {
        if let Ok(p) = PERMITS.acquire().await {
            return Permit { _held: p };
        }
    }
}

/// Run `work` on the blocking pool while holding `permit`. The permit goes with the work: if the
/// caller stops waiting (client gone, timeout), it is released when the work ends, not before.
pub async fn run_with<T, F>(permit: Permit, work: F) -> Result<T, WorkFailed>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        work()
    })
    .await
    .map_err(|e| WorkFailed(e.to_string()))
}

/// [`run_with`] a fresh permit.
pub async fn run<T, F>(work: F) -> Result<T, WorkFailed>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    run_with(permit().await, work).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "current_thread")]
    async fn work_runs_off_the_runtime_thread_and_is_bounded() {
        let runtime_thread = std::thread::current().id();
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..6)
            .map(|_| {
                let (running, peak) = (running.clone(), peak.clone());
                tokio::spawn(run(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    running.fetch_sub(1, Ordering::SeqCst);
                    std::thread::current().id()
                }))
            })
            .collect();
        // The runtime thread stays free meanwhile: a timer on it fires while the work runs.
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        assert!(running.load(Ordering::SeqCst) > 0);
        for t in tasks {
            let worker = t.await.unwrap().unwrap();
            assert_ne!(worker, runtime_thread);
        }
        // Other tests in this process may hold permits too: at most the limit, at least one.
        let peak = peak.load(Ordering::SeqCst);
        assert!((1..=HEAVY_CONCURRENCY).contains(&peak), "{peak}");
    }
}
