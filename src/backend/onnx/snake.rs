//! onnx-cpu's own kernel for the codec's Snake activation, `x + sin²(αx) / α` per channel.
//!
//! The exporter writes each Snake as one node `ai.s1mini.Snake(x, alpha, inv_alpha)` whose
//! ONNX function body is the standard graph (Mul, Sin, Mul, Mul, Add:
//! tools/export/s1mini_export/snake.py), so any ONNX Runtime runs the bundle by inlining it.
//! This engine registers a kernel under that domain and name; ONNX Runtime then keeps the node
//! and calls the kernel instead of inlining. Why: inlined, Snake is five passes over memory and
//! ONNX Runtime's `Sin` runs at scalar speed; the five were a quarter of the real-shape
//! codec's CPU time, and up to 40 % once the convolutions are int8 (docs/rust-core.md "Codec speed").
//! Here it is one pass, with a polynomial sine the compiler vectorises.
//!
//! Semantics are the body's, in its order of float operations: `z = x·α` (f32),
//! `y = x + inv_alpha · (sin z)²`, with `α`, `inv_alpha` one value per channel of `x`
//! `[B, C, T]`. `sin z` is computed to within about 2 ulp (reduction in f64, a degree-11
//! polynomial on `[-π/2, π/2]`); huge or non-finite `z` take the C library's `sin`.
//!
//! Hand-written because the alternative is five standard operators; no crate provides ONNX
//! Runtime kernels.

use ort::operator::{
    BoxedKernel, ComputeContext, KernelContext, Operator, OperatorDomain, OperatorInput,
    OperatorOutput,
};
use ort::value::TensorElementType;

use super::shared_out::SharedOut;
use crate::error::{Error, Result};

/// The exporter's operator domain (snake.py `DOMAIN`).
pub(crate) const DOMAIN: &str = "ai.s1mini";
const OP: &str = "Snake";

/// The operator domain to register on a codec session.
pub(crate) fn operators() -> Result<OperatorDomain> {
    let e = |e: ort::Error| Error::Internal(format!("registering the Snake kernel: {e}"));
    OperatorDomain::new(DOMAIN).map_err(e)?.add(Snake).map_err(e)
}

struct Snake;

impl Operator for Snake {
    type Kernel<'attr> = BoxedKernel<'attr>;

    fn name(&self) -> &str {
        OP
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        // x [B, C, T], alpha and inv_alpha of C values each ([1, C, 1] in the graphs)
        [TensorElementType::Float32; 3].map(OperatorInput::required)
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        [OperatorOutput::required(TensorElementType::Float32)]
    }

    fn create_kernel<'attr>(
        &self,
        _info: &KernelContext<'attr>,
    ) -> ort::Result<Self::Kernel<'attr>> {
        Ok(Box::new(compute))
    }
}

fn bad(message: String) -> ort::Error {
    ort::Error::new(format!("{DOMAIN}.{OP}: {message}"))
}

/// Calls of this kernel (tests: proof that a session runs it).
#[cfg(test)]
pub(crate) static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Rows (channels of one batch item) per parallel task: a codec row is 344–32,768 samples,
/// so a task is at least tens of microseconds of work.
const ROWS_PER_TASK: usize = 8;

fn compute(ctx: &ComputeContext) -> ort::Result<()> {
    #[cfg(test)]
    CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let input = |i: usize| ctx.input(i)?.ok_or_else(|| bad(format!("input {i} missing")));
    let (x_in, a_in, inv_in) = (input(0)?, input(1)?, input(2)?);
    let (x_shape, x) = x_in.try_extract_tensor::<f32>()?;
    let (_, alpha) = a_in.try_extract_tensor::<f32>()?;
    let (_, inv) = inv_in.try_extract_tensor::<f32>()?;
    let &[b, c, t] = &x_shape[..] else {
        return Err(bad(format!("x is {x_shape:?}, want [B, C, T]")));
    };
    let (b, c, t) = (b as usize, c as usize, t as usize);
    if alpha.len() != c || inv.len() != c {
        return Err(bad(format!(
            "alpha has {} and inv_alpha {} values for {c} channels",
            alpha.len(),
            inv.len()
        )));
    }
    let shape = x_shape.to_vec();
    let mut y_out = ctx.output(0, shape)?.ok_or_else(|| bad("no output".into()))?;
    let (_, y) = y_out.try_extract_tensor_mut::<f32>()?;
    let rows = b * c;
    if rows == 0 || t == 0 {
        return Ok(());
    }
    let y_at = SharedOut::new(y);
    let tasks = rows.div_ceil(ROWS_PER_TASK);
    ctx.par_for(tasks, tasks, |task| {
        let first = task * ROWS_PER_TASK;
        let last = (first + ROWS_PER_TASK).min(rows);
        // SAFETY: task `task` writes rows first..last only, which no other task writes; `y`
        // outlives par_for, which returns after every task.
        let (at, len) = y_at.parts();
        let y = unsafe { std::slice::from_raw_parts_mut(at, len) };
        for row in first..last {
            let span = row * t..(row + 1) * t;
            let ch = row % c;
            snake(&x[span.clone()], alpha[ch], inv[ch], &mut y[span]);
        }
    })
}

/// `y[i] = x[i] + inv · sin²(α · x[i])` for one channel.
pub(crate) fn snake(x: &[f32], alpha: f32, inv: f32, y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked).
            return unsafe { snake_avx512(x, alpha, inv, y) };
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA (checked).
            return unsafe { snake_avx2(x, alpha, inv, y) };
        }
    }
    snake_rows(x, alpha, inv, y)
}

/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn snake_avx512(x: &[f32], alpha: f32, inv: f32, y: &mut [f32]) {
    snake_rows(x, alpha, inv, y)
}

/// # Safety
/// The CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn snake_avx2(x: &[f32], alpha: f32, inv: f32, y: &mut [f32]) {
    snake_rows(x, alpha, inv, y)
}

/// Beyond this |αx| the f64 reduction's rounding constant no longer rounds to an integer
/// multiple of π exactly enough; such inputs (and NaN, ±∞) take the library `sin`.
const FAST_LIMIT: f32 = 1.0e9;

/// False for |z| ≥ [`FAST_LIMIT`] and for NaN.
#[inline(always)]
fn in_fast_range(z: f32) -> bool {
    z.abs() < FAST_LIMIT
}

#[inline(always)]
fn snake_rows(x: &[f32], alpha: f32, inv: f32, y: &mut [f32]) {
    let mut slow = false;
    for (yi, &xi) in y.iter_mut().zip(x) {
        let z = xi * alpha;
        let s = sin_reduced(z);
        slow |= !in_fast_range(z);
        *yi = xi + inv * (s * s);
    }
    // A separate pass, so that the loop above has no branch and vectorises.
    if slow {
        for (yi, &xi) in y.iter_mut().zip(x) {
            let z = xi * alpha;
            if !in_fast_range(z) {
                let s = z.sin();
                *yi = xi + inv * (s * s);
            }
        }
    }
}

/// `±sin z` for |z| < [`FAST_LIMIT`] (the sign is lost: Snake squares it). sin² has period π,
/// so `z` is reduced to `r = z − kπ` in `[-π/2, π/2]` in f64 (exact enough for |k| < 2^30),
/// and `sin r` is its Taylor polynomial to degree 11 (truncation < 6e-8 there).
#[inline(always)]
fn sin_reduced(z: f32) -> f32 {
    const ROUND: f64 = 6_755_399_441_055_744.0; // 1.5 * 2^52: adding it rounds to an integer
    let zd = f64::from(z);
    let k = (zd * std::f64::consts::FRAC_1_PI + ROUND) - ROUND;
    let r = (zd - k * std::f64::consts::PI) as f32;
    let r2 = r * r;
    const C: [f32; 5] =
        [-1.0 / 39_916_800.0, 1.0 / 362_880.0, -1.0 / 5_040.0, 1.0 / 120.0, -1.0 / 6.0];
    let p = C.iter().fold(0.0, |acc, c| acc * r2 + c);
    r + r * (r2 * p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(x: f32, alpha: f32, inv: f32) -> f32 {
        let s = (f64::from(x * alpha)).sin() as f32;
        x + inv * (s * s)
    }

    #[test]
    fn sine_is_within_a_few_ulp_of_the_library_one() {
        let mut worst = 0.0f64;
        for i in -200_000..200_000 {
            let z = i as f32 * 1.37e-3 + (i as f32 * 0.618).fract();
            let (ours, want) = (f64::from(sin_reduced(z)).abs(), f64::from(z).sin().abs());
            worst = worst.max((ours - want).abs());
        }
        // absolute error, since sin z goes through 0: 2 ulp of 1
        assert!(worst < 2.5e-7, "worst absolute error {worst:e}");
    }

    #[test]
    fn snake_equals_the_graph_it_replaces() {
        let x: Vec<f32> = (0..1003).map(|i| ((i * 7919) % 2003) as f32 / 100.0 - 10.0).collect();
        for (alpha, inv) in [(1.0, 1.0), (0.37, 1.0 / 0.37), (12.5, 0.08), (1e-3, 1e3)] {
            let mut y = vec![0.0; x.len()];
            snake(&x, alpha, inv, &mut y);
            for (i, (&xi, &yi)) in x.iter().zip(&y).enumerate() {
                let want = reference(xi, alpha, inv);
                let tol = 4e-7 * (1.0 + inv.abs()) * (1.0 + want.abs());
                assert!((yi - want).abs() <= tol, "alpha {alpha}, x[{i}] = {xi}: {yi} vs {want}");
            }
        }
    }

    #[test]
    fn huge_and_non_finite_inputs_take_the_library_sine() {
        let x = [3.0e9, -7.5e12, f32::INFINITY, f32::NAN, 0.5, f32::MAX];
        let mut y = [0.0; 6];
        snake(&x, 1.0, 1.0, &mut y);
        for (i, (&xi, &yi)) in x.iter().zip(&y).enumerate().take(2) {
            assert_eq!(yi, reference(xi, 1.0, 1.0), "x[{i}]");
        }
        assert!(y[2].is_nan() && y[3].is_nan(), "{y:?}");
        assert!((y[4] - reference(0.5, 1.0, 1.0)).abs() < 1e-7);
        assert_eq!(y[5], reference(f32::MAX, 1.0, 1.0));
    }
}
