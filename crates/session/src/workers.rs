//! Session worker threads: each runs its own single-threaded runtime, and every client session
//! lives on one of them from accept to close.
//!
//! A proxy's work per message is a few syscalls; what costs is waking threads. On a
//! work-stealing runtime a socket event often wakes a second, parked worker to steal the task
//! (a futex wake and a context switch per hop). Sessions pinned to single-threaded runtimes never
//! migrate: the thread that sees a socket become ready runs the session, and under load one
//! `epoll_wait` returns the events of many sessions at once. Accepted sockets are handed to the
//! worker with the fewest live sessions.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The session worker threads.
pub struct Workers {
    workers: Vec<Worker>,
}

struct Worker {
    handle: Handle,
    live: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Workers {
    /// Starts `threads` workers (0: one per two CPU cores, at least one — the clients and
    /// servers a proxy serves usually share its machine, and on 2 cores one worker measured
    /// faster than two; see docs/performance.md).
    pub fn start(threads: usize) -> std::io::Result<Workers> {
        let threads = match threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get().div_ceil(2)),
            n => n,
        };
        let mut workers = Vec::with_capacity(threads);
        for i in 0..threads {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = rt.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("meridian-session-{i}"))
                .spawn(move || {
                    rt.block_on(async {
                        let _ = stopped.await;
                    });
                    // Dropping the runtime drops the sessions still on it (closing their sockets).
                    drop(rt);
                })?;
            workers.push(Worker {
                handle,
                live: Arc::new(AtomicUsize::new(0)),
                stop: Some(stop),
                thread: Some(thread),
            });
        }
        Ok(Workers { workers })
    }

    /// Number of worker threads.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Whether there are no workers (never, once started).
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// Runs `session` on the worker with the fewest live sessions.
    pub fn spawn<F>(&self, session: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let Some(w) = self
            .workers
            .iter()
            .min_by_key(|w| w.live.load(Ordering::Relaxed))
        else {
            tokio::spawn(session);
            return;
        };
        let live = LiveCount::new(w.live.clone());
        w.handle.spawn(async move {
            let _live = live;
            session.await;
        });
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for w in &mut self.workers {
            if let Some(stop) = w.stop.take() {
                let _ = stop.send(());
            }
        }
        for w in &mut self.workers {
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// One live session on a worker.
struct LiveCount(Arc<AtomicUsize>);

impl LiveCount {
    fn new(count: Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        LiveCount(count)
    }
}

impl Drop for LiveCount {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sessions_spread_over_workers_and_stop_with_them() {
        let workers = Workers::start(2).expect("start");
        assert_eq!(workers.len(), 2);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let (_hold, held) = tokio::sync::watch::channel(());
        for _ in 0..4 {
            let tx = tx.clone();
            let mut held = held.clone();
            workers.spawn(async move {
                let _ = tx.send(std::thread::current().name().map(str::to_owned));
                let _ = held.changed().await;
            });
        }
        let mut names = Vec::new();
        for _ in 0..4 {
            names.push(rx.recv().await.flatten().expect("thread name"));
        }
        names.sort();
        names.dedup();
        assert_eq!(names, ["meridian-session-0", "meridian-session-1"]);
        assert!(workers
            .workers
            .iter()
            .all(|w| w.live.load(Ordering::Relaxed) == 2));
        drop(workers);
        // The parked sessions were dropped with their runtimes.
        drop(tx);
        assert!(rx.recv().await.is_none());
    }
}
