//! Scrapes that arrive while a render is under way take its body instead of rendering again.
//!
//! Prometheus is run in pairs for its own availability, and both replicas scrape every target on
//! the same interval, often within milliseconds of each other; at 10,000 tasks each render costs
//! tens of milliseconds of CPU. A scrape that joins a render in progress gets a body at most one
//! render older than a render of its own would be, which is what the exporter toolkit accepts too.
//! A scrape that arrives once the render has finished renders afresh: nothing is cached.

use std::future::Future;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use tokio::sync::OnceCell;

/// One render in progress per kind of body (plain, gzip), or none.
#[derive(Default)]
pub(super) struct SharedRenders {
    in_progress: Mutex<[Option<Arc<OnceCell<Bytes>>>; 2]>,
}

impl SharedRenders {
    /// The body of the render of this `kind` now under way, or of `render` started now. If the
    /// render fails (or the scrape that started it goes away), each waiting scrape tries its own.
    pub(super) async fn body<E, F, Fut>(&self, kind: usize, render: F) -> Result<Bytes, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Bytes, E>>,
    {
        let cell = {
            let mut slots = self.in_progress.lock().unwrap_or_else(|e| e.into_inner());
            slots[kind].get_or_insert_with(Default::default).clone()
        };
        cell.get_or_try_init(|| async {
            let body = render().await;
            // Retired as soon as it is done, so a later scrape never takes a finished body.
            self.retire(kind, &cell);
            body
        })
        .await
        .cloned()
    }

    fn retire(&self, kind: usize, cell: &Arc<OnceCell<Bytes>>) {
        let mut slots = self.in_progress.lock().unwrap_or_else(|e| e.into_inner());
        if slots[kind].as_ref().is_some_and(|c| Arc::ptr_eq(c, cell)) {
            slots[kind] = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A render that counts itself and finishes when told.
    async fn counted(renders: &AtomicUsize, gate: &tokio::sync::Notify, body: &'static str) -> Result<Bytes, ()> {
        renders.fetch_add(1, Ordering::SeqCst);
        gate.notified().await;
        Ok(Bytes::from_static(body.as_bytes()))
    }

    #[tokio::test]
    async fn scrapes_during_a_render_share_it_and_later_ones_render_again() {
        let shared = Arc::new(SharedRenders::default());
        let renders = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        let scrape = |kind: usize, body: &'static str| {
            let (shared, renders, gate) = (shared.clone(), renders.clone(), gate.clone());
            tokio::spawn(async move { shared.body(kind, || counted(&renders, &gate, body)).await })
        };
        let first = scrape(1, "first");
        let second = scrape(1, "second");
        // Another kind of body is another render.
        let plain = scrape(0, "plain");
        while renders.load(Ordering::SeqCst) < 2 {
            tokio::task::yield_now().await;
        }
        // Let everything that can run run: the second scrape must be waiting, not rendering.
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert_eq!(renders.load(Ordering::SeqCst), 2);
        gate.notify_waiters();
        assert_eq!(first.await.unwrap().unwrap(), "first");
        assert_eq!(second.await.unwrap().unwrap(), "first", "joined the render under way");
        assert_eq!(plain.await.unwrap().unwrap(), "plain");

        // The render is over: the next scrape renders afresh.
        let third = scrape(1, "third");
        while renders.load(Ordering::SeqCst) < 3 {
            tokio::task::yield_now().await;
        }
        gate.notify_waiters();
        assert_eq!(third.await.unwrap().unwrap(), "third");
    }

    #[tokio::test]
    async fn a_failed_render_is_not_shared() {
        let shared = SharedRenders::default();
        let failed: Result<Bytes, &str> = shared.body(1, || async { Err("render failed") }).await;
        assert_eq!(failed, Err("render failed"));
        let next: Result<Bytes, &str> = shared.body(1, || async { Ok(Bytes::from_static(b"ok")) }).await;
        assert_eq!(next.unwrap(), "ok");
    }
}
