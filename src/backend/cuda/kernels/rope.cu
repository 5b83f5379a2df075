// qk-norm + interleaved RoPE + KV-cache write, for T rows of a fused qkv projection.
// qkv: [T, (nh + 2*nkv) * hd] f32, split [q | k | v] as fish-speech's wqkv.
// Positions are pos0 + t, pos0 = *pos_ptr (device counter) + pos_add.
// qk-norm (use_qk_norm != 0): RMSNorm(hd) per head with q_norm / k_norm weights, before RoPE.
// RoPE (llama.py L928-940): adjacent pairs (x0, x1) -> (x0*c - x1*s, x1*c + x0*s) with the
// bf16-rounded table rope[pos][i] = (cos, sin) as bf16 bits, [max_pos, hd/2, 2].
// q is rotated in place; k (rotated) and v go to the caches kc/vc: [nkv, max_pos, hd], bf16
// (rounded to nearest even), or f32 when kv_f32 != 0 (exact mode, fp32 bundles).
// grid (T, nh + 2*nkv), block = hd/2 rounded up to a multiple of 32 (one pair per thread; the
// extra lanes take part in the reduction only).
extern "C" __global__ void qk_rope_f32(float* __restrict__ qkv, int T, const int* __restrict__ pos_ptr,
                                       int pos_add, const bf16_t* __restrict__ q_norm,
                                       const bf16_t* __restrict__ k_norm, int use_qk_norm,
                                       const bf16_t* __restrict__ rope, int nh, int nkv, int hd,
                                       float eps, void* __restrict__ kc, void* __restrict__ vc,
                                       int max_pos, int kv_f32) {
    pdl_enter();
    __shared__ float scratch[32];
    const int t = blockIdx.x, head = blockIdx.y, i = threadIdx.x;
    const int row_w = (nh + 2 * nkv) * hd;
    const int pos = *pos_ptr + pos_add + t;
    float* row = qkv + (size_t)t * row_w;
    const bool is_q = head < nh, is_k = !is_q && head < nh + nkv;
    float* x = row + (size_t)head * hd;
    const bool active = i < hd / 2;
    float x0 = active ? x[2 * i] : 0.0f, x1 = active ? x[2 * i + 1] : 0.0f;
    if (!is_q && !is_k) {
        if (!active) return;
        // v: copied to the cache as is.
        const int vh = head - nh - nkv;
        if (pos < max_pos) kv_store2(vc, ((size_t)vh * max_pos + pos) * hd + 2 * i, x0, x1, kv_f32);
        return;
    }
    const int p = pos < max_pos ? pos : max_pos - 1;
    qk_norm_rope(x0, x1, use_qk_norm ? (is_q ? q_norm : k_norm) : 0, rope, p, hd, eps, scratch);
    if (!active) return;
    if (is_q) {
        x[2 * i] = x0;
        x[2 * i + 1] = x1;
    } else if (pos < max_pos) {
        kv_store2(kc, ((size_t)(head - nh) * max_pos + pos) * hd + 2 * i, x0, x1, kv_f32);
    }
}
