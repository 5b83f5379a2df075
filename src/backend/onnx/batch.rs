//! Continuous batching on onnx-cpu: concurrent requests on one engine decode as one batch.
//!
//! A decode step is bound by reading the weights (S1-mini: 0.5 B parameters per frame), and a
//! batch of rows reads them once: the slow graph takes `[B, 1+K, 1]` tokens with each row at its
//! own position (bundle format 3), the fast graph `[B, ..]` rows at one fast position. So a
//! request's frame loop (`generate.rs`, unchanged) calls [`FrameStep::step`] on a [`Batched`]
//! handle, which hands its row to the engine's [`Batcher`] and waits; the thread whose row
//! completes the set (or that waited [`GATHER_WAIT`]) runs the whole batch, samples every row and
//! wakes the others. Requests join at their prefill frame and leave when their handle drops, so
//! the batch changes at frame boundaries only (continuous batching).
//!
//! Keys and values live in one pool per layer, `[rows, H, capacity, D]` ([`Pool`]), slot `s`
//! holding one request, bound as both past and present of the slow graph's
//! GroupQueryAttention so it is updated in place (as [`super::kv::SlowKv`] does for one
//! request). A prompt runs through the request's own [`super::kv::SlowKv`] (batch 1, chunked,
//! beside the running batch); at the prefill frame its cache becomes the pool (a request alone:
//! no copy) or is copied into a slot once.
//! A slot whose request has no row in a step runs as a harmless dummy row: it writes its next,
//! still unfilled, position, which its next real step overwrites.
//!
//! A row's numbers do not depend on its batch: every row is sampled by the same host code with
//! its own seed (`host.rs`), and ONNX Runtime computes rows independently (checked by
//! `tests/batching.rs` on the tiny bundle and by `bench --streams` at the real shapes).

use std::collections::{HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ort::memory::Allocator;
use ort::session::{IoBinding, Session};
use ort::value::{DynTensor, DynValue, PrimitiveTensorElementType, Tensor, TensorRef};
use parking_lot::{Condvar, Mutex, MutexGuard};

use super::device::Float;
use super::kv::cache_names;
use super::{empty, extract_f32, host_memory, ort_err, take, OnnxRequest, T2sShared, NAME};
use crate::backend::host::{penalty_windows, sample_frames, RowSampling};
use crate::backend::{
    BatchStats, FrameSampling, FrameStep, KvSnapshot, SlowOutput, StepRow, T2sRequest,
};
use crate::bundle::BundleInfo;
use crate::error::{Error, Result};
use crate::generate::{Frame, StageTimes};

/// Longest wait of a step for a row that was in the previous step: long enough for threads that
/// were just woken with their frames to come back (microseconds of frame bookkeeping, more on a
/// loaded machine), short beside a step (25-300 ms at the real shapes on 2 cores). A row that
/// misses a step (a stream whose reader paused) is not waited for again until it is back.
pub(crate) const GATHER_WAIT: Duration = Duration::from_millis(10);

/// The engine's batch: the rows waiting for the next step and the slot pool.
pub(crate) struct Batcher {
    shared: Arc<T2sShared>,
    info: Arc<BundleInfo>,
    state: Mutex<State>,
    wake: Condvar,
    /// Touched by the thread leading a step only (and by the last request to leave).
    pool: Mutex<Pool>,
}

#[derive(Default)]
struct State {
    /// Per slot: whether a request holds it.
    taken: Vec<bool>,
    /// Rows waiting for the next step.
    pending: Vec<Job>,
    /// When the next step's wait began (its first row, or the end of the last step).
    gather_since: Option<Instant>,
    /// Slots that had a row in the last step: the next step waits for these.
    expected: HashSet<usize>,
    /// Frames made, by ticket, until their thread takes them.
    done: HashMap<u64, Result<Done>>,
    /// A thread is running a step.
    leading: bool,
    stats: BatchStats,
    next_ticket: u64,
}

/// One request's row of a step.
struct Job {
    ticket: u64,
    slot: usize,
    frame: usize,
    /// The previous frame (fed through the slow graph); `None` for the prefill frame.
    prev: Option<Vec<i64>>,
    /// The prefill frame: the prompt's cache (copied into the slot) and its last slow output.
    join: Option<Join>,
    windows: Vec<Vec<usize>>,
    sampling: FrameSampling,
    /// Positions the slot must hold (prompt + max frames).
    capacity: usize,
    /// Stage timings wanted.
    timed: bool,
}

struct Join {
    /// The request's cache buffers (`[1, H, capacity, D]` each), positions `0..len` filled.
    bufs: Vec<DynTensor>,
    len: usize,
    capacity: usize,
    out: SlowOutput,
}

/// A row's frame and the stage times of the step that made it (the whole batch's).
struct Done {
    frame: Frame,
    times: StageTimes,
}

impl Batcher {
    pub(crate) fn new(shared: Arc<T2sShared>, info: Arc<BundleInfo>) -> Result<Batcher> {
        let pool = Pool::new(&shared)?;
        Ok(Batcher {
            shared,
            info,
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            pool: Mutex::new(pool),
        })
    }

    /// Counters so far.
    pub(crate) fn stats(&self) -> BatchStats {
        self.state.lock().stats
    }

    /// The lowest free slot, now held by the caller.
    fn take_slot(&self) -> usize {
        let mut st = self.state.lock();
        let slot = match st.taken.iter().position(|t| !t) {
            Some(s) => s,
            None => {
                st.taken.push(false);
                st.taken.len() - 1
            }
        };
        st.taken[slot] = true;
        slot
    }

    /// Frees `slot`; the last request out frees the pool's memory.
    fn leave(&self, slot: usize) {
        let mut st = self.state.lock();
        if let Some(t) = st.taken.get_mut(slot) {
            *t = false;
        }
        st.expected.remove(&slot);
        while st.taken.last() == Some(&false) {
            st.taken.pop();
        }
        if st.taken.is_empty() && !st.leading {
            // No step can start while the state is locked, so the pool is free.
            self.pool.lock().clear();
        }
        self.wake.notify_all();
    }

    /// Queues `job` and returns its frame once a step has made it; this thread may run that
    /// step.
    fn submit(&self, mut job: Job) -> Result<Done> {
        let mut st = self.state.lock();
        let ticket = st.next_ticket;
        st.next_ticket += 1;
        job.ticket = ticket;
        if st.pending.is_empty() && st.gather_since.is_none() {
            st.gather_since = Some(Instant::now());
        }
        st.pending.push(job);
        self.wake.notify_all();
        loop {
            if let Some(done) = st.done.remove(&ticket) {
                return done;
            }
            let waited = st.gather_since.map_or(Duration::ZERO, |t| t.elapsed());
            let all_in = st
                .expected
                .iter()
                .all(|s| st.pending.iter().any(|j| j.slot == *s) || !st.taken[*s]);
            if !st.leading && !st.pending.is_empty() && (all_in || waited >= GATHER_WAIT) {
                st.leading = true;
                let jobs = std::mem::take(&mut st.pending);
                st.stats.steps += 1;
                st.stats.rows += jobs.len() as u64;
                st.stats.max_rows = st.stats.max_rows.max(jobs.len());
                st.expected = jobs.iter().map(|j| j.slot).collect();
                let taken = st.taken.clone();
                let tickets: Vec<u64> = jobs.iter().map(|j| j.ticket).collect();
                // A panic inside the step must not leave `leading` set (every waiting thread
                // would wait for ever): each of its rows gets an error instead.
                let results = MutexGuard::unlocked(&mut st, || {
                    catch_unwind(AssertUnwindSafe(|| self.run(jobs, &taken))).unwrap_or_else(|_| {
                        let e = || Error::Internal("batched step panicked".into());
                        tickets.iter().map(|&t| (t, Err(e()))).collect()
                    })
                });
                st.done.extend(results);
                st.leading = false;
                // The rows just served get their wait from now.
                st.gather_since = Some(Instant::now());
                if st.taken.iter().all(|t| !t) {
                    self.pool.lock().clear();
                }
                self.wake.notify_all();
                continue;
            }
            if st.leading {
                self.wake.wait(&mut st);
            } else {
                let left = GATHER_WAIT.saturating_sub(waited).max(Duration::from_micros(100));
                self.wake.wait_for(&mut st, left);
            }
        }
    }

    /// Runs one step over `jobs`: every job gets its frame, or the step's error.
    fn run(&self, jobs: Vec<Job>, taken: &[bool]) -> Vec<(u64, Result<Done>)> {
        let tickets: Vec<u64> = jobs.iter().map(|j| j.ticket).collect();
        match self.step_batch(jobs, taken) {
            Ok(done) => tickets.into_iter().zip(done.into_iter().map(Ok)).collect(),
            Err(e) => {
                let message = e.to_string();
                let mut first = Some(e);
                tickets
                    .into_iter()
                    .map(|t| {
                        let e = first.take().unwrap_or_else(|| Error::Backend {
                            backend: NAME,
                            op: "batched step".into(),
                            message: message.clone(),
                        });
                        (t, Err(e))
                    })
                    .collect()
            }
        }
    }

    /// One step: the slow call for every row, then the main tokens, then the fast calls for
    /// every row at once with each row's codebook sampled in between.
    fn step_batch(&self, mut jobs: Vec<Job>, taken: &[bool]) -> Result<Vec<Done>> {
        let mut times = jobs.iter().any(|j| j.timed).then(StageTimes::default);
        let t0 = times.as_ref().map(|_| Instant::now());
        let slow = self.slow_outputs(&mut jobs, taken)?;
        if let (Some(t), Some(t0)) = (times.as_mut(), t0) {
            t.slow += t0.elapsed();
        }
        let rows: Vec<RowSampling<'_>> = jobs
            .iter()
            .map(|j| RowSampling { frame: j.frame, windows: &j.windows, sampling: &j.sampling })
            .collect();
        let mut fast = FastBatch::new(&self.shared, jobs.len())?;
        let frames = sample_frames(
            &self.info,
            &rows,
            slow,
            &mut |hidden, codes| fast.next(hidden, codes),
            times.as_mut(),
        )?;
        let times = times.unwrap_or_default();
        Ok(frames.into_iter().map(|frame| Done { frame, times: times.clone() }).collect())
    }

    /// The slow transformer's output of each job's row: joining rows move their prompt's cache
    /// into their slot and bring the prompt's last output; the others go through one slow call
    /// over every slot up to the last one held.
    fn slow_outputs(&self, jobs: &mut [Job], taken: &[bool]) -> Result<Vec<SlowOutput>> {
        let mut pool = self.pool.lock();
        let rows = taken.iter().rposition(|t| *t).map_or(0, |s| s + 1);
        let needed = jobs
            .iter()
            .map(|j| j.capacity)
            .chain((0..rows).filter(|&s| taken[s]).map(|s| pool.len(s) + 1))
            .max()
            .unwrap_or(1);
        // A request alone adopts its prompt's buffers as the pool: no copy, no second cache
        // (a 4,000-token prompt's cache is 0.9 GB at the S1-mini shapes).
        if pool.rows == 0 && rows == 1 {
            let lone = jobs.iter_mut().find(|j| j.slot == 0).and_then(|j| j.join.as_mut());
            if let Some(join) = lone.filter(|j| j.capacity >= needed) {
                pool.adopt(std::mem::take(&mut join.bufs), join.len, join.capacity)?;
            }
        }
        pool.fit(rows, needed, taken)?;
        for job in jobs.iter_mut() {
            if let Some(join) = job.join.as_mut().filter(|j| !j.bufs.is_empty()) {
                pool.install(job.slot, &join.bufs, join.len, join.capacity)?;
                // The prompt's cache is freed as soon as it is in the pool.
                join.bufs = Vec::new();
            }
        }
        let mut feed: Vec<Option<&[i64]>> = vec![None; rows];
        for job in jobs.iter() {
            if let Some(prev) = &job.prev {
                feed[job.slot] = Some(prev);
            }
        }
        let mut stepped = if feed.iter().any(Option::is_some) {
            pool.run(&self.shared, &feed, taken)?
        } else {
            Vec::new()
        };
        jobs.iter_mut()
            .map(|job| match job.join.take() {
                Some(join) => Ok(join.out),
                None => stepped
                    .get_mut(job.slot)
                    .and_then(Option::take)
                    .ok_or_else(|| Error::Internal("batch: a row without a slow output".into())),
            })
            .collect()
    }
}

/// The fast transformer over a step's rows, all at the same position: its KV cache is the
/// previous call's present (at most `num_codebooks` positions).
struct FastBatch<'a> {
    session: parking_lot::MutexGuard<'a, Session>,
    rows: usize,
    dim: usize,
    logit_rows: usize,
    keys: DynValue,
    values: DynValue,
}

impl<'a> FastBatch<'a> {
    fn new(shared: &'a T2sShared, rows: usize) -> Result<Self> {
        let d = &shared.dims;
        let shape = [d.n_fast_layer, rows, d.fast_n_local_heads, 0, d.fast_head_dim];
        Ok(FastBatch {
            session: shared.fast.lock(),
            rows,
            dim: d.fast_dim,
            logit_rows: shared.fast_rows,
            keys: empty(shape)?,
            values: empty(shape)?,
        })
    }

    /// The next position with each row's hidden state (`[rows × dim]`, used at position 0)
    /// and previous code: logits `[rows × logit_rows]`.
    fn next(&mut self, hidden: &[f32], codes: &[i64]) -> Result<Vec<f32>> {
        let (n, e) = (self.rows, ort_err("fast"));
        let h = TensorRef::from_array_view(([n, self.dim], hidden)).map_err(e)?;
        let c = TensorRef::from_array_view(([n], codes)).map_err(ort_err("fast"))?;
        let mut out = self
            .session
            .run(ort::inputs![
                "hidden" => h,
                "code" => c,
                "past_keys" => &self.keys,
                "past_values" => &self.values,
            ])
            .map_err(ort_err("fast"))?;
        let logits = extract_f32(&out, "logits", "fast")?;
        let keys = take(&mut out, "present_keys", "fast")?;
        let values = take(&mut out, "present_values", "fast")?;
        drop(out);
        if logits.len() != n * self.logit_rows {
            return Err(Error::Backend {
                backend: NAME,
                op: "fast".into(),
                message: format!(
                    "{} logits for {n} rows, the manifest says {} each",
                    logits.len(),
                    self.logit_rows
                ),
            });
        }
        self.keys = keys;
        self.values = values;
        Ok(logits)
    }
}

/// The slots' slow KV caches: per layer one key and one value tensor `[rows, H, capacity, D]`
/// in host memory, bound as both input and output of the slow graph.
struct Pool {
    binding: IoBinding,
    /// key_0, value_0, key_1, ...
    bufs: Vec<DynTensor>,
    rows: usize,
    capacity: usize,
    /// Filled positions of each slot.
    lens: Vec<usize>,
    layers: usize,
    heads: usize,
    head_dim: usize,
    max_capacity: usize,
    tokens_per_row: usize,
    /// Element type of the buffers (the slow graph's cache type).
    float: Float,
}

impl Pool {
    fn new(shared: &T2sShared) -> Result<Pool> {
        let d = &shared.dims;
        let binding = shared.slow.lock().create_binding().map_err(ort_err("batch binding"))?;
        let pool = Pool {
            binding,
            bufs: Vec::new(),
            rows: 0,
            capacity: 0,
            lens: Vec::new(),
            layers: d.n_layer,
            heads: d.n_local_heads,
            head_dim: d.head_dim,
            max_capacity: d.max_seq_len.max(1),
            tokens_per_row: 1 + d.num_codebooks,
            float: shared.cache,
        };
        Ok(pool)
    }

    /// Filled positions of `slot` (0 for a slot the pool does not hold).
    fn len(&self, slot: usize) -> usize {
        self.lens.get(slot).copied().unwrap_or(0)
    }

    /// Frees the buffers (no request holds a slot).
    fn clear(&mut self) {
        // The binding holds the bound buffers too: they are freed only once it lets go.
        self.binding.clear();
        self.bufs.clear();
        self.rows = 0;
        self.capacity = 0;
        self.lens.clear();
    }

    /// Makes the buffers `rows` rows of at least `needed` positions, keeping the filled
    /// positions of the `taken` slots (a copy of them when the layout changes: at joins and
    /// leaves, never per step).
    fn fit(&mut self, rows: usize, needed: usize, taken: &[bool]) -> Result<()> {
        if needed > self.max_capacity {
            return Err(Error::Internal(format!(
                "batch: {needed} positions exceed the model context of {}",
                self.max_capacity
            )));
        }
        if rows == self.rows && needed <= self.capacity {
            return Ok(());
        }
        let capacity = if needed > self.capacity {
            needed.max(self.capacity.saturating_mul(2)).min(self.max_capacity)
        } else {
            self.capacity
        };
        log::debug!(
            "{NAME}: batch cache {} x {} -> {rows} x {capacity} positions",
            self.rows,
            self.capacity
        );
        let (h, d) = (self.heads, self.head_dim);
        let shape = [rows, h, capacity, d];
        let mut bufs = Vec::with_capacity(2 * self.layers);
        for i in 0..2 * self.layers {
            let allocated = DynTensor::new(&Allocator::default(), self.float.element(), shape);
            let mut t = allocated.map_err(|e| Error::Backend {
                backend: NAME,
                op: "batch kv cache".into(),
                message: format!("allocating {rows} x {capacity} positions: {e}"),
            })?;
            if let Some(old) = self.bufs.get(i) {
                for s in 0..rows.min(self.rows) {
                    let len = if taken.get(s) == Some(&true) { self.len(s) } else { 0 };
                    let from = Slot { row: s, capacity: self.capacity };
                    let to = Slot { row: s, capacity };
                    SlotCopy { from, to, heads: h, d, len }.run(self.float, old, &mut t)?;
                }
            }
            bufs.push(t);
        }
        let mut lens = vec![0; rows];
        for (s, l) in lens.iter_mut().enumerate() {
            if taken.get(s) == Some(&true) {
                *l = self.len(s);
            }
        }
        self.bufs = bufs;
        self.rows = rows;
        self.capacity = capacity;
        self.lens = lens;
        self.bind()
    }

    /// Takes a lone request's cache buffers (`[1, H, capacity, D]`) as a one-row pool.
    fn adopt(&mut self, bufs: Vec<DynTensor>, len: usize, capacity: usize) -> Result<()> {
        if bufs.len() != 2 * self.layers {
            return Err(Error::Internal("batch: a prompt cache of another shape".into()));
        }
        self.bufs = bufs;
        self.rows = 1;
        self.capacity = capacity;
        self.lens = vec![len];
        self.bind()
    }

    /// Copies a prompt's cache (buffers `[1, H, src_capacity, D]`, positions `0..len`) into
    /// `slot`.
    fn install(
        &mut self,
        slot: usize,
        src: &[DynTensor],
        len: usize,
        src_capacity: usize,
    ) -> Result<()> {
        let (h, d, cap) = (self.heads, self.head_dim, self.capacity);
        if slot >= self.rows || len >= cap || len > src_capacity || src.len() != self.bufs.len() {
            return Err(Error::Internal(format!(
                "batch: a {len}-position prompt for slot {slot} of {} x {cap}",
                self.rows
            )));
        }
        for (buf, src) in self.bufs.iter_mut().zip(src) {
            if src.shape().iter().product::<i64>() != (h * src_capacity * d) as i64 {
                return Err(Error::Internal("batch: a prompt cache of another shape".into()));
            }
            let from = Slot { row: 0, capacity: src_capacity };
            let to = Slot { row: slot, capacity: cap };
            SlotCopy { from, to, heads: h, d, len }.run(self.float, src, buf)?;
        }
        self.lens[slot] = len;
        Ok(())
    }

    /// Binds every buffer as its layer's past input and present output (the same `OrtValue`).
    fn bind(&mut self) -> Result<()> {
        let (ins, outs) = cache_names(self.layers);
        for ((input, output), buf) in ins.iter().zip(&outs).zip(self.bufs.iter_mut()) {
            self.binding.bind_input(input.as_str(), &*buf).map_err(ort_err("batch: bind"))?;
            self.binding.bind_output(output.as_str(), buf).map_err(ort_err("batch: bind"))?;
        }
        Ok(())
    }

    /// One slow step of every row: `feed[s]` is slot s's token column `[1+K]`, or `None` for
    /// a dummy row (a free slot, or a request without a row in this step). Returns the outputs
    /// of the fed rows; their slots grow by one position.
    fn run(
        &mut self,
        shared: &T2sShared,
        feed: &[Option<&[i64]>],
        taken: &[bool],
    ) -> Result<Vec<Option<SlowOutput>>> {
        let (rows, k1) = (self.rows, self.tokens_per_row);
        let mut tokens = vec![0i64; rows * k1];
        let mut past = vec![0i64; rows];
        for s in 0..rows {
            if let Some(col) = feed.get(s).copied().flatten() {
                if col.len() != k1 {
                    return Err(Error::Internal(format!("batch: a frame of {} tokens", col.len())));
                }
                tokens[s * k1..(s + 1) * k1].copy_from_slice(col);
            }
            // Dummy rows of held slots write their next unfilled position (rewritten by their
            // next real step); free slots write position 0 of nobody's cache.
            past[s] = if taken.get(s) == Some(&true) { self.len(s) as i64 } else { 0 };
        }
        let tokens =
            Tensor::<i64>::from_array(([rows, k1, 1usize], tokens)).map_err(ort_err("slow"))?;
        let past = Tensor::<i64>::from_array(([rows], past)).map_err(ort_err("slow"))?;
        self.binding.bind_input("tokens", &tokens).map_err(ort_err("slow: bind tokens"))?;
        self.binding.bind_input("past_sequence_length", &past).map_err(ort_err("slow: bind"))?;
        // Bound afresh each step: a bound output keeps the shape of its first run, and the
        // number of rows changes as requests join and leave.
        let out_mem = host_memory()?;
        for name in ["logits", "hidden"] {
            self.binding.bind_output_to_device(name, &out_mem).map_err(ort_err("batch: bind"))?;
        }
        let mut session = shared.slow.lock();
        let out = session.run_binding(&self.binding).map_err(ort_err("slow"))?;
        let logits = extract_f32(&out, "logits", "slow")?;
        let hidden = extract_f32(&out, "hidden", "slow")?;
        drop(out);
        let (lr, hr) = (shared.head_rows, shared.dims.fast_dim);
        if logits.len() != rows * lr || hidden.len() != rows * hr {
            return Err(Error::Backend {
                backend: NAME,
                op: "slow".into(),
                message: format!(
                    "logits/hidden have {}/{} values for {rows} rows, the manifest says {lr}/{hr} each",
                    logits.len(),
                    hidden.len()
                ),
            });
        }
        let mut outs = Vec::with_capacity(rows);
        for s in 0..rows {
            if feed.get(s).copied().flatten().is_some() {
                self.lens[s] += 1;
                outs.push(Some(SlowOutput {
                    logits: logits[s * lr..(s + 1) * lr].to_vec(),
                    hidden: hidden[s * hr..(s + 1) * hr].to_vec(),
                }));
            } else {
                outs.push(None);
            }
        }
        Ok(outs)
    }
}

/// Row `row` of a cache buffer laid out `[rows, H, capacity, D]`.
#[derive(Clone, Copy)]
struct Slot {
    row: usize,
    capacity: usize,
}

/// A copy of positions `0..len` of every head of one slot into another slot (buffers
/// `[rows, heads, capacity, d]`).
#[derive(Clone, Copy)]
struct SlotCopy {
    from: Slot,
    to: Slot,
    heads: usize,
    d: usize,
    len: usize,
}

impl SlotCopy {
    /// Copies from `src` into `dst`, both of `float`: one contiguous run per head.
    fn run(self, float: Float, src: &DynTensor, dst: &mut DynTensor) -> Result<()> {
        match float {
            Float::F32 => self.typed::<f32>(src, dst),
            Float::F16 => self.typed::<half::f16>(src, dst),
        }
    }

    fn typed<T: PrimitiveTensorElementType + Copy>(
        self,
        src: &DynTensor,
        dst: &mut DynTensor,
    ) -> Result<()> {
        let (_, src) = src.try_extract_tensor::<T>().map_err(ort_err("batch kv"))?;
        let (_, dst) = dst.try_extract_tensor_mut::<T>().map_err(ort_err("batch kv"))?;
        let (heads, d, len) = (self.heads, self.d, self.len);
        for h in 0..heads {
            let at = ((self.from.row * heads + h) * self.from.capacity) * d;
            let put = ((self.to.row * heads + h) * self.to.capacity) * d;
            dst[put..put + len * d].copy_from_slice(&src[at..at + len * d]);
        }
        Ok(())
    }
}

/// One request's [`FrameStep`] on a batching engine: its prompt in its own cache, then its
/// frames made in the engine's batch.
pub(crate) struct Batched {
    batcher: Arc<Batcher>,
    /// The prompt's cache, until the prefill frame copies it into a slot.
    req: Option<OnnxRequest>,
    prefilled: Option<SlowOutput>,
    slot: Option<usize>,
    capacity: usize,
}

impl Batched {
    pub(crate) fn new(batcher: Arc<Batcher>, req: OnnxRequest, capacity: usize) -> Batched {
        Batched { batcher, req: Some(req), prefilled: None, slot: None, capacity }
    }

    fn req(&mut self) -> Result<&mut OnnxRequest> {
        self.req
            .as_mut()
            .ok_or_else(|| Error::Internal("batch: the prompt after the prefill frame".into()))
    }
}

impl FrameStep for Batched {
    fn prefill(&mut self, tokens: &[i64], t: usize) -> Result<Vec<f32>> {
        let out = self.req()?.slow(tokens, t)?;
        let logits = out.logits.clone();
        self.prefilled = Some(out);
        Ok(logits)
    }

    fn step(&mut self, rows: &mut [StepRow<'_>]) -> Result<()> {
        for row in rows.iter_mut() {
            let info = &self.batcher.info;
            let windows =
                penalty_windows(info, row.history, row.frame, row.sampling.fish_speech_compat);
            let (slot, prev, join) = match (row.frame, self.slot) {
                (0, None) => {
                    let out = self
                        .prefilled
                        .take()
                        .ok_or_else(|| Error::Internal("prefill frame before the prompt".into()))?;
                    let req = self
                        .req
                        .take()
                        .ok_or_else(|| Error::Internal("batch: no prompt cache".into()))?;
                    let (bufs, len, capacity) = req.slow.into_host_buffers()?;
                    let slot = self.batcher.take_slot();
                    self.slot = Some(slot);
                    (slot, None, Some(Join { bufs, len, capacity, out }))
                }
                (f, Some(slot)) if f > 0 => {
                    let prev = row
                        .prev
                        .ok_or_else(|| Error::Internal("decode without a previous frame".into()))?;
                    (slot, Some(prev.to_vec()), None)
                }
                _ => return Err(Error::Internal("batch: frames out of order".into())),
            };
            let done = self.batcher.submit(Job {
                ticket: 0,
                slot,
                frame: row.frame,
                prev,
                join,
                windows,
                sampling: *row.sampling,
                capacity: self.capacity,
                timed: row.profile.is_some(),
            })?;
            if let Some(p) = row.profile.as_deref_mut() {
                p.slow += done.times.slow;
                p.fast += done.times.fast;
                p.sampling += done.times.sampling;
            }
            row.out = done.frame;
        }
        Ok(())
    }

    fn restore_kv(&mut self, snapshot: &KvSnapshot) -> Result<()> {
        self.req()?.restore_kv(snapshot)
    }
}

impl Drop for Batched {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.batcher.leave(slot);
        }
    }
}
