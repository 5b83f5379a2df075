//! The transformer passes built from the launchers: the layers of a stack, the slow pass
//! (prefill chunk or decode step), a fast step, the samplings of one frame, the whole decode
//! frame and its capture as one CUDA graph.

use cudarc::driver::CudaGraph;

use super::engine::Model;
use super::error::CudaResult;
use super::request::Workspace;
use super::weights::Lin;

impl Model {
    /// Layers of one stack over T rows of ws.x; KV at positions *pos_ptr + pos_add + t.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn layers(
        &self,
        ws: &Workspace,
        fast: bool,
        t: usize,
        pos_ptr: u64,
        pos_add: usize,
        splits: usize,
    ) -> CudaResult<()> {
        let (st, layers, rope, kk, vv) = if fast {
            (&self.fast, &self.w.fast_layers, self.w.rope_fast.ptr(), &ws.fkv_k, &ws.fkv_v)
        } else {
            (&self.slow, &self.w.layers, self.w.rope_slow.ptr(), &ws.kv_k, &ws.kv_v)
        };
        let dim = self.cfg.dim;
        let layer_bytes = st.kv_layer_bytes();
        for (i, l) in layers.iter().enumerate() {
            let (kc, vc) = (kk.at(i * layer_bytes), vv.at(i * layer_bytes));
            let (x, qkv, att, ffa) = (ws.x.ptr(), ws.qkv.ptr(), ws.att.ptr(), ws.ffa.ptr());
            self.linear(ws, l.wqkv, Some(l.attn_norm), x, qkv, st.qkv_w(), dim, t, false)?;
            if t == 1 {
                // Decode: RoPE and the KV write happen in the attention launch.
                let fused = Some((l, rope));
                self.attention(ws, st, t, pos_ptr, pos_add, kc, vc, splits, fused)?;
            } else {
                self.rope(st, l, qkv, t, pos_ptr, pos_add, rope, kc, vc)?;
                self.attention(ws, st, t, pos_ptr, pos_add, kc, vc, splits, None)?;
            }
            self.linear(ws, l.wo, None, att, x, dim, st.q_w(), t, true)?;
            self.swiglu(ws, l, l.ffn_norm, x, ffa, st.inter, dim, t)?;
            self.linear(ws, l.w2, None, ffa, x, dim, st.inter, t, true)?;
        }
        Ok(())
    }

    /// Slow pass over T ≤ PREFILL_CHUNK positions at kv_pos: logits + hidden of the last row,
    /// then kv_pos += T.
    pub(super) fn slow_pass(
        &self,
        ws: &Workspace,
        tokens: u64,
        tok_stride: usize,
        t: usize,
    ) -> CudaResult<()> {
        let c = &self.cfg;
        let pos_ptr = ws.state.ptr(); // S1State.kv_pos is the first word
        let splits = if t == 1 { self.slow_splits } else { 1 };
        self.embed(ws, tokens, tok_stride, t)?;
        self.layers(ws, false, t, pos_ptr, 0, splits)?;
        let last = ws.x.at((t - 1) * c.dim * 4);
        self.copy(last, ws.hidden.ptr(), c.dim)?;
        let (head, norm, logits) = (Lin::Bf16(self.w.head), Some(self.w.norm), ws.logits.ptr());
        self.linear(ws, head, norm, last, logits, c.head_rows(), c.dim, 1, false)?;
        self.advance_pos(ws, t)
    }

    /// One fast step at static position `pos`: input (hidden or fast_emb[*code]), layers,
    /// logits into ws.flogits when pos > 0.
    pub(super) fn fast_step(&self, ws: &Workspace, pos: usize, code: u64) -> CudaResult<()> {
        let c = &self.cfg;
        self.fast_input(ws, pos, code)?;
        self.layers(ws, true, 1, ws.zero_i32.ptr(), pos, 1)?;
        let (head, norm) = (Lin::Bf16(self.w.fast_head), Some(self.w.fast_norm));
        let (x, logits) = (ws.x.ptr(), ws.flogits.ptr());
        self.linear(ws, head, norm, x, logits, c.fast_logit_rows, c.dim, 1, false)
    }

    /// Samples the slow head, runs the K fast positions with their samplings, finishes the frame.
    pub(super) fn fast_and_sample(&self, ws: &Workspace) -> CudaResult<()> {
        let k = self.cfg.num_codebooks;
        self.sample(ws, 0)?;
        for pos in 0..k {
            // Position pos >= 1 embeds frame[pos] = c_{pos-1}.
            self.fast_step(ws, pos, ws.frame.at(pos * 8))?;
            if pos > 0 {
                self.sample(ws, pos)?;
            }
        }
        self.frame_finish(ws)
    }

    /// One decode frame: slow step on ws.frame (the previous frame), samplings, fast steps;
    /// everything position-dependent reads the device state, so the same launches serve every
    /// frame.
    pub(super) fn frame(&self, ws: &Workspace) -> CudaResult<()> {
        self.slow_pass(ws, ws.frame.ptr(), 1, 1)?;
        self.fast_and_sample(ws)
    }

    /// The decode frame as one graph (`None` on the kernel emulator, which launches
    /// [`Model::frame`] directly).
    pub(super) fn capture_frame(&self, ws: &Workspace) -> CudaResult<Option<CudaGraph>> {
        self.gpu.capture(|| self.frame(ws))
    }
}
