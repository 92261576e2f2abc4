//! The bounded hand-off between the threads that emit events and the one task that delivers
//! them.
//!
//! Why not a `tokio::sync::mpsc` channel: a channel wakes its receiver for every message, and
//! on a busy node that is a futex wake-up — a system call and a context switch on another core
//! — per ticket issued, which cost more than everything else an event does (measured with
//! `loadtests/events-bench.sh`: arrivals 0.66× with events on). Here a producer wakes the
//! delivery task only when the buffer goes from empty to non-empty; while events keep coming,
//! the task lingers a few milliseconds after each delivery and takes whatever accumulated, so
//! under load the request path pays for one short uncontended lock and a push.
//!
//! Why two vectors swapped rather than a ring (`VecDeque`): a ring keeps the capacity of the
//! largest backlog it ever held and writes each new item one slot further round it, so under a
//! steady load every push lands on memory last touched a whole revolution ago — out of the
//! cache. The lock's release then waits for that write to miss: `perf` put 85 % of the push's
//! samples on the unlock, about 2 % of a saturated node's CPU with events on. Here the
//! delivery task takes the whole buffer by swapping in the vector it just emptied, so the
//! request path writes to memory the task read a moment ago.

use parking_lot::Mutex;
use tokio::sync::Notify;

#[derive(Debug)]
struct State<T> {
    items: Vec<T>,
    closed: bool,
}

/// What became of a pushed item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Push {
    Queued,
    /// The buffer holds `cap` items: the item was dropped.
    Full,
    /// The buffer was closed (shutdown): the item was dropped.
    Closed,
}

#[derive(Debug)]
pub(super) struct Buffer<T> {
    state: Mutex<State<T>>,
    cap: usize,
    wake: Notify,
}

impl<T> Buffer<T> {
    pub fn new(cap: usize) -> Self {
        Self {
            state: Mutex::new(State {
                items: Vec::new(),
                closed: false,
            }),
            cap,
            wake: Notify::new(),
        }
    }

    /// Adds `item` unless the buffer is full or closed. Never waits.
    pub fn push(&self, item: T) -> Push {
        let mut s = self.state.lock();
        if s.closed {
            return Push::Closed;
        }
        if s.items.len() >= self.cap {
            return Push::Full;
        }
        let was_empty = s.items.is_empty();
        s.items.push(item);
        drop(s);
        if was_empty {
            // Without a waiter this only stores a permit (an atomic), no system call.
            self.wake.notify_one();
        }
        Push::Queued
    }

    /// Moves up to `max` of the oldest items into `out`. When they are all of them and `out`
    /// is empty, the two vectors are swapped: the buffer goes on with `out`'s (warm) memory.
    pub fn take(&self, max: usize, out: &mut Vec<T>) {
        let mut s = self.state.lock();
        if out.is_empty() && s.items.len() <= max {
            std::mem::swap(&mut s.items, out);
        } else {
            let n = max.min(s.items.len());
            out.extend(s.items.drain(..n));
        }
    }

    pub fn len(&self) -> usize {
        self.state.lock().items.len()
    }

    /// Returns once the buffer holds something.
    pub async fn ready(&self) {
        loop {
            // A push between the check and the wait leaves a permit: `notified` then returns
            // at once, so no wake-up is lost.
            if self.len() > 0 {
                return;
            }
            self.wake.notified().await;
        }
    }

    /// Refuses every later push; what is buffered stays to be taken.
    pub fn close(&self) {
        self.state.lock().closed = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_fifo_that_refuses_after_close() {
        let b = Buffer::new(3);
        for i in 0..3 {
            assert_eq!(b.push(i), Push::Queued);
        }
        assert_eq!(b.push(3), Push::Full);
        let mut out = Vec::new();
        b.take(2, &mut out);
        assert_eq!(out, [0, 1]);
        assert_eq!(b.push(4), Push::Queued);
        b.close();
        assert_eq!(b.push(5), Push::Closed);
        out.clear();
        b.take(10, &mut out);
        assert_eq!(out, [2, 4]);
    }

    #[tokio::test]
    async fn a_push_from_another_thread_wakes_the_waiting_task() {
        let b = std::sync::Arc::new(Buffer::new(8));
        let waiter = tokio::spawn({
            let b = b.clone();
            async move { b.ready().await }
        });
        let pusher = b.clone();
        std::thread::spawn(move || pusher.push(7))
            .join()
            .expect("push");
        tokio::time::timeout(std::time::Duration::from_secs(10), waiter)
            .await
            .expect("woken within 10 s")
            .expect("task");
        assert_eq!(b.len(), 1);
    }
}
