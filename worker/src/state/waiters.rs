//! Tasks waiting for the worker's state to change: a stop, or a new
//! configuration. Idle connections and accept loops wait like this.
//!
//! tokio's `watch` and `Notify` serve any thread, with a lock and atomics
//! for each waiter; a connection waiting for its next request registered
//! two of them per request. The worker runs one thread, so a plain list of
//! wakers, woken by whoever changes the state, does.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// The wakers of the tasks waiting for a change.
#[derive(Default)]
pub(crate) struct Waiters {
    /// One slot per wait in progress (`None`: free).
    slots: RefCell<Vec<Option<Waker>>>,
    /// Indexes of the free slots.
    free: RefCell<Vec<usize>>,
}

impl Waiters {
    /// Resolves once `changed` holds; it is checked when polled first and
    /// after each [`Waiters::wake_all`].
    pub(crate) fn wait<F: Fn() -> bool + Unpin>(&self, changed: F) -> Wait<'_, F> {
        Wait {
            waiters: self,
            changed,
            slot: None,
        }
    }

    /// Wakes every waiting task (the state changed).
    pub(crate) fn wake_all(&self) {
        // Collected first: waking must not find the list borrowed.
        let wakers: Vec<Waker> = self.slots.borrow().iter().flatten().cloned().collect();
        for waker in wakers {
            waker.wake();
        }
    }
}

/// A wait for a change (see [`Waiters::wait`]).
pub(crate) struct Wait<'w, F> {
    waiters: &'w Waiters,
    changed: F,
    /// The slot holding this wait's waker, once registered.
    slot: Option<usize>,
}

impl<F: Fn() -> bool + Unpin> Future for Wait<'_, F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if (self.changed)() {
            return Poll::Ready(());
        }
        let mut slots = self.waiters.slots.borrow_mut();
        match self.slot {
            Some(i) => match &mut slots[i] {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            },
            None => {
                let waker = Some(cx.waker().clone());
                let i = match self.waiters.free.borrow_mut().pop() {
                    Some(i) => {
                        slots[i] = waker;
                        i
                    }
                    None => {
                        slots.push(waker);
                        slots.len() - 1
                    }
                };
                drop(slots);
                self.slot = Some(i);
            }
        }
        Poll::Pending
    }
}

impl<F> Drop for Wait<'_, F> {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            self.waiters.slots.borrow_mut()[i] = None;
            self.waiters.free.borrow_mut().push(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    #[tokio::test]
    async fn a_wait_ends_once_woken_with_its_condition_true() {
        let waiters = Rc::new(Waiters::default());
        let flag = Rc::new(Cell::new(false));
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let (w, f) = (waiters.clone(), flag.clone());
                let waiting = tokio::task::spawn_local(async move {
                    w.wait(|| f.get()).await;
                });
                // Another wait comes and goes: its slot is reused.
                let other = Cell::new(false);
                let mut gone = std::pin::pin!(waiters.wait(|| other.get()));
                assert!(futures_poll(gone.as_mut()).is_pending());
                tokio::task::yield_now().await;
                assert_eq!(waiters.slots.borrow().iter().flatten().count(), 2);
                // A wake-up without a change leaves the wait pending.
                waiters.wake_all();
                tokio::task::yield_now().await;
                assert!(!waiting.is_finished());
                flag.set(true);
                waiters.wake_all();
                waiting.await.unwrap();
                assert_eq!(waiters.slots.borrow().iter().flatten().count(), 1);
            })
            .await;
        assert_eq!(waiters.free.borrow().len(), 2);
    }

    #[tokio::test]
    async fn a_condition_already_true_ends_the_wait_at_once() {
        let waiters = Waiters::default();
        waiters.wait(|| true).await;
        assert!(waiters.slots.borrow().is_empty());
    }

    fn futures_poll<F: Future>(f: Pin<&mut F>) -> Poll<F::Output> {
        let mut cx = Context::from_waker(Waker::noop());
        f.poll(&mut cx)
    }
}
