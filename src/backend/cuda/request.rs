//! One request's device side: the workspace (KV caches, activations, device state, the
//! captured frame graph) taken from the model's pool, and [`CudaRequest`], which implements
//! both [`T2sRequest`] (logits to the host) and [`FrameStep`] (whole frames on the device).

use std::sync::Arc;

use cudarc::driver::{sys, CudaGraph};

use super::device::{DevBuf, PinnedBuf};
use super::engine::{backend_err, Model};
use super::error::{CudaError, CudaResult};
use super::plan;
use crate::backend::{FrameSampling, FrameStep, SlowOutput, StepRow, T2sRequest};
use crate::error::{Error, Result};
use crate::sampling::SamplingParams;

/// Device-resident request state (mirrors `S1State` in common.cuh; 16 words).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct DeviceState {
    pub(super) kv_pos: i32,
    pub(super) frame: u32,
    pub(super) seed_lo: u32,
    pub(super) seed_hi: u32,
    pub(super) temperature: f32,
    pub(super) top_p: f32,
    pub(super) rep_penalty: f32,
    pub(super) compat: i32,
    pub(super) ignore_end: i32,
    pub(super) max_kv: i32,
    pub(super) pad: [i32; 6],
}

/// Activation buffers and caches of one request.
pub(super) struct Workspace {
    pub(super) kv_k: DevBuf,
    pub(super) kv_v: DevBuf,
    pub(super) fkv_k: DevBuf,
    pub(super) fkv_v: DevBuf,
    pub(super) hist: DevBuf,
    pub(super) state: DevBuf,
    pub(super) zero_i32: DevBuf,
    pub(super) frame: DevBuf,
    pub(super) tok_in: DevBuf,
    pub(super) code: DevBuf,
    pub(super) x: DevBuf,
    pub(super) h: DevBuf,
    pub(super) qkv: DevBuf,
    pub(super) att: DevBuf,
    pub(super) ffa: DevBuf,
    pub(super) ffb: DevBuf,
    pub(super) tmp: DevBuf,
    pub(super) xb: DevBuf,
    pub(super) part_o: DevBuf,
    pub(super) part_ml: DevBuf,
    /// Split-attention completion counters, [n_head, T] u32, zero between launches.
    pub(super) att_count: DevBuf,
    pub(super) logits: DevBuf,
    pub(super) flogits: DevBuf,
    pub(super) hidden: DevBuf,
    pub(super) pinned: PinnedBuf,
    pub(super) graph: Option<CudaGraph>,
}

// SAFETY: a workspace is owned by one request (or the pool) at a time; its CUDA graph and
// buffers are only touched by the thread that owns it, with the context bound on entry.
unsafe impl Send for Workspace {}

impl Model {
    pub(super) fn new_workspace(&self) -> CudaResult<Workspace> {
        let g = &self.gpu;
        let c = &self.cfg;
        let (s, f) = (&self.slow, &self.fast);
        let tmax = plan::PREFILL_CHUNK;
        let k1 = c.num_codebooks + 1;
        let f32s = |n: usize| g.alloc_zeroed(n * 4);
        let widest = c.dim.max(s.inter).max(s.q_w()).max(s.qkv_w()).max(f.qkv_w()).max(f.inter);
        let part_rows = (s.n_head * tmax).max(s.n_head * self.slow_splits).max(f.n_head);
        let mut ws = Workspace {
            kv_k: g.alloc_zeroed(c.n_layer * s.kv_layer_bytes())?,
            kv_v: g.alloc_zeroed(c.n_layer * s.kv_layer_bytes())?,
            fkv_k: g.alloc_zeroed(c.n_fast_layer * f.kv_layer_bytes())?,
            fkv_v: g.alloc_zeroed(c.n_fast_layer * f.kv_layer_bytes())?,
            att_count: g.alloc_zeroed(s.n_head.max(f.n_head) * tmax * 4)?,
            hist: g.alloc_zeroed(c.max_seq_len * k1 * 8)?,
            state: g.alloc_zeroed(std::mem::size_of::<DeviceState>())?,
            zero_i32: g.alloc_zeroed(4)?,
            frame: g.alloc_zeroed(k1 * 8)?,
            tok_in: g.alloc_zeroed(k1 * tmax * 8)?,
            code: g.alloc_zeroed(8)?,
            x: f32s(tmax * c.dim)?,
            h: f32s(tmax * c.dim)?,
            qkv: f32s(tmax * s.qkv_w().max(f.qkv_w()))?,
            att: f32s(tmax * s.q_w().max(f.q_w()))?,
            ffa: f32s(tmax * s.inter.max(f.inter))?,
            ffb: f32s(tmax * s.inter.max(f.inter))?,
            tmp: f32s(tmax * c.dim)?,
            xb: g.alloc_zeroed(tmax * widest * 2)?,
            part_o: f32s(part_rows * s.head_dim.max(f.head_dim))?,
            part_ml: f32s(part_rows * 2)?,
            logits: f32s(c.head_rows())?,
            flogits: f32s(c.fast_logit_rows)?,
            hidden: f32s(c.dim)?,
            pinned: g.alloc_pinned(k1 * 8)?,
            graph: None,
        };
        g.sync()?;
        ws.graph = self.capture_frame(&ws)?;
        Ok(ws)
    }

    /// Nodes of the captured frame graph, as the driver counts them.
    pub(super) fn graph_nodes(&self) -> CudaResult<usize> {
        let pool = self.pool.lock();
        let g = pool
            .first()
            .and_then(|ws| ws.graph.as_ref())
            .ok_or_else(|| CudaError::invariant("no captured graph"))?;
        let mut n = 0usize;
        // SAFETY: cuGraphGetNodes with a null array only writes the count; the graph is live.
        unsafe { sys::cuGraphGetNodes(g.cu_graph(), std::ptr::null_mut(), &mut n) }
            .result()
            .map_err(|e| CudaError::driver("cuGraphGetNodes", e))?;
        Ok(n)
    }

    pub(super) fn take_workspace(&self) -> CudaResult<Workspace> {
        if let Some(ws) = self.pool.lock().pop() {
            return Ok(ws);
        }
        self.new_workspace()
    }
}

/// One request: a workspace from the pool, returned on drop.
pub(super) struct CudaRequest {
    pub(super) model: Arc<Model>,
    pub(super) ws: Option<Workspace>,
    pub(super) kv_len: usize,
    pub(super) fast_pos: usize,
    pub(super) frame: u32,
    /// The sampling last written to the device state (the frame graph reads it there).
    pub(super) written: Option<FrameSampling>,
}

impl Drop for CudaRequest {
    fn drop(&mut self) {
        if let Some(ws) = self.ws.take() {
            let _g = self.model.op_lock.lock();
            if self.model.bind().is_ok() && self.model.gpu.sync().is_ok() {
                self.model.pool.lock().push(ws);
            }
        }
    }
}

impl CudaRequest {
    pub(super) fn ws(&self) -> CudaResult<&Workspace> {
        self.ws.as_ref().ok_or_else(|| CudaError::invariant("request has no workspace"))
    }

    /// Empties the caches and the history, and writes the device state.
    pub(super) fn reset(&mut self) -> CudaResult<()> {
        let m = self.model.clone();
        let ws = self.ws()?;
        m.gpu.memset0(ws.hist.ptr(), ws.hist.bytes())?;
        m.gpu.memset0(ws.frame.ptr(), ws.frame.bytes())?;
        self.kv_len = 0;
        self.fast_pos = 0;
        self.frame = 0;
        self.written = None;
        self.write_state(
            SamplingParams { temperature: 0.0, top_p: 1.0, repetition_penalty: 1.0 },
            0,
            false,
            false,
        )
    }

    pub(super) fn write_state(
        &self,
        p: SamplingParams,
        seed: u64,
        compat: bool,
        ignore_end: bool,
    ) -> CudaResult<()> {
        let m = &self.model;
        let st = DeviceState {
            kv_pos: self.kv_len as i32,
            frame: self.frame,
            seed_lo: seed as u32,
            seed_hi: (seed >> 32) as u32,
            temperature: p.temperature,
            top_p: p.top_p,
            rep_penalty: p.repetition_penalty,
            compat: i32::from(compat),
            ignore_end: i32::from(ignore_end),
            max_kv: m.cfg.max_seq_len as i32,
            pad: [0; 6],
        };
        let words: [u32; 16] = [
            st.kv_pos as u32,
            st.frame,
            st.seed_lo,
            st.seed_hi,
            st.temperature.to_bits(),
            st.top_p.to_bits(),
            st.rep_penalty.to_bits(),
            st.compat as u32,
            st.ignore_end as u32,
            st.max_kv as u32,
            0,
            0,
            0,
            0,
            0,
            0,
        ];
        m.gpu.upload(self.ws()?.state.ptr(), &words)
    }

    /// The next frame on the device: frame 0 from the prefill's logits (eager launches), every
    /// later one by one replay of the captured frame graph. The only host sync is the copy of
    /// the frame's 1+K codes (needed for the stop rule and streaming).
    pub(super) fn next_device_frame(&mut self, s: &FrameSampling) -> Result<Vec<i64>> {
        let m = self.model.clone();
        let _g = m.op_lock.lock();
        m.bind()?;
        if self.kv_len == 0 {
            return Err(Error::Internal("device frame before the prompt".into()));
        }
        if self.written != Some(*s) {
            self.write_state(s.params, s.seed, s.fish_speech_compat, s.ignore_end)
                .map_err(|e| backend_err("state", e))?;
            self.written = Some(*s);
        }
        // The device advances its own counters; these mirror them (an error part-way leaves
        // the request unusable, as any failed device call does).
        let (mut kv_len, frame) = (self.kv_len, self.frame);
        let ws = self.ws().map_err(|e| backend_err("frame", e))?;
        if frame == 0 {
            m.fast_and_sample(ws).map_err(|e| backend_err("first frame", e))?;
        } else {
            if kv_len >= m.cfg.max_seq_len {
                return Err(Error::arg("max_frames", "the model's context is full"));
            }
            match &ws.graph {
                Some(g) => {
                    g.launch().map_err(|e| backend_err("cuGraphLaunch", format!("{e:?}")))?
                }
                None => m.frame(ws).map_err(|e| backend_err("frame", e))?,
            }
            kv_len += 1;
        }
        let k1 = m.cfg.num_codebooks + 1;
        m.gpu
            .download_async(&ws.pinned, ws.frame.ptr(), k1 * 8)
            .map_err(|e| backend_err("frame copy", e))?;
        m.gpu.sync().map_err(|e| backend_err("frame", e))?;
        let out = ws.pinned.as_i64()[..k1].to_vec();
        self.kv_len = kv_len;
        self.frame = frame + 1;
        Ok(out)
    }

    /// Uploads `tokens` ([1+K, t] row-major) chunk by chunk and runs the slow passes.
    pub(super) fn slow_upload(&mut self, tokens: &[i64], t: usize) -> Result<()> {
        let m = self.model.clone();
        let k1 = m.cfg.num_codebooks + 1;
        if tokens.len() != k1 * t || t == 0 {
            return Err(Error::arg(
                "tokens",
                format!("expected [{k1}, {t}] ids, got {}", tokens.len()),
            ));
        }
        if self.kv_len + t > m.cfg.max_seq_len {
            return Err(Error::arg("tokens", "prompt exceeds the model's context"));
        }
        let mut start = 0;
        while start < t {
            let tc = (t - start).min(plan::PREFILL_CHUNK);
            let mut chunk = Vec::with_capacity(k1 * tc);
            for r in 0..k1 {
                chunk.extend_from_slice(&tokens[r * t + start..r * t + start + tc]);
            }
            let ws = self.ws().map_err(|e| backend_err("slow", e))?;
            m.gpu.upload(ws.tok_in.ptr(), &chunk).map_err(|e| backend_err("slow upload", e))?;
            m.slow_pass(ws, ws.tok_in.ptr(), tc, tc).map_err(|e| backend_err("slow", e))?;
            self.kv_len += tc;
            start += tc;
        }
        Ok(())
    }
}

impl T2sRequest for CudaRequest {
    fn slow(&mut self, tokens: &[i64], t: usize) -> Result<SlowOutput> {
        let model = self.model.clone();
        let _g = model.op_lock.lock();
        model.bind()?;
        self.slow_upload(tokens, t)?;
        let m = self.model.clone();
        let ws = self.ws().map_err(|e| backend_err("slow", e))?;
        let mut logits = vec![0f32; m.cfg.head_rows()];
        let mut hidden = vec![0f32; m.cfg.dim];
        m.gpu.download(&mut logits, ws.logits.ptr()).map_err(|e| backend_err("slow logits", e))?;
        m.gpu.download(&mut hidden, ws.hidden.ptr()).map_err(|e| backend_err("slow hidden", e))?;
        Ok(SlowOutput { logits, hidden })
    }

    fn fast_reset(&mut self) -> Result<()> {
        self.fast_pos = 0;
        Ok(())
    }

    fn fast(&mut self, hidden: &[f32], code: i64) -> Result<Vec<f32>> {
        let m = self.model.clone();
        let _g = m.op_lock.lock();
        m.bind()?;
        if self.fast_pos >= m.cfg.num_codebooks {
            return Err(Error::Internal("more fast steps than codebooks in one frame".into()));
        }
        if hidden.len() != m.cfg.dim {
            return Err(Error::arg("hidden", format!("expected {} values", m.cfg.dim)));
        }
        let ws = self.ws().map_err(|e| backend_err("fast", e))?;
        if self.fast_pos == 0 {
            m.gpu.upload(ws.hidden.ptr(), hidden).map_err(|e| backend_err("fast upload", e))?;
        }
        m.gpu.upload(ws.code.ptr(), &[code]).map_err(|e| backend_err("fast upload", e))?;
        m.fast_step(ws, self.fast_pos, ws.code.ptr()).map_err(|e| backend_err("fast", e))?;
        let mut logits = vec![0f32; m.cfg.fast_logit_rows];
        m.gpu.download(&mut logits, ws.flogits.ptr()).map_err(|e| backend_err("fast logits", e))?;
        self.fast_pos += 1;
        Ok(logits)
    }

    fn kv_len(&self) -> usize {
        self.kv_len
    }
}

impl FrameStep for CudaRequest {
    fn prefill(&mut self, tokens: &[i64], t: usize) -> Result<Vec<f32>> {
        let m = self.model.clone();
        let _g = m.op_lock.lock();
        m.bind()?;
        self.slow_upload(tokens, t)?;
        let ws = self.ws().map_err(|e| backend_err("slow", e))?;
        let mut logits = vec![0f32; m.cfg.head_rows()];
        m.gpu.download(&mut logits, ws.logits.ptr()).map_err(|e| backend_err("slow logits", e))?;
        Ok(logits)
    }

    fn step(&mut self, rows: &mut [StepRow<'_>]) -> Result<()> {
        // One request per workspace: a batch of one (rows beyond it would need a batched
        // frame graph, measured on a GPU first).
        let [row] = rows else {
            return Err(Error::Internal(format!("cuda steps one request, got {}", rows.len())));
        };
        let t0 = row.profile.as_ref().map(|_| std::time::Instant::now());
        row.out = self.next_device_frame(row.sampling)?;
        if let (Some(p), Some(t0)) = (row.profile.as_deref_mut(), t0) {
            p.slow += t0.elapsed(); // the whole frame, fast steps and sampling included
        }
        Ok(())
    }
}
