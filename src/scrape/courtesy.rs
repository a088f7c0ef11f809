//! Scraping threads give way to the serving threads' short work.
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
//! take and, once it has spent [`QUANTUM`] since it last gave way, calls `sched_yield` between
//! two polls: a woken serving thread runs within about a quantum instead of a slice, and a
//! thread with nothing waiting behind it returns at once.
//!
//! A yield is not free under Linux's EEVDF scheduler: the yielding thread is charged the rest
//! of its slice. Against a thread that runs without a break (a `top pod -A` of 560,000 pods
//! being encoded and written) a thread yielding every 200 µs got 13 % of the CPU instead of
//! half (measured with two processes on one CPU), and at 20,000 nodes a tick under that load
//! lost 1,714 nodes. So a yield that kept the thread waiting longer than [`LONG_WAIT`] (the
//! other side was not doing short work) stops the thread's courtesy for [`PAUSE`]: it then
//! loses at most one slice a second, and keeps its fair share.

use std::cell::Cell;
use std::future::Future;
use std::pin::pin;
use std::time::{Duration, Instant};

/// Work a scraping thread does before it gives way: a few kubelet pages' worth, a fraction of
/// the kernel's default time slice (1.4 ms on the 2-core test machine, by `sched_getattr`), so
/// an API request waits about this long behind it.
pub const QUANTUM: Duration = Duration::from_micros(200);

/// A yield that returns later than this gave the CPU to long work, not to a request.
pub const LONG_WAIT: Duration = Duration::from_millis(1);

/// How long a thread stops giving way after a [`LONG_WAIT`].
pub const PAUSE: Duration = Duration::from_secs(1);

/// A thread's courtesy: its work since it last gave way, and whether it is paused.
#[derive(Debug, Default)]
struct Courtesy {
    since_yield: Cell<Duration>,
    paused_until: Cell<Option<Instant>>,
}

impl Courtesy {
    /// Adds one poll's time, ending at `now`; true when the thread is due to give way (and
    /// the count restarts). Never due while paused.
    fn due(&self, poll: Duration, now: Instant) -> bool {
        let total = self.since_yield.get() + poll;
        if total < QUANTUM {
            self.since_yield.set(total);
            return false;
        }
        self.since_yield.set(Duration::ZERO);
        self.paused_until.get().is_none_or(|until| now >= until)
    }

    /// Records how long a yield kept the thread waiting, ending at `now`.
    fn yielded(&self, waited: Duration, now: Instant) {
        if waited > LONG_WAIT {
            self.paused_until.set(Some(now + PAUSE));
        }
    }
}

thread_local! {
    static COURTESY: Courtesy = Courtesy::default();
}

/// Runs `work`, giving way to other threads' short work after every [`QUANTUM`] of polling on
/// this thread (see the module docs).
pub async fn courteous<F: Future>(work: F) -> F::Output {
    let mut work = pin!(work);
    std::future::poll_fn(|cx| {
        let started = Instant::now();
        let result = work.as_mut().poll(cx);
        let polled = Instant::now();
        COURTESY.with(|c| {
            if c.due(polled - started, polled) {
                std::thread::yield_now();
                let back = Instant::now();
                c.yielded(back - polled, back);
            }
        });
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
        let c = Courtesy::default();
        let t = Instant::now();
        let us = Duration::from_micros;
        assert!(!c.due(us(150), t));
        assert!(c.due(us(60), t), "150 + 60 µs reaches the quantum");
        assert!(!c.due(us(199), t), "the count restarted at zero");
        assert!(c.due(us(1), t));
        assert!(c.due(us(5_000), t), "one long poll is due at once");
        assert!(!c.due(Duration::ZERO, t));
    }

    #[test]
    fn a_long_wait_pauses_the_courtesy_and_it_resumes_after_the_pause() {
        let c = Courtesy::default();
        let t = Instant::now();
        c.yielded(Duration::from_micros(300), t);
        assert!(c.due(QUANTUM, t), "a short wait changes nothing");
        c.yielded(LONG_WAIT + Duration::from_micros(1), t);
        assert!(!c.due(QUANTUM, t), "paused");
        assert!(
            !c.due(QUANTUM, t + PAUSE - Duration::from_millis(1)),
            "still paused"
        );
        assert!(c.due(QUANTUM, t + PAUSE), "the pause is over");
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
