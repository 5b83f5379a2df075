//! The DualAR transformer on a GPU execution provider (CUDA or TensorRT) with IO binding: the
//! KV caches stay in device memory for the whole request.
//!
//! Per slow call the host sends the token ids (`[1, 1+K, T]` i64) and the past length (one
//! i64) and receives the restricted head logits and the hidden state (`[1, fast_dim]`, which the
//! frame loop passes to the fast transformer through the `T2sRequest` trait); per fast call it
//! sends the previous code (one i64) and receives the fast logits.
//! The slow cache is one device buffer per layer for keys and values, bound as both `past_*_i`
//! and `present_*_i` ([`super::kv::SlowKv`], allocated by the provider's device allocator), so
//! GroupQueryAttention writes each step's position in place on the device. The fast cache's
//! `present_*` outputs are bound to device memory and fed back as the next call's `past_*`.
//!
//! The format-2 slow graph on the device is NOT RUN: no GPU was available when it was written
//! (the format-1 path ran on an H200). It compiles against ort 2.0.0-rc.15 and runs, through
//! the same binding code, on the CPU provider in the tests below (see `docs/gpu-onnx.md`).

use std::sync::Arc;

use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::{IoBinding, Session, SessionOutputs};
use ort::value::{DynTensor, DynValue, Tensor, TensorElementType};
use parking_lot::Mutex;

use super::super::{SlowOutput, T2sRequest, Text2Semantic};
use super::kv::{SlowKv, DEFAULT_CAPACITY};
use crate::bundle::ModelDims;
use crate::error::{Error, Result};

/// Where each input and output of the two graphs lives, per call: the binding plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    /// Copied from host memory by ONNX Runtime at bind time (small: ids, one code).
    HostIn,
    /// Already on the device (a previous call's output).
    DeviceIn,
    /// Written to host memory (read by the sampler).
    HostOut,
    /// Left in device memory (the next call's input).
    DeviceOut,
}

/// `(name, place)` for every input and output of `slow.onnx`.
/// (The binding itself is [`SlowKv`]'s; this table is what the tests hold it to.)
/// `past_*` / `present_*` stand for every layer's `past_key_i`, `past_value_i`, `present_key_i`,
/// `present_value_i`: one device buffer each pair, bound once per request (in place).
#[cfg(test)]
pub(crate) const SLOW_PLAN: [(&str, Place); 8] = [
    ("tokens", Place::HostIn),
    ("past_sequence_length", Place::HostIn),
    ("past_key_i", Place::DeviceIn),
    ("past_value_i", Place::DeviceIn),
    ("logits", Place::HostOut),
    ("hidden", Place::HostOut),
    ("present_key_i", Place::DeviceOut),
    ("present_value_i", Place::DeviceOut),
];

/// `(name, place)` for every input and output of `fast.onnx`. `hidden` is uploaded once per
/// frame (position 0) and stays bound for positions 1..K−1.
pub(crate) const FAST_PLAN: [(&str, Place); 7] = [
    ("hidden", Place::HostIn),
    ("code", Place::HostIn),
    ("past_keys", Place::DeviceIn),
    ("past_values", Place::DeviceIn),
    ("logits", Place::HostOut),
    ("present_keys", Place::DeviceOut),
    ("present_values", Place::DeviceOut),
];

/// Bytes that cross between host and device per frame (1 slow decode + K fast steps), from the
/// plan: `(host_to_device, device_to_host)`. Used by tests and docs to keep the claim honest.
#[cfg(test)]
pub(crate) fn bytes_per_frame(
    d: &ModelDims,
    head_rows: usize,
    fast_rows: usize,
    float_bytes: usize,
) -> (usize, usize) {
    let k = d.num_codebooks;
    let up = (1 + k) * 8 // tokens [1, 1+K, 1] i64
        + 8 // past_sequence_length [1] i64
        + d.fast_dim * float_bytes // hidden at fast position 0
        + k * 8; // one code per fast step (position 0 gets a dummy)
    let down = head_rows * float_bytes + d.fast_dim * float_bytes + k * fast_rows * float_bytes;
    (up, down)
}

/// Float element type of the graphs' float I/O (`fp32` or `fp16` bundles).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Float {
    F32,
    F16,
}

impl Float {
    /// The ONNX element type (what `DynTensor::new` allocates).
    pub(crate) fn element(self) -> TensorElementType {
        match self {
            Float::F32 => TensorElementType::Float32,
            Float::F16 => TensorElementType::Float16,
        }
    }
}

/// Shared part: the sessions (built once at load, reused by every request) and memory infos.
pub(crate) struct DeviceShared {
    pub name: &'static str,
    pub slow: Mutex<Session>,
    pub fast: Mutex<Session>,
    pub dims: ModelDims,
    pub head_rows: usize,
    pub fast_rows: usize,
    pub float: Float,
    /// Device memory of the provider (`Cuda`, device `device_id`).
    pub device: MemoryInfo<'static>,
    /// Host memory for outputs the sampler reads.
    pub host: MemoryInfo<'static>,
}

impl DeviceShared {
    pub(crate) fn memory_infos(
        device_id: u32,
    ) -> Result<(MemoryInfo<'static>, MemoryInfo<'static>)> {
        let id = i32::try_from(device_id)
            .map_err(|_| Error::arg("device_id", format!("{device_id} is not a device ordinal")))?;
        let err = |e: ort::Error| Error::Backend {
            backend: "onnx-cuda",
            op: "memory info".into(),
            message: e.to_string(),
        };
        let device =
            MemoryInfo::new(AllocationDevice::CUDA, id, AllocatorType::Device, MemoryType::Default)
                .map_err(err)?;
        let host =
            MemoryInfo::new(AllocationDevice::CPU, 0, AllocatorType::Device, MemoryType::CPUOutput)
                .map_err(err)?;
        Ok((device, host))
    }

    fn err(&self, op: &str) -> impl FnOnce(ort::Error) -> Error + '_ {
        let op = op.to_string();
        move |e| Error::Backend { backend: self.name, op, message: e.to_string() }
    }
}

/// The transformer on a GPU provider.
pub(crate) struct DeviceT2s {
    pub shared: Arc<DeviceShared>,
}

impl Text2Semantic for DeviceT2s {
    fn name(&self) -> &'static str {
        self.shared.name
    }

    fn start(&self) -> Result<Box<dyn T2sRequest>> {
        self.start_with_capacity(DEFAULT_CAPACITY)
    }

    fn start_with_capacity(&self, positions: usize) -> Result<Box<dyn T2sRequest>> {
        let s = &self.shared;
        let d = &s.dims;
        let fast_shape = [d.n_fast_layer, 1, d.fast_n_local_heads, 0, d.fast_head_dim];
        let slow = {
            let session = s.slow.lock();
            // The provider's allocator: the cache buffers live in device memory.
            let alloc =
                Allocator::new(&session, s.device.clone()).map_err(s.err("kv allocator"))?;
            let host = s.device.allocation_device() == AllocationDevice::CPU;
            SlowKv::new(s.name, &session, alloc, host, &s.host, s.float, d, positions)?
        };
        let fast_binding = s.fast.lock().create_binding().map_err(s.err("fast binding"))?;
        Ok(Box::new(DeviceRequest {
            slow,
            fast_k: empty_kv(s, fast_shape)?,
            fast_v: empty_kv(s, fast_shape)?,
            fast_shape,
            fast_pos: 0,
            fast_binding,
            shared: s.clone(),
        }))
    }
}

/// A KV tensor with no positions: `[layers, 1, heads, 0, head_dim]` in the graphs' float type,
/// in host memory (zero bytes to copy when bound).
fn empty_kv(s: &DeviceShared, shape: [usize; 5]) -> Result<DynValue> {
    DynTensor::new(&Allocator::default(), s.float.element(), shape)
        .map(|t| t.into_dyn())
        .map_err(s.err("empty kv"))
}

/// Per-request state: device-resident caches and their IO bindings.
struct DeviceRequest {
    shared: Arc<DeviceShared>,
    slow: SlowKv,
    fast_binding: IoBinding,
    fast_k: DynValue,
    fast_v: DynValue,
    fast_shape: [usize; 5],
    /// Fast positions run since `fast_reset`.
    fast_pos: usize,
}

/// Reads a host output as f32 (fp16 graphs are widened).
pub(crate) fn host_floats(
    out: &SessionOutputs<'_>,
    name: &str,
    backend: &'static str,
    op: &str,
) -> Result<Vec<f32>> {
    let v = out.get(name).ok_or_else(|| Error::Backend {
        backend,
        op: op.into(),
        message: format!("graph has no output `{name}`"),
    })?;
    floats(v, backend, op)
}

/// A CPU-accessible float tensor as f32, from f32 or f16 data.
pub(crate) fn floats(v: &DynValue, backend: &'static str, op: &str) -> Result<Vec<f32>> {
    let err = |e: ort::Error| Error::Backend { backend, op: op.into(), message: e.to_string() };
    match v.try_extract_tensor::<f32>() {
        Ok((_, data)) => Ok(data.to_vec()),
        Err(_) => {
            let (_, data) = v.try_extract_tensor::<half::f16>().map_err(err)?;
            Ok(data.iter().map(|x| x.to_f32()).collect())
        }
    }
}

/// A host tensor of `data` in the graphs' float type.
fn host_float_tensor(float: Float, shape: [usize; 2], data: &[f32]) -> ort::Result<DynValue> {
    match float {
        Float::F32 => Tensor::<f32>::from_array((shape, data.to_vec())).map(|t| t.into_dyn()),
        Float::F16 => {
            let h: Vec<half::f16> = data.iter().map(|&x| half::f16::from_f32(x)).collect();
            Tensor::<half::f16>::from_array((shape, h)).map(|t| t.into_dyn())
        }
    }
}

fn take(
    out: &mut SessionOutputs<'_>,
    name: &str,
    backend: &'static str,
    op: &str,
) -> Result<DynValue> {
    out.remove(name).ok_or_else(|| Error::Backend {
        backend,
        op: op.into(),
        message: format!("graph has no output `{name}`"),
    })
}

impl T2sRequest for DeviceRequest {
    fn slow(&mut self, tokens: &[i64], t: usize) -> Result<SlowOutput> {
        let s = self.shared.clone();
        // tokens [1, 1+K, T] i64 + past_sequence_length [1] i64 (host) -> logits [1, head_rows],
        // hidden [1, fast_dim] (host); the per-layer caches (device) are written in place
        let out = self.slow.run(&mut s.slow.lock(), tokens, t)?;
        super::check_slow_sizes(s.name, &out, s.head_rows, s.dims.fast_dim)?;
        Ok(SlowOutput { logits: out.logits, hidden: out.hidden })
    }

    fn fast_reset(&mut self) -> Result<()> {
        let s = self.shared.clone();
        self.fast_k = empty_kv(&s, self.fast_shape)?;
        self.fast_v = empty_kv(&s, self.fast_shape)?;
        self.fast_pos = 0;
        Ok(())
    }

    fn fast(&mut self, hidden: &[f32], code: i64) -> Result<Vec<f32>> {
        let s = self.shared.clone();
        // hidden [1, dim] (uploaded at position 0 only, then stays bound), code [1] i64,
        // past_* [Lf, 1, Hf, P, Df] (device) -> logits [1, fast_rows] (host), present_* (device)
        let b = &mut self.fast_binding;
        if self.fast_pos == 0 {
            let h = host_float_tensor(s.float, [1, hidden.len()], hidden).map_err(s.err("fast"))?;
            b.bind_input("hidden", &h).map_err(s.err("fast: bind hidden"))?;
        }
        let code = Tensor::<i64>::from_array(([1usize], vec![code])).map_err(s.err("fast"))?;
        b.bind_input("code", &code).map_err(s.err("fast: bind code"))?;
        b.bind_input("past_keys", &self.fast_k).map_err(s.err("fast: bind past_keys"))?;
        b.bind_input("past_values", &self.fast_v).map_err(s.err("fast: bind past_values"))?;
        for (name, place) in
            FAST_PLAN.iter().filter(|(_, p)| matches!(p, Place::HostOut | Place::DeviceOut))
        {
            let mem = if *place == Place::HostOut { &s.host } else { &s.device };
            b.bind_output_to_device(*name, mem).map_err(s.err("fast: bind output"))?;
        }
        let mut session = s.fast.lock();
        let mut out = session.run_binding(&self.fast_binding).map_err(s.err("fast"))?;
        let logits = host_floats(&out, "logits", s.name, "fast")?;
        let k = take(&mut out, "present_keys", s.name, "fast")?;
        let v = take(&mut out, "present_values", s.name, "fast")?;
        drop(out);
        drop(session);
        if logits.len() != s.fast_rows {
            return Err(Error::Backend {
                backend: s.name,
                op: "fast".into(),
                message: format!("{} logits, the manifest says {}", logits.len(), s.fast_rows),
            });
        }
        self.fast_k = k;
        self.fast_v = v;
        self.fast_pos += 1;
        Ok(logits)
    }

    fn kv_len(&self) -> usize {
        self.slow.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_plan_keeps_kv_on_device() {
        for (slow, plan) in [(true, &SLOW_PLAN[..]), (false, &FAST_PLAN[..])] {
            for (name, place) in plan.iter() {
                let want = if *name == "past_sequence_length" {
                    Place::HostIn
                } else if name.starts_with("past_") {
                    Place::DeviceIn
                } else if name.starts_with("present_") {
                    Place::DeviceOut
                } else if *name == "logits" || *name == "hidden" && slow {
                    Place::HostOut
                } else {
                    Place::HostIn
                };
                assert_eq!(*place, want, "{name}");
            }
        }
    }

    #[test]
    fn bytes_per_frame_are_small_for_s1_mini() {
        let d = ModelDims::s1_mini_for_tests();
        // S1-mini: 4097 head rows, 4096 fast logit rows (codebook size), fp16.
        let (up, down) = bytes_per_frame(&d, 4097, 4096, 2);
        // ids + hidden + codes up (≈ 2.2 KB); logits (slow + 10 fast) + hidden down (≈ 92 KB).
        assert_eq!(up, 11 * 8 + 8 + 2048 + 80);
        assert_eq!(down, 4097 * 2 + 2048 + 10 * 4096 * 2);
        // One position of the slow KV cache is 28·8·128·2·2 bytes ≈ 115 KB; the cache (positions
        // × that) never crosses.
        let kv_per_position = d.n_layer * d.n_local_heads * d.head_dim * 2 * 2;
        assert_eq!(kv_per_position, 114_688);
        assert!(up + down < kv_per_position);
    }
}

/// The IO binding path run for real on the CPU execution provider: both "memories" are host
/// memory, so binding, output allocation, feeding `present_*` back as `past_*` and the hidden
/// upload are exercised exactly as on a GPU, minus the device copies. Compared step by step with
/// the plain `onnx-cpu` request on the tiny bundle.
#[cfg(test)]
mod bound_cpu_tests {
    use super::*;
    use crate::backend::onnx::{build_cpu, environment, open_session, Flavor};
    use crate::bundle::Bundle;
    use crate::config::EngineConfig;
    use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    fn argmax(v: &[f32]) -> i64 {
        let mut best = 0;
        for (i, x) in v.iter().enumerate() {
            if *x > v[best] {
                best = i;
            }
        }
        best as i64
    }

    #[test]
    fn io_binding_on_cpu_provider_equals_plain_runs() {
        if std::env::var_os("ORT_DYLIB_PATH").is_none() {
            println!("skipped: ORT_DYLIB_PATH is not set");
            return;
        }
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny");
        let bundle = Bundle::load(&dir, false).unwrap();
        let info = &bundle.info;
        let config = EngineConfig::new(&dir);
        let env = environment(&config).unwrap();
        let open = |role: &str| {
            open_session(&env, &config, info.graph(role).unwrap(), Flavor::Cpu, None).unwrap()
        };
        let cpu_mem =
            |t| MemoryInfo::new(AllocationDevice::CPU, 0, AllocatorType::Device, t).unwrap();
        let bound = DeviceT2s {
            shared: Arc::new(DeviceShared {
                name: "bound-cpu",
                slow: Mutex::new(open("slow")),
                fast: Mutex::new(open("fast")),
                dims: info.model.clone(),
                head_rows: info.im_end_index.max(info.semantic_rows) + 1,
                fast_rows: info.fast_logit_rows,
                float: Float::F32,
                device: cpu_mem(MemoryType::Default),
                host: cpu_mem(MemoryType::CPUOutput),
            }),
        };
        let (plain, _) = build_cpu(&config, &bundle).unwrap();
        let mut a = bound.start().unwrap();
        let mut b = plain.start().unwrap();
        let k = info.model.num_codebooks;
        let rows = 1 + k;
        // A 5-position prompt: text ids 1..=5, no codes.
        let t = 5;
        let mut prompt = vec![0i64; rows * t];
        for (i, p) in prompt.iter_mut().take(t).enumerate() {
            *p = i as i64 + 1;
        }
        let (mut tokens, mut len) = (prompt, t);
        for frame in 0..3 {
            let sa = a.slow(&tokens, len).unwrap();
            let sb = b.slow(&tokens, len).unwrap();
            assert!(max_diff(&sa.logits, &sb.logits) <= 1e-6, "frame {frame} slow logits");
            assert!(max_diff(&sa.hidden, &sb.hidden) <= 1e-6, "frame {frame} hidden");
            assert_eq!(a.kv_len(), b.kv_len());
            a.fast_reset().unwrap();
            b.fast_reset().unwrap();
            let mut codes = Vec::with_capacity(k);
            let mut code = 0i64;
            for step in 0..k {
                let fa = a.fast(&sa.hidden, code).unwrap();
                let fb = b.fast(&sb.hidden, code).unwrap();
                assert!(max_diff(&fa, &fb) <= 1e-6, "frame {frame} fast step {step}");
                code = argmax(&fa);
                codes.push(code);
            }
            // Next decode input: a semantic token id (first semantic row) and the codes.
            tokens = std::iter::once(info.tokens.semantic_begin as i64).chain(codes).collect();
            len = 1;
        }
        assert_eq!(a.kv_len(), t + 2);
    }
}
