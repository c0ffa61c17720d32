//! [`Limiter`]: the number of sends in flight for one account, lowered
//! when the server limits parallel submissions and raised again after a
//! run of successes.

use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Successes in a row after which the limit goes up by one.
pub const RAISE_AFTER_SUCCESSES: u32 = 20;

/// Limit of the sends in flight over all outbound pipelines of one
/// account, between 1 and a maximum. Clones share the limit.
#[derive(Clone)]
pub struct Limiter {
    semaphore: Arc<Semaphore>,
    state: Arc<Mutex<State>>,
    max: usize,
}

struct State {
    limit: usize,
    /// Successes since the limit last changed or a concurrency-limit
    /// reply arrived.
    successes: u32,
    /// Permits to drop when they come back, because the limit went down
    /// while every permit was in use.
    debt: usize,
}

/// The right to send one request; returns its slot on drop, unless the
/// limit went down meanwhile.
pub struct Permit {
    permit: Option<OwnedSemaphorePermit>,
    state: Arc<Mutex<State>>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut state = self.state.lock().expect("limiter state");
        if state.debt > 0 {
            state.debt -= 1;
            if let Some(permit) = self.permit.take() {
                permit.forget();
            }
        }
    }
}

impl Limiter {
    /// Creates a limiter that starts at `max`, which is at least 1.
    pub fn new(max: usize) -> Self {
        let max = max.max(1);
        Self {
            semaphore: Arc::new(Semaphore::new(max)),
            state: Arc::new(Mutex::new(State {
                limit: max,
                successes: 0,
                debt: 0,
            })),
            max,
        }
    }

    /// Returns the current limit.
    pub fn limit(&self) -> usize {
        self.state.lock().expect("limiter state").limit
    }

    /// Waits for a free slot under the current limit.
    pub async fn acquire(&self) -> Permit {
        let permit = Arc::clone(&self.semaphore)
            .acquire_owned()
            .await
            .expect("the limiter's semaphore is never closed");
        Permit {
            permit: Some(permit),
            state: Arc::clone(&self.state),
        }
    }

    /// Lowers the limit by one after a concurrency-limit reply. Returns
    /// the new limit, or `None` when it already was 1.
    pub fn lower(&self) -> Option<usize> {
        let mut state = self.state.lock().expect("limiter state");
        state.successes = 0;
        if state.limit <= 1 {
            return None;
        }
        state.limit -= 1;
        // A slot in use is dropped when its permit comes back.
        if self.semaphore.forget_permits(1) == 0 {
            state.debt += 1;
        }
        Some(state.limit)
    }

    /// Counts a successful send. Returns the new limit when this success
    /// completed a run of [`RAISE_AFTER_SUCCESSES`] and raised it by one.
    pub fn record_success(&self) -> Option<usize> {
        let mut state = self.state.lock().expect("limiter state");
        if state.limit >= self.max {
            return None;
        }
        state.successes += 1;
        if state.successes < RAISE_AFTER_SUCCESSES {
            return None;
        }
        state.successes = 0;
        state.limit += 1;
        if state.debt > 0 {
            state.debt -= 1;
        } else {
            self.semaphore.add_permits(1);
        }
        Some(state.limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Returns how many permits can be taken right now.
    fn available(limiter: &Limiter) -> usize {
        limiter.semaphore.available_permits()
    }

    #[tokio::test]
    async fn lower_takes_effect_on_free_slots() {
        let limiter = Limiter::new(3);

        assert_eq!(limiter.lower(), Some(2));
        assert_eq!(limiter.limit(), 2);
        assert_eq!(available(&limiter), 2);
    }

    #[tokio::test]
    async fn lower_waits_for_busy_slots() {
        let limiter = Limiter::new(2);
        let first = limiter.acquire().await;
        let second = limiter.acquire().await;

        assert_eq!(limiter.lower(), Some(1));
        drop(first);
        assert_eq!(available(&limiter), 0, "the returned slot is dropped");
        drop(second);
        assert_eq!(available(&limiter), 1);
    }

    #[tokio::test]
    async fn lower_stops_at_one() {
        let limiter = Limiter::new(2);

        assert_eq!(limiter.lower(), Some(1));
        assert_eq!(limiter.lower(), None);
        assert_eq!(limiter.limit(), 1);
        assert_eq!(available(&limiter), 1);
    }

    #[tokio::test]
    async fn successes_raise_up_to_max() {
        let limiter = Limiter::new(2);
        limiter.lower();

        for _ in 1..RAISE_AFTER_SUCCESSES {
            assert_eq!(limiter.record_success(), None);
        }
        assert_eq!(limiter.record_success(), Some(2));
        assert_eq!(available(&limiter), 2);
        for _ in 0..RAISE_AFTER_SUCCESSES {
            assert_eq!(limiter.record_success(), None);
        }
        assert_eq!(limiter.limit(), 2);
        assert_eq!(available(&limiter), 2);
    }

    #[tokio::test]
    async fn concurrency_reply_restarts_the_run() {
        let limiter = Limiter::new(3);
        limiter.lower();
        limiter.lower();

        for _ in 1..RAISE_AFTER_SUCCESSES {
            limiter.record_success();
        }
        assert_eq!(limiter.lower(), None);
        assert_eq!(limiter.record_success(), None);
        assert_eq!(limiter.limit(), 1);
    }

    #[tokio::test]
    async fn raise_cancels_pending_drop() {
        let limiter = Limiter::new(2);
        let first = limiter.acquire().await;
        let second = limiter.acquire().await;
        limiter.lower();

        for _ in 0..RAISE_AFTER_SUCCESSES {
            limiter.record_success();
        }
        drop(first);
        drop(second);
        assert_eq!(limiter.limit(), 2);
        assert_eq!(available(&limiter), 2);
    }
}
