//! Scraping threads give way to the serving threads.
//!
//! Scraping and serving run on separate runtimes (see `server::scraping_runtime`), so the
//! kernel shares the CPUs between their threads. During a tick a scraping thread stays busy for
//! milliseconds at a time (TLS, decoding, storing page after page), and a serving thread woken
//! by an HPA request then waits in the run queue until the scraping thread's time slice ends:
//! measured with `perf sched timehist` at 5,000 nodes with metrics-bridge on one core, serving
//! threads waited up to 4-13 ms to run during a tick's burst, which is the end-to-end tail
//! over 1 ms that the server's own histogram (which starts once the thread runs) never sees.
//!
//! So each scraping thread counts the CPU time its scrape tasks' and kubelet connections' polls
//! take and, once it has spent [`QUANTUM`] since it last gave way, calls `sched_yield` between two polls: a woken
//! serving thread runs within about a quantum instead of a slice, and a thread with nothing
//! waiting behind it returns at once. Fairness is unchanged (no priorities): a busy API cannot
//! starve scraping, nor scraping the API; only the order of waiting changes.

use std::cell::Cell;
use std::future::Future;
use std::pin::pin;
use std::time::{Duration, Instant};

/// Work a scraping thread does before it gives way: a few kubelet pages' worth, a fraction of
/// the kernel's default time slice (1.4 ms on the 2-core test machine, by `sched_getattr`), so an API request waits about this long behind it.
pub const QUANTUM: Duration = Duration::from_micros(200);

/// A thread's work since it last gave way.
#[derive(Debug, Default)]
struct Spent {
    since_yield: Cell<Duration>,
}

impl Spent {
    /// Adds one poll's time; true when the thread is due to give way (and the count restarts).
    fn add(&self, poll: Duration, quantum: Duration) -> bool {
        let total = self.since_yield.get() + poll;
        if total >= quantum {
            self.since_yield.set(Duration::ZERO);
            true
        } else {
            self.since_yield.set(total);
            false
        }
    }
}

thread_local! {
    static SPENT: Spent = Spent::default();
}

/// Runs `work`, giving way to other threads after every [`QUANTUM`] of polling on this thread.
pub async fn courteous<F: Future>(work: F) -> F::Output {
    let mut work = pin!(work);
    std::future::poll_fn(|cx| {
        let started = Instant::now();
        let result = work.as_mut().poll(cx);
        if SPENT.with(|s| s.add(started.elapsed(), QUANTUM)) {
            std::thread::yield_now();
        }
        result
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::task::Poll;

    use super::*;

    #[test]
    fn gives_way_once_a_quantum_is_spent_and_counts_again_from_zero() {
        let spent = Spent::default();
        let q = Duration::from_micros(200);
        let us = Duration::from_micros;
        assert!(!spent.add(us(150), q));
        assert!(spent.add(us(60), q), "150 + 60 µs reaches the quantum");
        assert!(!spent.add(us(199), q), "the count restarted at zero");
        assert!(spent.add(us(1), q));
        assert!(spent.add(us(5_000), q), "one long poll is due at once");
        assert!(!spent.add(Duration::ZERO, q));
    }

    #[tokio::test]
    async fn returns_the_work_s_output_through_pending_polls() {
        let mut polls = 0;
        let out = courteous(std::future::poll_fn(|cx| {
            polls += 1;
            if polls < 3 {
                cx.waker().wake_by_ref();
                Poll::Pending
            } else {
                Poll::Ready(42)
            }
        }))
        .await;
        assert_eq!((out, polls), (42, 3));
    }
}
