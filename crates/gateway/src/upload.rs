//! A client's request body on its way upstream: each piece must arrive within the upload idle
//! timeout, and how the upload ended (complete, broken, abandoned, stalled) is kept, so a
//! failed try is blamed on the client when the client caused it and the per-try timeout starts
//! only once the request has been sent in full.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};
use veer_core::outcome::TryEnd;

use crate::body::BodyError;
use crate::clock;

const IN_PROGRESS: u8 = 0;
const COMPLETE: u8 = 1;
const MALFORMED: u8 = 2;
const ABORTED: u8 = 3;
const STALLED: u8 = 4;

/// How an upload went, shared by the body (which writes it) and the try (which reads it).
#[derive(Debug, Default)]
pub struct Upload {
    end: AtomicU8,
    /// Bytes of body read from the client so far (for the access log).
    received: AtomicU64,
    complete_at: OnceLock<Instant>,
    /// The try waiting for the upload to end, when the body is read on another task (hyper's
    /// clients drive request bodies from their connection task).
    waiter: Mutex<Option<Waker>>,
}

impl Upload {
    /// The client's fault, if the upload ended as one.
    pub fn client_fault(&self) -> Option<TryEnd> {
        match self.end.load(Ordering::Acquire) {
            MALFORMED => Some(TryEnd::ClientBodyMalformed),
            ABORTED => Some(TryEnd::ClientAborted),
            STALLED => Some(TryEnd::ClientUploadTimeout),
            _ => None,
        }
    }

    /// Bytes of body read from the client so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// When the last byte of the body was read from the client.
    pub fn complete_at(&self) -> Option<Instant> {
        self.complete_at.get().copied()
    }

    fn end(&self, how: u8) {
        if self.end.compare_exchange(IN_PROGRESS, how, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            if how == COMPLETE {
                let _ = self.complete_at.set(clock::now());
            }
            if let Some(w) = self.waiter.lock().unwrap_or_else(|e| e.into_inner()).take() {
                w.wake();
            }
        }
    }

    fn wait(&self, cx: &Context<'_>) {
        *self.waiter.lock().unwrap_or_else(|e| e.into_inner()) = Some(cx.waker().clone());
    }

    fn ended(&self) -> bool {
        self.end.load(Ordering::Acquire) != IN_PROGRESS
    }
}

/// The client's body, as the upstream reads it.
pub struct ClientBody {
    inner: Incoming,
    idle: Duration,
    stall: Option<Pin<Box<Sleep>>>,
    upload: Arc<Upload>,
}

impl ClientBody {
    pub fn new(inner: Incoming, idle: Duration) -> (ClientBody, Arc<Upload>) {
        let upload = Arc::new(Upload::default());
        (ClientBody { inner, idle, stall: None, upload: upload.clone() }, upload)
    }
}

impl hyper::body::Body for ClientBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.upload.received.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                if this.inner.is_end_stream() {
                    this.upload.end(COMPLETE);
                } else if let Some(stall) = &mut this.stall {
                    stall.as_mut().reset(clock::now() + this.idle);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.upload.end(COMPLETE);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.upload.end(if is_malformed(&e) { MALFORMED } else { ABORTED });
                Poll::Ready(Some(Err(BodyError::Hyper(e))))
            }
            Poll::Pending => {
                let idle = this.idle;
                let stall = this.stall.get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                if stall.as_mut().poll(cx).is_ready() {
                    this.upload.end(STALLED);
                    return Poll::Ready(Some(Err(BodyError::UploadStalled(idle))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A body error that says the client broke its own framing (hyper reports a bad chunk line or
/// chunk end as invalid input or data) rather than leaving mid-body.
fn is_malformed(e: &hyper::Error) -> bool {
    e.is_parse()
        || crate::failure::io_source(e)
            .is_some_and(|io| matches!(io.kind(), std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData))
}

/// Runs one try whose request body still streams in from the client. Its timeout (`per_try`)
/// starts once the body has been read in full, as Envoy's does: a slow upload is bounded by
/// the upload idle timeout, and is never an upstream that failed to answer in time.
pub async fn after_upload<F: Future>(attempt: F, upload: &Upload, per_try: Duration) -> Option<F::Output> {
    let mut attempt = std::pin::pin!(attempt);
    let mut timer: Option<Pin<Box<Sleep>>> = None;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = attempt.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        if timer.is_none() {
            match upload.complete_at() {
                Some(at) => timer = Some(Box::pin(tokio::time::sleep_until(at + per_try))),
                None => {
                    upload.wait(cx);
                    // It may have ended between the look and the wait.
                    if !upload.ended() {
                        return Poll::Pending;
                    }
                    // A failed upload fails the attempt with it; the timer only bounds the wait.
                    let at = upload.complete_at().unwrap_or_else(clock::now);
                    timer = Some(Box::pin(tokio::time::sleep_until(at + per_try)));
                }
            }
        }
        match timer.as_mut().map(|t| t.as_mut().poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(None),
            _ => Poll::Pending,
        }
    })
    .await
}

/// The node-wide allowance for request bodies held in memory so they can be resent: a flood of
/// bodies cannot make retries take the node's memory. Only requests with a small body touch it.
#[derive(Debug)]
pub struct BufferBudget {
    used: AtomicUsize,
    cap: usize,
}

impl BufferBudget {
    pub fn new(cap: usize) -> BufferBudget {
        BufferBudget { used: AtomicUsize::new(0), cap }
    }

    /// Takes `bytes` of the allowance, given back when the grant is dropped; `None` when it
    /// would go past the cap.
    pub fn take(self: &Arc<Self>, bytes: usize) -> Option<BufferGrant> {
        let before = self.used.fetch_add(bytes, Ordering::Relaxed);
        if before.saturating_add(bytes) > self.cap {
            self.used.fetch_sub(bytes, Ordering::Relaxed);
            return None;
        }
        Some(BufferGrant { budget: self.clone(), bytes })
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

/// Bytes of the [`BufferBudget`] one request holds.
#[derive(Debug)]
pub struct BufferGrant {
    budget: Arc<BufferBudget>,
    bytes: usize,
}

impl Drop for BufferGrant {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_grants_up_to_its_cap_and_takes_back_what_is_dropped() {
        let b = Arc::new(BufferBudget::new(100));
        let first = b.take(60).expect("within the cap");
        assert!(b.take(41).is_none(), "past the cap");
        let second = b.take(40).expect("exactly the cap");
        assert_eq!(b.used(), 100);
        drop(first);
        assert_eq!(b.used(), 40);
        drop(second);
        assert_eq!(b.used(), 0);
        assert!(b.take(usize::MAX).is_none(), "no overflow");
        assert_eq!(b.used(), 0);
    }

    // The per-try timer on paused time: tokio's clock jumps to the next timer, so these take no
    // real time and measure the timer to the millisecond.

    #[tokio::test(start_paused = true)]
    async fn the_per_try_timeout_starts_once_the_upload_is_complete() {
        let upload = Upload::default();
        let start = crate::clock::now();
        let mut try_ = std::pin::pin!(after_upload(std::future::pending::<()>(), &upload, Duration::from_secs(1)));
        // An upload that lasts five per-try timeouts: the try is not timed out meanwhile.
        assert!(tokio::time::timeout(Duration::from_secs(5), &mut try_).await.is_err(), "timed out during the upload");
        upload.end(COMPLETE);
        assert_eq!(try_.await, None, "the upstream never answered: timed out");
        assert_eq!(crate::clock::since(start), Duration::from_secs(6), "one per-try timeout after the last byte");
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_within_the_per_try_timeout_is_the_tries_outcome() {
        let upload = Upload::default();
        upload.end(COMPLETE);
        let start = crate::clock::now();
        let answer = async {
            tokio::time::sleep(Duration::from_millis(999)).await;
            "answered"
        };
        assert_eq!(after_upload(answer, &upload, Duration::from_secs(1)).await, Some("answered"));
        assert_eq!(crate::clock::since(start), Duration::from_millis(999));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_upload_ends_the_wait_one_per_try_timeout_later_and_is_the_clients_fault() {
        let upload = Upload::default();
        let start = crate::clock::now();
        let mut try_ = std::pin::pin!(after_upload(std::future::pending::<()>(), &upload, Duration::from_millis(300)));
        assert!(tokio::time::timeout(Duration::from_secs(2), &mut try_).await.is_err());
        upload.end(STALLED);
        assert_eq!(try_.await, None);
        assert_eq!(crate::clock::since(start), Duration::from_millis(2300));
        assert_eq!(upload.client_fault(), Some(TryEnd::ClientUploadTimeout));
        assert_eq!(upload.complete_at(), None, "a stalled upload never completed");
    }
}
