//! [`HostSampled`]: the one adapter that turns a backend computing logits ([`T2sRequest`]:
//! slow and fast transformer calls) into a [`FrameStep`], sampling every token on the CPU by
//! `sampling.rs`. Backends that make whole frames on their device implement [`FrameStep`]
//! themselves and never come here.

use std::sync::Arc;
use std::time::Instant;

use crate::backend::{FrameSampling, FrameStep, KvSnapshot, SlowOutput, StepRow, T2sRequest};
use crate::bundle::BundleInfo;
use crate::error::{Error, Result};
use crate::generate::{Frame, StageTimes};
use crate::sampling::{self, REPETITION_WINDOW_FRAMES};

/// A [`T2sRequest`] driven frame by frame with host sampling (a batch of one request).
pub struct HostSampled {
    req: Box<dyn T2sRequest>,
    info: Arc<BundleInfo>,
    /// The slow output of the prompt's last position, waiting for the prefill frame.
    prefilled: Option<SlowOutput>,
}

/// The decode stage a timed span belongs to.
#[derive(Clone, Copy)]
enum Stage {
    Slow,
    Fast,
    Sampling,
}

/// Stage timings of one row while it is being stepped; `None` = not measured (no clock reads).
struct Clock<'a>(Option<&'a mut StageTimes>);

impl Clock<'_> {
    fn stamp(&self) -> Option<Instant> {
        self.0.as_ref().map(|_| Instant::now())
    }

    fn charge(&mut self, t0: Option<Instant>, stage: Stage) {
        if let (Some(p), Some(t0)) = (self.0.as_deref_mut(), t0) {
            let d = t0.elapsed();
            match stage {
                Stage::Slow => p.slow += d,
                Stage::Fast => p.fast += d,
                Stage::Sampling => p.sampling += d,
            }
        }
    }
}

impl HostSampled {
    /// Wraps one request of a logits backend.
    pub fn new(req: Box<dyn T2sRequest>, info: Arc<BundleInfo>) -> HostSampled {
        HostSampled { req, info, prefilled: None }
    }

    #[cfg(test)]
    fn window(&self, history: &[Frame], d: usize, slot: usize, compat: bool) -> Vec<usize> {
        window(&self.info, history, d, slot, compat)
    }
}

/// One fast-transformer position over a step's rows: `(hidden of every row, each row's code)`
/// → `[rows × logit rows]` logits.
pub(crate) type FastCall<'a> = dyn FnMut(&[f32], &[i64]) -> Result<Vec<f32>> + 'a;

/// How one row of a step is sampled: its frame index, penalty windows (from
/// [`penalty_windows`]) and sampling settings.
pub(crate) struct RowSampling<'a> {
    pub frame: usize,
    pub windows: &'a [Vec<usize>],
    pub sampling: &'a FrameSampling,
}

/// The frames of `rows` from their slow outputs: each row's main token, then the fast
/// transformer over all rows at once (`fast(hidden of every row, each row's code)` →
/// `[rows × fast_logit_rows]` logits, position 0 with code 0, whose logits are discarded, then
/// one call per codebook), each row's codebook sampled between calls. The one place a frame is
/// sampled on the host: [`HostSampled`] calls it with one row, the CPU batch with many.
pub(crate) fn sample_frames(
    info: &BundleInfo,
    rows: &[RowSampling<'_>],
    slow: Vec<SlowOutput>,
    fast: &mut FastCall<'_>,
    times: Option<&mut StageTimes>,
) -> Result<Vec<Frame>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let mut clock = Clock(times);
    let t0 = clock.stamp();
    let mut frames: Vec<Frame> = Vec::with_capacity(rows.len());
    let mut hidden = Vec::with_capacity(slow.iter().map(|o| o.hidden.len()).sum());
    for (row, out) in rows.iter().zip(slow) {
        let (main_id, c0) =
            sample_main(info, out.logits, &row.windows[0], row.sampling, frame_u32(row.frame)?);
        let mut frame = Vec::with_capacity(info.model.num_codebooks + 1);
        frame.push(main_id);
        frame.push(c0);
        frames.push(frame);
        hidden.extend_from_slice(&out.hidden);
    }
    clock.charge(t0, Stage::Sampling);

    let t0 = clock.stamp();
    fast(&hidden, &vec![0; rows.len()])?;
    clock.charge(t0, Stage::Fast);
    for k in 1..info.model.num_codebooks {
        let t0 = clock.stamp();
        let codes: Vec<i64> = frames.iter().map(|f| f[k]).collect();
        let logits = fast(&hidden, &codes)?;
        clock.charge(t0, Stage::Fast);
        // Each row's share is its logits; sample_code uses the first fast_logit_rows of them
        // (the backends check their own lengths against the manifest).
        if logits.is_empty() || logits.len() % rows.len() != 0 {
            return Err(Error::Internal(format!(
                "fast: {} logits do not split into {} rows",
                logits.len(),
                rows.len()
            )));
        }
        let t0 = clock.stamp();
        let per_row = logits.len() / rows.len();
        for ((row, frame), l) in rows.iter().zip(frames.iter_mut()).zip(logits.chunks(per_row)) {
            let f = frame_u32(row.frame)?;
            frame.push(sample_code(info, l.to_vec(), &row.windows[k], row.sampling, f, k));
        }
        clock.charge(t0, Stage::Sampling);
    }
    Ok(frames)
}

/// Frame index f as the RNG's frame counter.
pub(crate) fn frame_u32(frame: usize) -> Result<u32> {
    u32::try_from(frame).map_err(|_| Error::Internal("frame index overflow".into()))
}

/// Maps a token id to its row in the restricted head; `None` outside the head.
fn head_index(info: &BundleInfo, id: i64) -> Option<usize> {
    let t = &info.tokens;
    if id >= i64::from(t.semantic_begin) && id <= i64::from(t.semantic_end) {
        Some((id - i64::from(t.semantic_begin)) as usize)
    } else if id == i64::from(t.im_end) {
        Some(info.im_end_index)
    } else {
        None
    }
}

/// Penalty indices of slot `slot` (0 = main head, k = codebook k) for decoded frame `d`
/// (fish-speech `decode_n_tokens`): columns 0..16 of a zero-initialised history while
/// d < 16, else d-16..d.
fn window(info: &BundleInfo, history: &[Frame], d: usize, slot: usize, compat: bool) -> Vec<usize> {
    let k = info.model.num_codebooks;
    let zero_col = vec![0i64; k + 1];
    let first = d.saturating_sub(REPETITION_WINDOW_FRAMES);
    let col = |j: usize| history.get(first + j).unwrap_or(&zero_col);
    if slot == 0 {
        if compat {
            // fish-speech's `previous_tokens[:, 0]`: the first column's 11 values read as ids.
            col(0).iter().filter_map(|&v| head_index(info, v)).collect()
        } else {
            (0..REPETITION_WINDOW_FRAMES).filter_map(|j| head_index(info, col(j)[0])).collect()
        }
    } else {
        (0..REPETITION_WINDOW_FRAMES)
            .filter_map(|j| usize::try_from(col(j)[slot + 1]).ok())
            .collect()
    }
}

/// The penalty windows of every slot (main head, codebooks 1..K-1) of frame `frame`, all
/// known before the frame is made: they depend on earlier frames only. The prefill frame
/// (f = 0) has no penalty (empty windows).
pub(crate) fn penalty_windows(
    info: &BundleInfo,
    history: &[Frame],
    frame: usize,
    compat: bool,
) -> Vec<Vec<usize>> {
    let k_books = info.model.num_codebooks;
    match frame.checked_sub(1) {
        None => vec![Vec::new(); k_books],
        Some(d) => (0..k_books).map(|slot| window(info, history, d, slot, compat)).collect(),
    }
}

/// Samples the main token from the slow head's logits: `(main id, c0)`. Only the semantic
/// rows and `<|im_end|>` may win, whatever else the head holds (`<|im_end|>` neither, when a
/// benchmark asks for a fixed frame count).
pub(crate) fn sample_main(
    info: &BundleInfo,
    mut logits: Vec<f32>,
    window: &[usize],
    s: &FrameSampling,
    frame: u32,
) -> (i64, i64) {
    let keep_end = !s.ignore_end;
    let keep = |i: usize| i < info.semantic_rows || (keep_end && i == info.im_end_index);
    for (i, v) in logits.iter_mut().enumerate() {
        if !keep(i) {
            *v = f32::NEG_INFINITY;
        }
    }
    let head = sampling::sample(&mut logits, window, s.params, s.seed, frame, 0);
    if head == info.im_end_index {
        // fish-speech clamps the negative code of a non-semantic token to 0.
        (i64::from(info.tokens.im_end), 0)
    } else {
        (i64::from(info.tokens.semantic_begin) + head as i64, head as i64)
    }
}

/// Samples codebook `k` (1..K-1) from the fast transformer's logits (the first
/// `fast_logit_rows` are used, as fish-speech does).
pub(crate) fn sample_code(
    info: &BundleInfo,
    mut logits: Vec<f32>,
    window: &[usize],
    s: &FrameSampling,
    frame: u32,
    k: usize,
) -> i64 {
    logits.truncate(info.fast_logit_rows);
    sampling::sample(&mut logits, window, s.params, s.seed, frame, k as u32) as i64
}

impl FrameStep for HostSampled {
    fn prefill(&mut self, tokens: &[i64], t: usize) -> Result<Vec<f32>> {
        let out = self.req.slow(tokens, t)?;
        let logits = out.logits.clone();
        self.prefilled = Some(out);
        Ok(logits)
    }

    fn step(&mut self, rows: &mut [StepRow<'_>]) -> Result<()> {
        for row in rows.iter_mut() {
            let mut clock = Clock(row.profile.take());
            let slow = match (row.frame, self.prefilled.take()) {
                (0, Some(out)) => out,
                (0, None) => return Err(Error::Internal("prefill frame before the prompt".into())),
                (_, _) => {
                    let prev = row
                        .prev
                        .ok_or_else(|| Error::Internal("decode without a previous frame".into()))?;
                    let t0 = clock.stamp();
                    // prev: [1+K] → tokens [1+K, 1]
                    let out = self.req.slow(prev, 1)?;
                    clock.charge(t0, Stage::Slow);
                    out
                }
            };
            let info = &self.info;
            let windows =
                penalty_windows(info, row.history, row.frame, row.sampling.fish_speech_compat);
            let rs = [RowSampling { frame: row.frame, windows: &windows, sampling: row.sampling }];
            let t0 = clock.stamp();
            self.req.fast_reset()?;
            clock.charge(t0, Stage::Fast);
            let req = &mut self.req;
            let mut fast = |hidden: &[f32], codes: &[i64]| req.fast(hidden, codes[0]);
            let [frame] = <[Frame; 1]>::try_from(sample_frames(
                info,
                &rs,
                vec![slow],
                &mut fast,
                clock.0.as_deref_mut(),
            )?)
            .map_err(|_| Error::Internal("host sampling: one row in, not one frame out".into()))?;
            row.out = frame;
        }
        Ok(())
    }

    fn restore_kv(&mut self, snapshot: &KvSnapshot) -> Result<()> {
        self.req.restore_kv(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEM_BEGIN: u32 = 100;

    /// A request that is never called: the windows need only the bundle facts.
    struct NoCalls;
    impl T2sRequest for NoCalls {
        fn slow(&mut self, _tokens: &[i64], _t: usize) -> Result<SlowOutput> {
            Err(Error::Internal("not called".into()))
        }
        fn fast_reset(&mut self) -> Result<()> {
            Err(Error::Internal("not called".into()))
        }
        fn fast(&mut self, _hidden: &[f32], _code: i64) -> Result<Vec<f32>> {
            Err(Error::Internal("not called".into()))
        }
        fn kv_len(&self) -> usize {
            0
        }
    }

    /// `BundleInfo::for_tests`: K = 3 codebooks, semantic rows 100..110, <|im_end|> = 50.
    fn host() -> HostSampled {
        HostSampled::new(Box::new(NoCalls), Arc::new(BundleInfo::for_tests()))
    }

    #[test]
    fn penalty_window_zero_padded_while_short() {
        let g = host();
        let history = vec![vec![103, 3, 4, 5]];
        // Main token: row 0 → head index 3; the zero padding (id 0) is outside the head.
        assert_eq!(g.window(&history, 1, 0, false), vec![3]);
        // Codebook 1 (row 2): the decoded frame's 4, then 15 zero-padding columns (code 0).
        let w = g.window(&history, 1, 1, false);
        assert_eq!(w.len(), 16);
        assert_eq!(w[0], 4);
        assert!(w[1..].iter().all(|&c| c == 0));
    }

    #[test]
    fn penalty_window_slides_after_sixteen_frames() {
        let history: Vec<Frame> =
            (0..20).map(|i| vec![i64::from(SEM_BEGIN) + i % 10, i % 10, i, 7]).collect();
        let g = host();
        // d = 18: columns 2..18.
        let w = g.window(&history, 18, 1, false);
        assert_eq!(w, (2..18).collect::<Vec<usize>>());
        assert_eq!(
            g.window(&history, 18, 0, false),
            (2..18).map(|i| i % 10).collect::<Vec<usize>>()
        );
    }

    #[test]
    fn penalty_compat_mode_reads_first_column_as_ids() {
        // fish-speech's bug: previous_tokens[:, 0] = (main id, c0, c1, c2) of the window's first
        // column, read as token ids. Codes are small ids outside the head, so only the first
        // column's main token is penalised, not the window's row 0.
        let history: Vec<Frame> =
            (0..20).map(|i| vec![i64::from(SEM_BEGIN) + i % 10, i % 10, 1, 2]).collect();
        let h = host();
        assert_eq!(h.window(&history, 18, 0, true), vec![2]); // column 2 → head index 2 only
        assert_eq!(h.window(&history, 18, 0, false).len(), 16);
        // Codebooks are the same in both modes.
        assert_eq!(h.window(&history, 18, 2, true), h.window(&history, 18, 2, false));
    }
}
