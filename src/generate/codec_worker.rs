//! [`CodecWorker`]: a [`CodecStream`] on its own thread, so that a stream's codec decodes one
//! chunk while the frame loop generates the next one.
//!
//! With spare cores the streamed wall time is then about the slower of the two (generation,
//! codec) instead of their sum. The worker decodes chunks strictly in the order they are
//! submitted, so its samples are exactly the synchronous [`CodecStream`]'s.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::CodecStream;
use crate::codes::Codes;
use crate::error::{Error, Result};

/// A [`CodecStream`] run on a worker thread: [`CodecWorker::submit`] hands it a chunk's codes,
/// [`CodecWorker::wait_while`] takes the oldest chunk's samples back. Dropping it waits for the
/// chunk being decoded (if any) and stops the thread.
pub struct CodecWorker {
    jobs: Option<Sender<Codes>>,
    results: Receiver<Result<Vec<f32>>>,
    /// Chunks submitted whose samples were not taken yet.
    pending: usize,
    stateful: bool,
    counts: Arc<Counts>,
    thread: Option<JoinHandle<()>>,
}

/// The stream's counters as of the last decoded chunk (written by the worker before it sends
/// that chunk's samples).
#[derive(Default)]
struct Counts {
    frames: AtomicUsize,
    stepped: AtomicUsize,
}

impl std::fmt::Debug for CodecWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodecWorker")
            .field("stateful", &self.stateful)
            .field("frames", &self.frames())
            .field("pending", &self.pending)
            .finish()
    }
}

impl CodecWorker {
    /// Moves `stream` onto a new thread.
    pub fn spawn(mut stream: CodecStream) -> Result<Self> {
        let (jobs, job_rx) = mpsc::channel::<Codes>();
        let (result_tx, results) = mpsc::channel();
        let counts = Arc::new(Counts::default());
        let stateful = stream.is_stateful();
        let c = counts.clone();
        let thread = std::thread::Builder::new()
            .name("s1-codec".into())
            .spawn(move || {
                for codes in job_rx {
                    // A panic in a backend must not kill the thread silently: it becomes this
                    // chunk's error (and the stream's state is not trusted after it).
                    let r = catch_unwind(AssertUnwindSafe(|| stream.push(&codes))).unwrap_or_else(
                        |_| Err(Error::Internal("the codec worker panicked".into())),
                    );
                    c.frames.store(stream.frames(), Ordering::SeqCst);
                    c.stepped.store(stream.stepped_frames(), Ordering::SeqCst);
                    if result_tx.send(r).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| Error::Internal(format!("cannot start the codec thread: {e}")))?;
        Ok(Self { jobs: Some(jobs), results, pending: 0, stateful, counts, thread: Some(thread) })
    }

    /// Queues the next chunk's codes (`[K, T]`, the frames after those submitted before).
    pub fn submit(&mut self, codes: Codes) -> Result<()> {
        let jobs = self.jobs.as_ref().ok_or_else(stopped)?;
        jobs.send(codes).map_err(|_| stopped())?;
        self.pending += 1;
        Ok(())
    }

    /// Chunks submitted whose samples were not taken yet.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// The samples of the oldest pending chunk. Until they are ready, calls `work` (one short
    /// piece of other work, e.g. one frame of generation) again and again while it returns
    /// `Ok(true)`, then blocks. An error of `work` is returned at once and leaves the chunk
    /// pending, so a later call still gets its samples.
    pub fn wait_while(&mut self, mut work: impl FnMut() -> Result<bool>) -> Result<Vec<f32>> {
        if self.pending == 0 {
            return Err(Error::Internal("codec worker: no chunk pending".into()));
        }
        let mut busy = true;
        let r = loop {
            if busy {
                match self.results.try_recv() {
                    Ok(r) => break r,
                    Err(TryRecvError::Disconnected) => return Err(stopped()),
                    Err(TryRecvError::Empty) => busy = work()?,
                }
            } else {
                break self.results.recv().map_err(|_| stopped())?;
            }
        };
        self.pending -= 1;
        r
    }

    /// Whether chunks go through the stateful decoder ([`CodecStream::is_stateful`]).
    pub fn is_stateful(&self) -> bool {
        self.stateful
    }

    /// Frames decoded so far (chunks whose samples are ready or taken).
    pub fn frames(&self) -> usize {
        self.counts.frames.load(Ordering::SeqCst)
    }

    /// [`CodecStream::stepped_frames`] as of the last decoded chunk.
    pub fn stepped_frames(&self) -> usize {
        self.counts.stepped.load(Ordering::SeqCst)
    }
}

impl Drop for CodecWorker {
    fn drop(&mut self) {
        // Closing the queue ends the thread's loop after the chunk it is decoding.
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn stopped() -> Error {
    Error::Internal("the codec worker thread stopped".into())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use crate::backend::{Codec, CodecStep};
    use crate::bundle::BundleInfo;

    /// A codec whose samples per frame are (code 0, position), and whose step decoder sleeps
    /// `delay` per call, so that the caller's work overlaps it.
    struct Slow {
        delay: Duration,
        fail_at: Option<usize>,
        calls: Mutex<usize>,
    }
    struct SlowStep {
        pos: usize,
        delay: Duration,
        fail_at: Option<usize>,
    }
    impl CodecStep for SlowStep {
        fn decode_next(&mut self, codes: &Codes, pcm: &mut Vec<f32>) -> Result<()> {
            std::thread::sleep(self.delay);
            if self.fail_at == Some(self.pos) {
                return Err(Error::Internal("injected".into()));
            }
            for f in 0..codes.frames().0 {
                pcm.push(codes.get(0, f) as f32);
                pcm.push(self.pos as f32);
                self.pos += 1;
            }
            Ok(())
        }
        fn position(&self) -> usize {
            self.pos
        }
    }
    impl Codec for Slow {
        fn name(&self) -> &'static str {
            "slow"
        }
        fn decode_at(&self, _codes: &Codes, _start: usize, _pcm: &mut Vec<f32>) -> Result<()> {
            Err(Error::Internal("not used".into()))
        }
        fn encode(&self, _pcm: &[f32]) -> Result<Codes> {
            Err(Error::Internal("not used".into()))
        }
        fn start_step(&self) -> Result<Option<Box<dyn CodecStep>>> {
            *self.calls.lock().unwrap() += 1;
            Ok(Some(Box::new(SlowStep { pos: 0, delay: self.delay, fail_at: self.fail_at })))
        }
    }

    fn worker(delay_ms: u64, fail_at: Option<usize>) -> CodecWorker {
        let mut info = BundleInfo::for_tests();
        info.model.num_codebooks = 2;
        info.codec.codebook_sizes = vec![100, 100];
        info.codec.receptive_field_frames = 3;
        info.codec.max_decode_frames = 1000;
        let codec = Arc::new(Slow {
            delay: Duration::from_millis(delay_ms),
            fail_at,
            calls: Mutex::new(0),
        });
        let stream = CodecStream::new(codec, Arc::new(info), true).unwrap();
        CodecWorker::spawn(stream).unwrap()
    }

    fn codes(from: usize, n: usize) -> Codes {
        let cols: Vec<Vec<i64>> = (from..from + n).map(|f| vec![f as i64, 0]).collect();
        Codes::from_frames(2, &cols).unwrap()
    }

    #[test]
    fn worker_returns_chunks_in_order_with_the_streams_samples() {
        let mut w = worker(0, None);
        assert!(w.is_stateful());
        w.submit(codes(0, 2)).unwrap();
        w.submit(codes(2, 3)).unwrap();
        assert_eq!(w.pending(), 2);
        assert_eq!(w.wait_while(|| Ok(false)).unwrap(), vec![0.0, 0.0, 1.0, 1.0]);
        assert_eq!(w.wait_while(|| Ok(false)).unwrap(), vec![2.0, 2.0, 3.0, 3.0, 4.0, 4.0]);
        assert_eq!(w.pending(), 0);
        assert_eq!(w.frames(), 5);
        assert_eq!(w.stepped_frames(), 5);
        assert!(w.wait_while(|| Ok(false)).is_err(), "nothing pending");
    }

    #[test]
    fn worker_runs_the_callers_work_while_it_decodes() {
        let mut w = worker(200, None);
        w.submit(codes(0, 1)).unwrap();
        let mut pieces = 0;
        let pcm = w
            .wait_while(|| {
                pieces += 1;
                std::thread::sleep(Duration::from_millis(10));
                Ok(pieces < 5)
            })
            .unwrap();
        assert_eq!(pcm, vec![0.0, 0.0]);
        // The decode takes 200 ms: the 5 pieces of 10 ms all ran before the samples came.
        assert_eq!(pieces, 5);
    }

    #[test]
    fn work_error_leaves_the_chunk_pending() {
        let mut w = worker(100, None);
        w.submit(codes(0, 1)).unwrap();
        let e = w.wait_while(|| Err(Error::Cancelled)).unwrap_err();
        assert!(matches!(e, Error::Cancelled));
        assert_eq!(w.pending(), 1);
        assert_eq!(w.wait_while(|| Ok(false)).unwrap(), vec![0.0, 0.0]);
    }

    #[test]
    fn decoder_error_comes_back_as_that_chunks_result() {
        let mut w = worker(0, Some(1));
        w.submit(codes(0, 1)).unwrap();
        w.submit(codes(1, 1)).unwrap();
        w.submit(codes(2, 1)).unwrap();
        assert!(w.wait_while(|| Ok(false)).is_ok());
        assert!(w.wait_while(|| Ok(false)).is_err(), "the injected failure");
        // The stream refuses to go on after a failed step (its state may be half-updated).
        assert!(w.wait_while(|| Ok(false)).is_err());
    }
}
