//! fish-speech sampling as pure functions over `&[f32]` logits, plus the counter-based RNG.
//!
//! The algorithm and the RNG are fixed by `docs/bundle-format.md` ("Sampling and the RNG") so that
//! every backend and the Python golden script draw the same tokens for the same seed:
//! repetition penalty → top-p on the un-tempered softmax → temperature → softmax → exponential
//! race `argmax p_i / q_i` with `q_i = -ln(u_i)` and `u_i` from Philox4x32-10.

/// Philox4x32 multipliers and Weyl key increments (Salmon et al., Random123).
const PHILOX_M0: u32 = 0xD251_1F53;
const PHILOX_M1: u32 = 0xCD9E_8D57;
const PHILOX_W0: u32 = 0x9E37_79B9;
const PHILOX_W1: u32 = 0xBB67_AE85;

/// Width of the repetition window, in frames (fish-speech `win_size`).
pub const REPETITION_WINDOW_FRAMES: usize = 16;

/// Smallest temperature divided by (fish-speech clamps with `torch.clip(min=1e-5)`).
const MIN_TEMPERATURE: f32 = 1e-5;

/// One Philox4x32-10 block: 10 rounds over a 128-bit counter with a 64-bit key.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(PHILOX_W0);
            k[1] = k[1].wrapping_add(PHILOX_W1);
        }
        let p0 = u64::from(PHILOX_M0) * u64::from(c[0]);
        let p1 = u64::from(PHILOX_M1) * u64::from(c[2]);
        let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
        let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

/// The uniform draw `u_i` in (0, 1] of vocabulary index `index` at frame `frame`, slot `slot`.
///
/// key = (seed low, seed high), counter = (index, frame, slot, 0), first output word `x`,
/// `u = ((x >> 8) + 0.5) / 2^24` computed in f32 (so the largest `x` rounds to exactly 1.0, as
/// it does in the reference).
#[inline]
pub fn uniform(seed: u64, index: u32, frame: u32, slot: u32) -> f32 {
    let key = [seed as u32, (seed >> 32) as u32];
    let x = philox4x32_10([index, frame, slot, 0], key)[0];
    ((x >> 8) as f32 + 0.5) / 16_777_216.0
}

/// Rounds an f32 to the nearest bfloat16 value (ties to even), returned as f32.
///
/// fish-speech's `generate()` holds temperature/top_p/penalty in bf16 tensors.
pub fn round_bf16(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    let bits = x.to_bits();
    let lsb = (bits >> 16) & 1;
    let rounded = bits.wrapping_add(0x7FFF + lsb) & 0xFFFF_0000;
    f32::from_bits(rounded)
}

/// The scalar knobs of one sampling event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    /// 0 = greedy.
    pub temperature: f32,
    /// Nucleus mass in (0, 1].
    pub top_p: f32,
    /// Repetition penalty; 1 = none.
    pub repetition_penalty: f32,
}

impl SamplingParams {
    /// The values fish-speech actually uses when it stores them as bf16 (compat mode).
    pub fn rounded_to_bf16(self) -> Self {
        Self {
            temperature: round_bf16(self.temperature),
            top_p: round_bf16(self.top_p),
            repetition_penalty: round_bf16(self.repetition_penalty),
        }
    }
}

/// Applies the repetition penalty in place to each *distinct* index in `window`.
///
/// Like torch's gather/scatter, a repeated index is penalised once. Indices outside `logits`
/// are ignored (the main-token window may hold ids outside the restricted head).
pub fn apply_repetition_penalty(logits: &mut [f32], window: &[usize], penalty: f32) {
    if penalty == 1.0 {
        return;
    }
    let mut seen: Vec<usize> = window.iter().copied().filter(|&i| i < logits.len()).collect();
    seen.sort_unstable();
    seen.dedup();
    for i in seen {
        let v = logits[i];
        // fish-speech: torch.where(score < 0, score * rp, score / rp)
        logits[i] = if v < 0.0 { v * penalty } else { v / penalty };
    }
}

/// Index of the largest value, ties to the lowest index; NaN never wins.
pub fn argmax(values: &[f32]) -> usize {
    let mut best = 0usize;
    let mut best_v = f32::NEG_INFINITY;
    let mut found = false;
    for (i, &v) in values.iter().enumerate() {
        if v.is_nan() {
            continue;
        }
        if !found || v > best_v {
            best = i;
            best_v = v;
            found = true;
        }
    }
    best
}

/// Softmax in place over `x` (f32, max-subtracted, multiplied by 1/sum as torch's CPU kernel).
fn softmax_in_place(x: &mut [f32]) {
    let max = x.iter().copied().filter(|v| !v.is_nan()).fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return;
    }
    let mut sum = 0.0f32;
    for v in x.iter_mut() {
        *v = if v.is_nan() { 0.0 } else { (*v - max).exp() };
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// Masks to `-inf` every logit outside the top-p nucleus of the (un-tempered) softmax.
///
/// Sorted descending (ties by lower index), cumulative probabilities are accumulated in f64 and
/// rounded to f32 per element as torch's CPU `cumsum` does; a position is dropped where the
/// cumulative sum exceeds `top_p`; the first (largest) is always kept.
pub fn apply_top_p(logits: &mut [f32], top_p: f32) {
    if logits.is_empty() {
        return;
    }
    let mut order: Vec<usize> = (0..logits.len()).collect();
    // NaN sorts last so that it is dropped first.
    order.sort_by(|&a, &b| {
        let (x, y) = (logits[a], logits[b]);
        match (x.is_nan(), y.is_nan()) {
            (true, true) => a.cmp(&b),
            (true, false) => std::cmp::Ordering::Greater,
            (false, true) => std::cmp::Ordering::Less,
            _ => y.partial_cmp(&x).unwrap_or(std::cmp::Ordering::Equal).then(a.cmp(&b)),
        }
    });
    let mut probs: Vec<f32> = order.iter().map(|&i| logits[i]).collect();
    softmax_in_place(&mut probs);
    let mut cum = 0.0f64;
    for (rank, &i) in order.iter().enumerate() {
        cum += f64::from(probs[rank]);
        if rank > 0 && (cum as f32) > top_p {
            logits[i] = f32::NEG_INFINITY;
        }
    }
}

/// Draws one index from `logits` (already penalised) with fish-speech's top-p/temperature and
/// the Philox exponential race; `temperature == 0` is greedy.
///
/// `frame` and `slot` select the RNG stream (contract: frame 0 = prefill frame, slot 0 = slow
/// head, slot k = codebook k). `logits` is consumed as scratch space.
pub fn sample_penalised(
    logits: &mut [f32],
    params: SamplingParams,
    seed: u64,
    frame: u32,
    slot: u32,
) -> usize {
    if params.temperature == 0.0 {
        return argmax(logits);
    }
    apply_top_p(logits, params.top_p);
    let t = params.temperature.max(MIN_TEMPERATURE);
    for v in logits.iter_mut() {
        *v /= t;
    }
    softmax_in_place(logits);
    // Exponential race: argmax p_i / q_i, q_i = -ln(u_i). Removed entries have p = 0 and so a
    // ratio of 0 (or -0), which the strict `>` below never prefers over an earlier index.
    let mut best = 0usize;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &p) in logits.iter().enumerate() {
        let ratio = if p > 0.0 {
            let q = -uniform(seed, i as u32, frame, slot).ln();
            p / q
        } else {
            0.0
        };
        if ratio > best_v {
            best_v = ratio;
            best = i;
        }
    }
    best
}

/// Penalises `logits` over `window` and draws one index (see [`sample_penalised`]).
pub fn sample(
    logits: &mut [f32],
    window: &[usize],
    params: SamplingParams,
    seed: u64,
    frame: u32,
    slot: u32,
) -> usize {
    apply_repetition_penalty(logits, window, params.repetition_penalty);
    sample_penalised(logits, params, seed, frame, slot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn philox_matches_random123_known_answers() {
        assert_eq!(
            philox4x32_10([0, 0, 0, 0], [0, 0]),
            [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]
        );
        // Random123 kat_vectors: philox4x32 10, all-ones counter and key.
        assert_eq!(
            philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd]
        );
        // Random123 kat_vectors: pi digits.
        assert_eq!(
            philox4x32_10(
                [0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344],
                [0xa409_3822, 0x299f_31d0]
            ),
            [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1]
        );
    }

    #[test]
    fn uniform_is_in_open_unit_interval() {
        for i in 0..2000 {
            let u = uniform(1234, i, 3, 1);
            assert!(u > 0.0 && u <= 1.0);
        }
        assert_ne!(uniform(1, 0, 0, 0), uniform(2, 0, 0, 0));
        assert_ne!(uniform(1, 0, 0, 0), uniform(1 << 32, 0, 0, 0));
    }

    #[test]
    fn bf16_rounding_matches_torch() {
        assert_eq!(round_bf16(0.8), 0.80078125);
        assert_eq!(round_bf16(1.1), 1.1015625);
        assert_eq!(round_bf16(0.7), 0.69921875);
        assert_eq!(round_bf16(1.0), 1.0);
    }

    #[test]
    fn sampling_temperature_zero_is_argmax() {
        let mut l = vec![0.1, 3.0, -1.0, 2.9];
        let p = SamplingParams { temperature: 0.0, top_p: 0.8, repetition_penalty: 1.0 };
        assert_eq!(sample(&mut l, &[], p, 7, 0, 0), 1);
    }

    #[test]
    fn sampling_tiny_top_p_keeps_only_the_best() {
        let p = SamplingParams { temperature: 1.0, top_p: 1e-6, repetition_penalty: 1.0 };
        for seed in 0..50 {
            let mut l = vec![0.5, 1.0, 0.9, -2.0];
            assert_eq!(sample(&mut l, &[], p, seed, 1, 2), 1);
        }
    }

    #[test]
    fn sampling_top_p_keeps_at_least_one() {
        let mut l = vec![10.0, 0.0, 0.0];
        apply_top_p(&mut l, 0.01);
        assert_eq!(l[0], 10.0);
        assert!(l[1].is_infinite() && l[2].is_infinite());
    }

    #[test]
    fn sampling_top_p_one_keeps_all_finite() {
        let mut l = vec![1.0, 2.0, 3.0];
        apply_top_p(&mut l, 1.0);
        assert!(l.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn sampling_penalty_divides_positive_multiplies_negative_once() {
        let mut l = vec![2.0, -2.0, 1.0];
        apply_repetition_penalty(&mut l, &[0, 1, 0, 0, 7], 2.0);
        assert_eq!(l, vec![1.0, -4.0, 1.0]);
    }

    #[test]
    fn sampling_penalty_can_flip_greedy_choice() {
        let p = SamplingParams { temperature: 0.0, top_p: 1.0, repetition_penalty: 1.5 };
        let mut l = vec![3.0, 2.5];
        assert_eq!(sample(&mut l, &[0], p, 0, 0, 0), 1);
    }

    #[test]
    fn sampling_nan_logits_never_win() {
        let mut l = vec![f32::NAN, 0.5, f32::NAN];
        assert_eq!(argmax(&l), 1);
        let p = SamplingParams { temperature: 0.9, top_p: 0.95, repetition_penalty: 1.0 };
        for seed in 0..20 {
            l = vec![f32::NAN, 0.5, f32::NAN, 0.4];
            let i = sample(&mut l, &[], p, seed, 0, 0);
            assert!(i == 1 || i == 3, "{i}");
        }
    }

    #[test]
    fn sampling_is_deterministic_per_seed_and_varies_across_seeds() {
        let p = SamplingParams { temperature: 1.0, top_p: 1.0, repetition_penalty: 1.0 };
        let base: Vec<f32> = (0..64).map(|i| ((i * 37) % 11) as f32 * 0.1).collect();
        let draw = |seed| sample(&mut base.clone(), &[], p, seed, 5, 3);
        assert_eq!(draw(42), draw(42));
        let distinct: std::collections::HashSet<usize> = (0..40).map(draw).collect();
        assert!(distinct.len() > 5);
    }

    #[test]
    fn sampling_frequencies_follow_probabilities() {
        // Two tokens with p = 0.75 / 0.25: the exponential race must reproduce the ratio.
        let p = SamplingParams { temperature: 1.0, top_p: 1.0, repetition_penalty: 1.0 };
        let l = [3f32.ln(), 0.0];
        let n = 4000;
        let zeros = (0..n).filter(|&f| sample(&mut l.to_vec(), &[], p, 9, f, 0) == 0).count();
        let frac = zeros as f64 / n as f64;
        assert!((frac - 0.75).abs() < 0.03, "{frac}");
    }
}
