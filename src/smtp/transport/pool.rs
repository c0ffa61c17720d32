//! Signed-in connections of one account kept for reuse.
//!
//! A semaphore with `max_connections` permits bounds the connections: a
//! send holds a permit while it uses a connection, taken from the idle
//! list or newly opened, and gives the connection back before it releases
//! the permit. So idle and busy connections together never exceed the
//! maximum. Idle connections are reused newest first, so that the oldest
//! pass `idle_timeout` and are closed by a sweep instead of being reused.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::connect::Connection;
use super::sender::PoolSettings;

/// An idle connection and when it was given back.
struct Idle {
    connection: Connection,
    since: Instant,
}

/// The connection pool of one [`super::Sender`].
pub(crate) struct Pool {
    settings: PoolSettings,
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<Idle>>,
    /// Whether a sweep task is waiting to close expired connections.
    sweeping: AtomicBool,
}

impl Pool {
    pub(crate) fn new(settings: PoolSettings) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(settings.max_connections)),
            settings,
            idle: Mutex::new(Vec::new()),
            sweeping: AtomicBool::new(false),
        }
    }

    /// Waits until fewer than `max_connections` sends hold a connection.
    pub(crate) async fn acquire(&self) -> OwnedSemaphorePermit {
        Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .expect("the pool never closes its semaphore")
    }

    /// Takes the newest idle connection that is younger than the idle
    /// timeout, closing the expired ones.
    pub(crate) fn take(&self) -> Option<Connection> {
        let expired = self.remove_expired();
        close_all(expired);

        let mut idle = self.lock();
        idle.pop().map(|entry| entry.connection)
    }

    /// Gives a usable connection back and starts a sweep if none waits.
    pub(crate) fn put(self: &Arc<Self>, connection: Connection) {
        self.lock().push(Idle {
            connection,
            since: Instant::now(),
        });

        if !self.sweeping.swap(true, Ordering::AcqRel) {
            tokio::spawn(sweep(Arc::downgrade(self)));
        }
    }

    /// Closes every idle connection with QUIT.
    pub(crate) async fn close_idle(&self) {
        let idle: Vec<Idle> = std::mem::take(&mut *self.lock());
        let quits = idle.into_iter().map(|entry| entry.connection.quit());

        futures::future::join_all(quits).await;
    }

    /// Returns the number of idle connections.
    pub(crate) fn idle_count(&self) -> usize {
        self.lock().len()
    }

    /// Returns when the oldest idle connection passes the idle timeout.
    fn next_expiry(&self) -> Option<Instant> {
        let oldest = self.lock().iter().map(|entry| entry.since).min()?;
        Some(oldest + self.settings.idle_timeout)
    }

    fn remove_expired(&self) -> Vec<Connection> {
        let timeout = self.settings.idle_timeout;
        let mut idle = self.lock();
        let (expired, kept): (Vec<Idle>, Vec<Idle>) = std::mem::take(&mut *idle)
            .into_iter()
            .partition(|entry| entry.since.elapsed() >= timeout);
        *idle = kept;

        expired.into_iter().map(|entry| entry.connection).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Closes each idle connection when it passes the idle timeout, and
/// ends when no connection is idle or the pool was dropped.
async fn sweep(pool: Weak<Pool>) {
    loop {
        let Some(strong) = pool.upgrade() else {
            return;
        };
        let Some(expiry) = strong.next_expiry() else {
            strong.sweeping.store(false, Ordering::Release);
            // A connection given back meanwhile saw the flag still set and
            // started no sweep, so this one goes on.
            if strong.idle_count() == 0 || strong.sweeping.swap(true, Ordering::AcqRel) {
                return;
            }
            continue;
        };
        drop(strong);

        tokio::time::sleep_until(expiry.into()).await;
        if let Some(strong) = pool.upgrade() {
            close_all(strong.remove_expired());
        }
    }
}

/// Sends QUIT on each connection in a task of its own.
fn close_all(connections: Vec<Connection>) {
    for connection in connections {
        tracing::debug!(connection = connection.id, "Closing idle SMTP connection");
        tokio::spawn(connection.quit());
    }
}
