//! The bounded queue between capture and the encoder: when it is full the
//! oldest waiting item is pushed out (latest frame wins), so a slow encoder
//! never makes capture wait.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// What [`LatestQueue::pop`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Pop<T> {
    /// The oldest waiting item.
    Item(T),
    /// Nothing arrived within the timeout; the queue is still open.
    Empty,
    /// The queue is closed and drained: no item will come.
    Closed,
}

#[derive(Debug)]
struct State<T> {
    items: VecDeque<T>,
    closed: bool,
}

/// A bounded multi-producer queue whose `push` never blocks: at capacity it
/// evicts and returns the oldest item, which the caller counts as dropped
/// (and can reuse, so frame buffers are not reallocated).
#[derive(Debug)]
pub struct LatestQueue<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
    room: Condvar,
    capacity: usize,
}

impl<T> LatestQueue<T> {
    /// A queue holding at most `capacity` items (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            state: Mutex::new(State {
                items: VecDeque::with_capacity(capacity),
                closed: false,
            }),
            ready: Condvar::new(),
            room: Condvar::new(),
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panicking holder cannot leave the deque half-updated, so the
        // data is still consistent after poisoning.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds `item`. Returns the evicted oldest item when the queue was full,
    /// or `item` itself when the queue is closed.
    pub fn push(&self, item: T) -> Option<T> {
        let mut state = self.lock();
        if state.closed {
            return Some(item);
        }
        let evicted = if state.items.len() == self.capacity {
            state.items.pop_front()
        } else {
            None
        };
        state.items.push_back(item);
        drop(state);
        self.ready.notify_one();
        evicted
    }

    /// Adds `item`, waiting for room instead of evicting: for sources that
    /// can wait (an unpaced replay), so no frame is dropped. Returns the item
    /// if the queue is or gets closed.
    pub fn push_wait(&self, item: T) -> Option<T> {
        let state = self.lock();
        let mut state = self
            .room
            .wait_while(state, |s| s.items.len() >= self.capacity && !s.closed)
            .unwrap_or_else(PoisonError::into_inner);
        if state.closed {
            return Some(item);
        }
        state.items.push_back(item);
        drop(state);
        self.ready.notify_one();
        None
    }

    /// Takes the oldest item, waiting at most `timeout` for one. Items
    /// pushed before [`close`](Self::close) are still handed out.
    pub fn pop(&self, timeout: Duration) -> Pop<T> {
        let state = self.lock();
        let (mut state, _) = self
            .ready
            .wait_timeout_while(state, timeout, |s| s.items.is_empty() && !s.closed)
            .unwrap_or_else(PoisonError::into_inner);
        match state.items.pop_front() {
            Some(item) => {
                drop(state);
                self.room.notify_one();
                Pop::Item(item)
            }
            None if state.closed => Pop::Closed,
            None => Pop::Empty,
        }
    }

    /// Refuses further pushes and wakes every waiting consumer.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
        self.room.notify_all();
    }

    /// True after [`close`](Self::close).
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Items waiting now.
    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// True when nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn full_queue_evicts_the_oldest() {
        let q = LatestQueue::new(2);
        assert_eq!(q.push(1), None);
        assert_eq!(q.push(2), None);
        assert_eq!(q.push(3), Some(1));
        assert_eq!(q.push(4), Some(2));
        assert_eq!(q.pop(Duration::ZERO), Pop::Item(3));
        assert_eq!(q.pop(Duration::ZERO), Pop::Item(4));
        assert_eq!(q.pop(Duration::from_millis(1)), Pop::Empty);
    }

    #[test]
    fn close_drains_then_reports_closed_and_refuses_pushes() {
        let q = LatestQueue::new(3);
        q.push("a");
        q.close();
        assert_eq!(q.push("b"), Some("b"));
        assert_eq!(q.pop(Duration::ZERO), Pop::Item("a"));
        assert_eq!(q.pop(Duration::from_secs(10)), Pop::Closed);
    }

    #[test]
    fn push_wait_blocks_until_there_is_room_and_loses_nothing() {
        let q = Arc::new(LatestQueue::new(1));
        let producer = {
            let q = Arc::clone(&q);
            std::thread::spawn(move || {
                for i in 0..100u32 {
                    assert_eq!(q.push_wait(i), None);
                }
                q.close();
            })
        };
        let mut got = Vec::new();
        loop {
            match q.pop(Duration::from_secs(30)) {
                Pop::Item(i) => got.push(i),
                Pop::Closed => break,
                Pop::Empty => panic!("producer stalled"),
            }
        }
        producer.join().unwrap();
        assert_eq!(got, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn a_waiting_consumer_wakes_on_push_and_on_close() {
        let q = Arc::new(LatestQueue::new(1));
        let consumer = {
            let q = Arc::clone(&q);
            std::thread::spawn(move || {
                let first = q.pop(Duration::from_secs(30));
                let second = q.pop(Duration::from_secs(30));
                (first, second)
            })
        };
        std::thread::sleep(Duration::from_millis(20));
        q.push(7u32);
        std::thread::sleep(Duration::from_millis(20));
        q.close();
        let (first, second) = consumer.join().unwrap();
        assert_eq!(first, Pop::Item(7));
        assert_eq!(second, Pop::Closed);
    }
}
