//! The slow transformer's KV cache for format-2 `slow.onnx` (docs/bundle-format.md): one buffer
//! `[1, H, capacity, D]` per layer for keys and one for values, each bound through IO binding as
//! both the `past_*_i` input and the `present_*_i` output of the graph's
//! `com.microsoft.GroupQueryAttention` node. ONNX Runtime then hands the kernel the same data
//! pointer for past and present, and the kernel writes the call's new positions into the buffer
//! in place and attends over the filled positions only. So per decode step the only cache traffic
//! is attention's own read plus the write of one position: no copy, no allocation, no growth.
//!
//! Aliasing needs no `unsafe`: a buffer is an ONNX Runtime-owned tensor (`Tensor::new`), which
//! ort's `IoBinding::bind_input` binds by reference (it clones only values over borrowed memory)
//! and `bind_output(&mut tensor)` binds as the pre-allocated output: both are the same `OrtValue`.
//!
//! The capacity is chosen per request (prompt + max frames, [`SlowKv::new`]); a request that
//! needs more grows it once by doubling (a copy of the filled prefix), up to the model context.
//! Prompts go through in chunks of at most [`PREFILL_CHUNK`] positions, so the attention scratch
//! (`heads × chunk × capacity` floats) and the activations stay bounded whatever the prompt.
//!
//! Buffers live where the allocator puts them: host memory for `onnx-cpu`, device memory for the
//! GPU flavours. Copies in and out (snapshot, restore, growth) go through host memory with
//! ort's `copy_into` when the buffers are on a device.

use ort::memory::{Allocator, MemoryInfo};
use ort::session::{IoBinding, Session};
use ort::value::{DynTensor, DynTensorValueType, PrimitiveTensorElementType, Tensor};

use super::device::{floats, Float};
use crate::bundle::ModelDims;
use crate::error::{Error, Result};

/// Most prompt positions per `slow.onnx` call: bounds the GroupQueryAttention scratch
/// (`n_head × chunk × capacity` f32, 137 MB for S1-mini at a 4,200-position capacity) and the
/// chunk's activations; prefill time stays linear in the prompt.
pub(crate) const PREFILL_CHUNK: usize = 512;

/// Capacity of a request started without a length hint ([`crate::backend::Text2Semantic::start`]).
pub(crate) const DEFAULT_CAPACITY: usize = 256;

/// Names of the per-layer cache inputs and outputs (`past_key_0`, `past_value_0`, ...).
pub(crate) fn cache_names(layers: usize) -> (Vec<String>, Vec<String>) {
    let mut ins = Vec::with_capacity(2 * layers);
    let mut outs = Vec::with_capacity(2 * layers);
    for i in 0..layers {
        for kv in ["key", "value"] {
            ins.push(format!("past_{kv}_{i}"));
            outs.push(format!("present_{kv}_{i}"));
        }
    }
    (ins, outs)
}

/// Whether `session` is a format-2 slow graph (per-layer cache buffers).
pub(crate) fn is_in_place_graph(session: &Session) -> bool {
    session.inputs().iter().any(|i| i.name() == "past_sequence_length")
        && session.inputs().iter().any(|i| i.name() == "past_key_0")
}

/// Element type of `session`'s cache buffers (its `past_key_0` input): fp32, or fp16 for a
/// bundle exported with `--kv-cache fp16`.
pub(crate) fn cache_float(session: &Session) -> Result<Float> {
    use ort::value::TensorElementType as T;
    let ty = session
        .inputs()
        .iter()
        .find(|i| i.name() == "past_key_0")
        .and_then(|i| i.dtype().tensor_type());
    match ty {
        Some(T::Float32) => Ok(Float::F32),
        Some(T::Float16) => Ok(Float::F16),
        other => Err(Error::bundle(
            "slow.onnx",
            "-",
            format!("past_key_0 is {other:?}, not an fp32 or fp16 tensor"),
        )),
    }
}

/// Outputs of one slow call.
pub(crate) struct SlowRun {
    pub logits: Vec<f32>,
    pub hidden: Vec<f32>,
}

/// Filled positions `0..len` of every buffer, packed as `[H, len, D]` each (key_0, value_0, ..).
pub(crate) struct KvPrefix {
    pub len: usize,
    pub data: PrefixData,
}

/// [`KvPrefix`] data in the graph's float type.
pub(crate) enum PrefixData {
    F32(Vec<Vec<f32>>),
    F16(Vec<Vec<half::f16>>),
}

impl KvPrefix {
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        match &self.data {
            PrefixData::F32(v) => v.iter().map(|b| 4 * b.len()).sum(),
            PrefixData::F16(v) => v.iter().map(|b| 2 * b.len()).sum(),
        }
    }
}

/// One request's slow cache and the IO binding that aliases it.
pub(crate) struct SlowKv {
    backend: &'static str,
    binding: IoBinding,
    alloc: Allocator,
    /// Buffers in host memory (read and written directly); else through `copy_into`.
    host: bool,
    float: Float,
    heads: usize,
    head_dim: usize,
    rows: usize,
    /// key_0, value_0, key_1, ... each `[1, heads, capacity, head_dim]`.
    bufs: Vec<DynTensor>,
    capacity: usize,
    max_capacity: usize,
    len: usize,
    chunk: usize,
    /// Whether the last call's present output was the bound buffer itself (a cheap diagnostic:
    /// the proof that the kernel wrote in place is the sentinel test, `poke_unfilled`).
    aliased: bool,
}

impl SlowKv {
    /// A cache of `capacity` positions (clamped to `1..=max_seq_len`) in memory from `alloc`
    /// (`host`: whether that is host memory), bound to `session`'s inputs and outputs; `logits`
    /// and `hidden` are bound to `out_mem` (host memory the sampler reads).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        backend: &'static str,
        session: &Session,
        alloc: Allocator,
        host: bool,
        out_mem: &MemoryInfo,
        float: Float,
        dims: &ModelDims,
        capacity: usize,
    ) -> Result<Self> {
        let binding = session.create_binding().map_err(err(backend, "slow binding"))?;
        let max_capacity = dims.max_seq_len.max(1);
        let mut kv = SlowKv {
            backend,
            binding,
            alloc,
            host,
            float,
            heads: dims.n_local_heads,
            head_dim: dims.head_dim,
            rows: 1 + dims.num_codebooks,
            bufs: Vec::new(),
            capacity: 0,
            max_capacity,
            len: 0,
            chunk: PREFILL_CHUNK,
            aliased: true,
        };
        kv.bufs = kv.alloc_bufs(dims.n_layer, capacity.clamp(1, max_capacity))?;
        kv.capacity = capacity.clamp(1, max_capacity);
        for name in ["logits", "hidden"] {
            kv.binding.bind_output_to_device(name, out_mem).map_err(err(backend, "slow: bind"))?;
        }
        kv.bind_cache()?;
        Ok(kv)
    }

    /// Positions filled.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Positions the buffers hold without growing.
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Most positions per graph call during a prompt (tests shrink it).
    #[cfg(test)]
    pub fn set_chunk(&mut self, chunk: usize) {
        self.chunk = chunk.max(1);
    }

    /// Data address of the first key buffer (tests: it never moves while decoding).
    #[cfg(test)]
    pub fn buffer_address(&self) -> usize {
        self.bufs.first().map_or(0, |b| b.data_ptr() as usize)
    }

    /// Writes `v` at the last position (first head) of every buffer (tests, host memory): the
    /// positions beyond the filled ones are never written when ONNX Runtime runs the attention
    /// on the bound buffers in place, while a separate present buffer would be zeroed there
    /// (GroupQueryAttention's unshared path clears present first).
    #[cfg(test)]
    pub fn poke_unfilled(&mut self, v: f32) {
        let at = (self.capacity - 1) * self.head_dim;
        for b in &mut self.bufs {
            let (_, data) = b.try_extract_tensor_mut::<f32>().expect("host f32 cache");
            data[at] = v;
        }
    }

    /// The values [`SlowKv::poke_unfilled`] wrote, as they are now.
    #[cfg(test)]
    pub fn peek_unfilled(&self) -> Vec<f32> {
        let at = (self.capacity - 1) * self.head_dim;
        self.bufs
            .iter()
            .map(|b| b.try_extract_tensor::<f32>().expect("host f32 cache").1[at])
            .collect()
    }

    /// Whether the last call wrote into the bound buffers (present = past, same memory).
    #[cfg(test)]
    pub fn aliased(&self) -> bool {
        self.aliased
    }

    fn alloc_bufs(&self, layers: usize, capacity: usize) -> Result<Vec<DynTensor>> {
        let shape = [1usize, self.heads, capacity, self.head_dim];
        (0..2 * layers)
            .map(|_| {
                DynTensor::new(&self.alloc, self.float.element(), shape).map_err(|e| {
                    Error::Backend {
                        backend: self.backend,
                        op: "kv cache".into(),
                        message: format!(
                            "allocating {} cache buffers of {capacity} positions: {e}",
                            2 * layers
                        ),
                    }
                })
            })
            .collect()
    }

    /// Binds every buffer as its layer's past input and present output (the same `OrtValue`).
    fn bind_cache(&mut self) -> Result<()> {
        let (ins, outs) = cache_names(self.bufs.len() / 2);
        for ((input, output), buf) in ins.iter().zip(&outs).zip(self.bufs.iter_mut()) {
            self.binding
                .bind_input(input.as_str(), &*buf)
                .map_err(err(self.backend, "slow: bind"))?;
            self.binding
                .bind_output(output.as_str(), buf)
                .map_err(err(self.backend, "slow: bind"))?;
        }
        Ok(())
    }

    /// Grows the buffers to hold `needed` positions: the larger of `needed` and twice the
    /// capacity, at most the model context. Copies the filled prefix once.
    fn reserve(&mut self, needed: usize) -> Result<()> {
        if needed <= self.capacity {
            return Ok(());
        }
        if needed > self.max_capacity {
            return Err(Error::Internal(format!(
                "slow: {needed} positions exceed the model context of {}",
                self.max_capacity
            )));
        }
        let capacity = needed.max(self.capacity.saturating_mul(2)).min(self.max_capacity);
        log::debug!("{}: kv cache grows {} -> {capacity} positions", self.backend, self.capacity);
        let prefix = self.prefix()?;
        self.bufs = self.alloc_bufs(self.bufs.len() / 2, capacity)?;
        self.capacity = capacity;
        self.len = 0;
        self.write_prefix(&prefix)?;
        self.bind_cache()
    }

    /// Runs `tokens` (`[1+K, t]` row-major) at positions `len..len+t`, in chunks of at most
    /// the chunk size; returns the last position's outputs.
    pub fn run(&mut self, session: &mut Session, tokens: &[i64], t: usize) -> Result<SlowRun> {
        if t == 0 || tokens.len() != self.rows * t {
            return Err(Error::Internal(format!(
                "slow: {} tokens for [{}, {t}]",
                tokens.len(),
                self.rows
            )));
        }
        self.reserve(self.len + t)?;
        let mut start = 0;
        loop {
            let n = (t - start).min(self.chunk);
            let out = if n == t {
                self.run_chunk(session, tokens.to_vec(), n)?
            } else {
                // columns start..start+n of every row: [1+K, n]
                let mut chunk = Vec::with_capacity(self.rows * n);
                for r in 0..self.rows {
                    chunk.extend_from_slice(&tokens[r * t + start..r * t + start + n]);
                }
                self.run_chunk(session, chunk, n)?
            };
            start += n;
            if start == t {
                return Ok(out);
            }
        }
    }

    fn run_chunk(&mut self, session: &mut Session, tokens: Vec<i64>, n: usize) -> Result<SlowRun> {
        let backend = self.backend;
        let e = move |op: &'static str| err(backend, op);
        // tokens [1, 1+K, n] i64, past_sequence_length [1] i64 = len; caches stay bound
        //   -> logits [1, head_rows], hidden [1, fast_dim] (host); caches written at len..len+n
        let tokens =
            Tensor::<i64>::from_array(([1usize, self.rows, n], tokens)).map_err(e("slow"))?;
        let past =
            Tensor::<i64>::from_array(([1usize], vec![self.len as i64])).map_err(e("slow"))?;
        self.binding.bind_input("tokens", &tokens).map_err(e("slow: bind tokens"))?;
        self.binding.bind_input("past_sequence_length", &past).map_err(e("slow: bind"))?;
        let out = session.run_binding(&self.binding).map_err(e("slow"))?;
        let get = |name: &str| {
            out.get(name).ok_or_else(|| Error::Backend {
                backend,
                op: "slow".into(),
                message: format!("graph has no output `{name}`"),
            })
        };
        let logits = floats(get("logits")?, backend, "slow")?;
        let hidden = floats(get("hidden")?, backend, "slow")?;
        // ONNX Runtime returned the bound buffer as present, not one of its own (checked per
        // call: a pointer comparison).
        let aliased = out
            .get("present_key_0")
            .zip(self.bufs.first())
            .and_then(|(p, b)| {
                p.view().downcast::<DynTensorValueType>().ok().map(|p| p.data_ptr() == b.data_ptr())
            })
            .unwrap_or(false);
        drop(out);
        if !aliased && self.aliased {
            log::warn!("{backend}: present_key_0 is not the bound cache buffer (a copy per step)");
        }
        self.aliased = aliased;
        self.len += n;
        Ok(SlowRun { logits, hidden })
    }

    /// Gives up the cache: its buffers (key_0, value_0, .. each `[1, H, capacity, D]` in host
    /// memory), the positions filled and the capacity, for the batch pool to adopt or copy
    /// (`batch.rs`) without a packed copy in between.
    pub fn into_host_buffers(self) -> Result<(Vec<DynTensor>, usize, usize)> {
        if !self.host {
            return Err(Error::Internal("kv: only host caches leave their request".into()));
        }
        Ok((self.bufs, self.len, self.capacity))
    }

    /// A packed copy of positions `0..len` of every buffer.
    pub fn prefix(&self) -> Result<KvPrefix> {
        let data = match self.float {
            Float::F32 => PrefixData::F32(self.read_prefix::<f32>()?),
            Float::F16 => PrefixData::F16(self.read_prefix::<half::f16>()?),
        };
        Ok(KvPrefix { len: self.len, data })
    }

    /// Replaces the cache by `prefix` (grown to hold it if needed).
    pub fn restore(&mut self, prefix: &KvPrefix) -> Result<()> {
        self.len = 0;
        self.reserve(prefix.len)?;
        self.write_prefix(prefix)
    }

    fn write_prefix(&mut self, prefix: &KvPrefix) -> Result<()> {
        match (&prefix.data, self.float) {
            (PrefixData::F32(d), Float::F32) => self.write_packed::<f32>(d, prefix.len)?,
            (PrefixData::F16(d), Float::F16) => self.write_packed::<half::f16>(d, prefix.len)?,
            _ => return Err(Error::Internal("kv snapshot of another float type".into())),
        }
        self.len = prefix.len;
        Ok(())
    }

    /// A host copy of buffer `i` (the buffer itself when it is in host memory is read in place).
    fn host_copy(&self, i: usize) -> Result<DynTensor> {
        let src = &self.bufs[i];
        let mut host = DynTensor::new(&Allocator::default(), *src.data_type(), src.shape().clone())
            .map_err(err(self.backend, "kv copy"))?;
        src.copy_into(&mut host).map_err(err(self.backend, "kv copy"))?;
        Ok(host)
    }

    fn read_prefix<T: PrimitiveTensorElementType + Copy>(&self) -> Result<Vec<Vec<T>>> {
        let (len, cap, d) = (self.len, self.capacity, self.head_dim);
        (0..self.bufs.len())
            .map(|i| {
                let staged;
                let buf = if self.host {
                    &self.bufs[i]
                } else {
                    staged = self.host_copy(i)?;
                    &staged
                };
                let (_, data) =
                    buf.try_extract_tensor::<T>().map_err(err(self.backend, "kv read"))?;
                let mut out = Vec::with_capacity(self.heads * len * d);
                for h in 0..self.heads {
                    out.extend_from_slice(&data[h * cap * d..(h * cap + len) * d]);
                }
                Ok(out)
            })
            .collect()
    }

    fn write_packed<T: PrimitiveTensorElementType + Copy>(
        &mut self,
        packed: &[Vec<T>],
        len: usize,
    ) -> Result<()> {
        let (cap, d, heads) = (self.capacity, self.head_dim, self.heads);
        if packed.len() != self.bufs.len() || packed.iter().any(|p| p.len() != heads * len * d) {
            return Err(Error::Internal("kv snapshot of another model shape".into()));
        }
        let backend = self.backend;
        for (i, src) in packed.iter().enumerate() {
            let fill = |buf: &mut DynTensor| -> Result<()> {
                let (_, data) =
                    buf.try_extract_tensor_mut::<T>().map_err(err(backend, "kv write"))?;
                for h in 0..heads {
                    data[h * cap * d..(h * cap + len) * d]
                        .copy_from_slice(&src[h * len * d..(h + 1) * len * d]);
                }
                Ok(())
            };
            if self.host {
                fill(&mut self.bufs[i])?;
            } else {
                let mut staged = self.host_copy(i)?;
                fill(&mut staged)?;
                staged.copy_into(&mut self.bufs[i]).map_err(err(backend, "kv copy"))?;
            }
        }
        Ok(())
    }
}

fn err(backend: &'static str, op: &'static str) -> impl FnOnce(ort::Error) -> Error {
    move |e| Error::Backend { backend, op: op.into(), message: e.to_string() }
}
