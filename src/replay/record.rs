//! Recording a streamed body while it is sent, and sending it again.
//!
//! [`Recording`] goes out in the first attempt. It forwards every frame of
//! the original body and keeps a reference-counted copy of each data frame
//! (a `Bytes` clone: no byte is copied) and of the trailers, up to the
//! limit. The layer keeps a [`Recorder`] handle to the same state.
//!
//! When the token was rejected, [`Recorder::replay`] takes the state over:
//! the recorded frames, and the rest of the original body that was not sent
//! yet (a server may answer 401 before reading the whole body). The retry
//! sends [`Replayed`], which yields the recorded frames and then the rest,
//! so it carries the whole body byte for byte; the first attempt's body
//! ends where it stands. A body whose sent part outgrew the limit, or that
//! failed, is not replayed.
//!
//! When the answer is not a rejection, dropping the [`Recorder`] releases
//! the recorded frames at once; the body goes on being sent untouched.

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

/// What the first attempt's body and the layer share.
struct State<B> {
    /// The original body; `None` once the replay took it.
    inner: Option<B>,
    /// The data frames sent so far (reference counts, not copies).
    chunks: VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
    recorded: usize,
    limit: usize,
    mode: Mode,
    /// The original body ended.
    ended: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// Keeping every frame sent.
    Recording,
    /// The sent part outgrew the limit, or the body failed: no replay.
    Lost,
    /// The answer was not a rejection: frames pass through, nothing is kept.
    Released,
}

type Shared<B> = Arc<Mutex<State<B>>>;

fn lock<B>(shared: &Shared<B>) -> MutexGuard<'_, State<B>> {
    // Nothing that can panic runs under the lock but the body's own
    // `poll_frame`; a body that panics is not replayed anyway.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A body being sent while its frames are kept for a replay; see the
/// [module docs](crate::replay).
pub struct Recording<B> {
    shared: Shared<B>,
}

/// The layer's handle to a [`Recording`].
pub(crate) struct Recorder<B> {
    shared: Shared<B>,
}

/// A body sent again: the frames recorded during the first attempt, then
/// the rest of the original body.
pub struct Replayed<B> {
    chunks: VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
    /// The rest of the original body, if it had not ended.
    rest: Option<B>,
}

impl<B> fmt::Debug for Recording<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recording").finish_non_exhaustive()
    }
}

impl<B> fmt::Debug for Replayed<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Replayed")
            .field("chunks", &self.chunks.len())
            .finish_non_exhaustive()
    }
}

/// Starts recording `body`, keeping at most `limit` bytes.
pub(crate) fn record<B>(body: B, limit: usize) -> (Recording<B>, Recorder<B>) {
    let shared = Arc::new(Mutex::new(State {
        inner: Some(body),
        chunks: VecDeque::new(),
        trailers: None,
        recorded: 0,
        limit,
        mode: Mode::Recording,
        ended: false,
    }));
    (
        Recording {
            shared: Arc::clone(&shared),
        },
        Recorder { shared },
    )
}

impl<B> Recorder<B> {
    /// The body to send again, if the whole of it can be: the recorded
    /// frames and the part not sent yet. The first attempt's body ends here.
    pub(crate) fn replay(self) -> Option<Replayed<B>> {
        let mut state = lock(&self.shared);
        if state.mode != Mode::Recording {
            return None;
        }
        state.mode = Mode::Released;
        let rest = state.inner.take().filter(|_| !state.ended);
        Some(Replayed {
            chunks: std::mem::take(&mut state.chunks),
            trailers: state.trailers.take(),
            rest,
        })
    }
}

impl<B> Drop for Recorder<B> {
    fn drop(&mut self) {
        let mut state = lock(&self.shared);
        if state.mode == Mode::Recording {
            state.mode = Mode::Released;
            state.chunks = VecDeque::new();
            state.trailers = None;
        }
    }
}

impl<B> State<B> {
    fn keep(&mut self, frame: &Frame<Bytes>) {
        if self.mode != Mode::Recording {
            return;
        }
        if let Some(data) = frame.data_ref() {
            self.recorded = self.recorded.saturating_add(data.len());
            if self.recorded > self.limit {
                self.lose();
            } else if !data.is_empty() {
                if self.chunks.is_empty() {
                    // One allocation for the usual few frames.
                    self.chunks.reserve(8);
                }
                self.chunks.push_back(data.clone());
            }
        } else if let Some(trailers) = frame.trailers_ref() {
            self.trailers = Some(trailers.clone());
        }
    }

    fn lose(&mut self) {
        self.mode = Mode::Lost;
        self.chunks = VecDeque::new();
        self.trailers = None;
    }
}

impl<B> Body for Recording<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut state = lock(&self.shared);
        let state = &mut *state;
        // Taken by the replay: this attempt was answered; its body ends.
        let Some(inner) = state.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => state.keep(frame),
            Poll::Ready(Some(Err(_))) => state.lose(),
            Poll::Ready(None) => state.ended = true,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        let state = lock(&self.shared);
        state.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let state = lock(&self.shared);
        match &state.inner {
            Some(inner) => inner.size_hint(),
            None => SizeHint::with_exact(0),
        }
    }
}

impl<B> Body for Replayed<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        if let Some(chunk) = self.chunks.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if let Some(trailers) = self.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        match self.rest.as_mut() {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
            && self.trailers.is_none()
            && self.rest.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let recorded = self.chunks.iter().map(|c| c.len() as u64).sum::<u64>();
        let rest = match &self.rest {
            Some(rest) => rest.size_hint(),
            None => SizeHint::with_exact(0),
        };
        let mut hint = SizeHint::new();
        // The upper bound first: a lower bound above it would panic.
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(recorded));
        }
        hint.set_lower(rest.lower().saturating_add(recorded));
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    type Stream = StreamBody<
        futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, std::io::Error>>>,
    >;

    fn stream(chunks: &[&'static str], trailers: bool) -> Stream {
        let mut frames: Vec<_> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes()))))
            .collect();
        if trailers {
            let mut t = HeaderMap::new();
            t.insert("x-sum", "42".parse().unwrap());
            frames.push(Ok(Frame::trailers(t)));
        }
        StreamBody::new(futures_util::stream::iter(frames))
    }

    async fn frames<B: Body<Data = Bytes> + Unpin>(mut body: B) -> (Vec<u8>, Option<HeaderMap>)
    where
        B::Error: fmt::Debug,
    {
        let mut data = Vec::new();
        let mut trailers = None;
        while let Some(frame) = body.frame().await {
            let frame = frame.unwrap();
            match frame.into_data() {
                Ok(d) => data.extend_from_slice(&d),
                Err(frame) => trailers = frame.into_trailers().ok(),
            }
        }
        (data, trailers)
    }

    #[tokio::test]
    async fn a_fully_sent_body_replays_byte_for_byte() {
        let (sent, recorder) = record(stream(&["ab", "cd", "ef"], true), 64);
        let first = frames(sent).await;
        let again = frames(recorder.replay().unwrap()).await;
        assert_eq!(first.0, b"abcdef");
        assert_eq!(again, first);
    }

    #[tokio::test]
    async fn a_partly_sent_body_replays_the_rest_too() {
        let (mut sent, recorder) = record(stream(&["ab", "cd", "ef"], false), 64);
        // The server answered after one frame.
        let _ = sent.frame().await;
        let replayed = recorder.replay().unwrap();
        assert!(sent.frame().await.is_none(), "the first attempt ends");
        assert_eq!(frames(replayed).await.0, b"abcdef");
    }

    #[tokio::test]
    async fn a_sent_part_over_the_limit_is_not_replayed() {
        let (sent, recorder) = record(stream(&["abc", "def"], false), 5);
        assert_eq!(frames(sent).await.0, b"abcdef", "sent untouched");
        assert!(recorder.replay().is_none());
    }

    #[tokio::test]
    async fn a_released_recording_keeps_nothing_and_still_sends() {
        let (mut sent, recorder) = record(stream(&["ab", "cd"], false), 64);
        let _ = sent.frame().await;
        drop(recorder);
        assert!(lock(&sent.shared).chunks.is_empty());
        assert_eq!(frames(sent).await.0, b"cd");
    }
}
