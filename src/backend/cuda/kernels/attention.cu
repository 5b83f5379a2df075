// Causal GQA attention over the filled KV length only, split-K (flash-decoding).
// q: [T, *] f32 with row stride q_stride, head h at q[t*q_stride + h*hd]; query t sits at absolute
// position p = *pos_ptr + pos_add + t and sees keys 0..=p. kc/vc: [nkv, max_pos, hd], bf16 or
// f32 (kv_f32 != 0). Query head h reads kv head h / (nh / nkv) (fish-speech repeat_interleave).
// grid (nh, T, n_split), block 128 (4 warps); each block handles a contiguous key range of at
// least ATT_MIN_KEYS keys, so a short context uses fewer than n_split blocks (the split count is
// fixed when the frame graph is captured, the context length is not); the others exit at once.
// A warp takes 32 keys at a time, one per lane: each lane scores its key (q from shared memory,
// its K row in 16-byte loads), the warp updates the online softmax once per tile, and the V rows
// are summed with the lanes across the head dimension — two memory round trips per 32 keys
// rather than per key. hd is a multiple of 8.
// One active block writes the normalised output ([T, nh*hd] f32, row stride out_stride).
// Several: each writes its un-normalised partial (m, l, o[hd]) to part_ml/part_o and counts
// itself in counters[h*T + t] ([nh * T] u32, zero between launches); the last of (h, t) to
// finish merges the partials into out and puts the counter back to zero, so the kernel can be
// replayed in a graph. hd <= 128.
//
// Decode (T == 1) with rope != 0 also does qk_rope_f32's work, one launch fewer per layer: q
// comes un-rotated from the qkv row and each block normalises and rotates its head itself; the
// block(s) whose range ends at the new key p build k_p and v_p from the same row (rounded to the
// cache type, exactly as a read back from the cache would give them) and use them for key p, and
// the first query head of each KV group writes them to the caches. No block reads position p
// from the cache during the launch, so the write races with nothing. q_norm/k_norm may be 0 (no
// qk-norm); with rope == 0 the q, k and v of every position are read from q and the caches.

#define ATT_WARPS 4
#define ATT_MAX_EPL 4      // hd / 32, hd <= 128
#define ATT_MIN_KEYS 128   // one 32-key tile per warp: fewer keys per block only add merge work

extern "C" __global__ void attention_f32(const float* __restrict__ q, int q_stride, void* __restrict__ kc,
                                         void* __restrict__ vc, int kv_f32, int T,
                                         const int* __restrict__ pos_ptr, int pos_add, int nh, int nkv, int hd,
                                         int max_pos, float scale, int n_split, float* part_o, float* part_ml,
                                         unsigned int* counters, float* __restrict__ out, int out_stride,
                                         const bf16_t* __restrict__ rope, const bf16_t* __restrict__ q_norm,
                                         const bf16_t* __restrict__ k_norm, float eps) {
    pdl_enter();
    __shared__ float sq[128];
    __shared__ float snk[128], snv[128];  // the new key and value (rope != 0)
    __shared__ float scratch[32];
    __shared__ float sm[ATT_WARPS], sl[ATT_WARPS];
    __shared__ float so[ATT_WARPS][128];
    __shared__ int is_last;
    const int h = blockIdx.x, t = blockIdx.y, split = blockIdx.z;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int kvh = h / (nh / nkv);
    int len = *pos_ptr + pos_add + t + 1;
    if (len > max_pos) len = max_pos;
    const int chunk = max((len + n_split - 1) / n_split, ATT_MIN_KEYS);
    const int active = (len + chunk - 1) / chunk;
    if (split >= active) return;  // the whole block: no key of this context is ours
    const int begin = split * chunk;
    const int end = min(len, begin + chunk);

    const float* qrow = q + (size_t)t * q_stride;
    int new_key = -1;  // position whose k and v come from qrow rather than the caches
    if (rope != 0) {
        const int pos = *pos_ptr + pos_add + t;
        const int p = pos < max_pos ? pos : max_pos - 1;
        const int i = threadIdx.x;
        const bool pair = i < hd / 2;
        float x0 = pair ? qrow[(size_t)h * hd + 2 * i] : 0.0f, x1 = pair ? qrow[(size_t)h * hd + 2 * i + 1] : 0.0f;
        qk_norm_rope(x0, x1, q_norm, rope, p, hd, eps, scratch);
        if (pair) {
            sq[2 * i] = x0;
            sq[2 * i + 1] = x1;
        }
        if (pos < max_pos && pos >= begin && pos < end) {  // uniform over the block
            new_key = pos;
            const float* kx = qrow + (size_t)(nh + kvh) * hd;
            const float* vx = qrow + (size_t)(nh + nkv + kvh) * hd;
            float k0 = pair ? kx[2 * i] : 0.0f, k1 = pair ? kx[2 * i + 1] : 0.0f;
            qk_norm_rope(k0, k1, k_norm, rope, p, hd, eps, scratch);
            const float v0 = pair ? vx[2 * i] : 0.0f, v1 = pair ? vx[2 * i + 1] : 0.0f;
            if (pair) {
                snk[2 * i] = kv_f32 ? k0 : bf16_to_f32(f32_to_bf16(k0));
                snk[2 * i + 1] = kv_f32 ? k1 : bf16_to_f32(f32_to_bf16(k1));
                snv[2 * i] = kv_f32 ? v0 : bf16_to_f32(f32_to_bf16(v0));
                snv[2 * i + 1] = kv_f32 ? v1 : bf16_to_f32(f32_to_bf16(v1));
                if (h % (nh / nkv) == 0) {
                    const size_t at = ((size_t)kvh * max_pos + pos) * hd + 2 * i;
                    kv_store2(kc, at, k0, k1, kv_f32);
                    kv_store2(vc, at, v0, v1, kv_f32);
                }
            }
        }
    } else {
        for (int e = threadIdx.x; e < hd; e += blockDim.x) sq[e] = qrow[(size_t)h * hd + e];
    }
    __syncthreads();

    float m = S1_NEG_INF, l = 0.0f;
    float acc[ATT_MAX_EPL] = {0.0f, 0.0f, 0.0f, 0.0f};
    const size_t head_base = (size_t)kvh * max_pos * hd;
    for (int j0 = begin + warp * 32; j0 < end; j0 += ATT_WARPS * 32) {
        const int j = j0 + lane;
        float s = S1_NEG_INF;
        if (j == new_key) {
            float d = 0.0f;
            for (int e = 0; e < hd; ++e) d += sq[e] * snk[e];
            s = d * scale;
        } else if (j < end) {
            const size_t row = head_base + (size_t)j * hd;
            float d = 0.0f;
            // 64 elements per round trip: the eight loads of a group are issued together.
            for (int e0 = 0; e0 < hd; e0 += 64) {
                float kv[8][8];
#pragma unroll
                for (int c = 0; c < 8; ++c)
                    if (e0 + 8 * c < hd) kv_load8(kc, row + e0 + 8 * c, kv_f32, kv[c]);
#pragma unroll
                for (int c = 0; c < 8; ++c)
                    if (e0 + 8 * c < hd) {
#pragma unroll
                        for (int i = 0; i < 8; ++i) d += sq[e0 + 8 * c + i] * kv[c][i];
                    }
            }
            s = d * scale;
        }
        const float m_new = fmaxf(m, warp_max(s));
        const float corr = expf(m - m_new);  // m = -inf on the first tile: corr = 0
        const float p = j < end ? expf(s - m_new) : 0.0f;
        l = l * corr + warp_sum(p);
#pragma unroll
        for (int r = 0; r < ATT_MAX_EPL; ++r) acc[r] *= corr;
        const int nk = min(32, end - j0);
#pragma unroll 8
        for (int i = 0; i < nk; ++i) {
            const float pi = __shfl_sync(0xffffffffu, p, i);
            const size_t row = head_base + (size_t)(j0 + i) * hd;
            const bool fresh = j0 + i == new_key;  // the same for the whole warp
#pragma unroll
            for (int r = 0; r < ATT_MAX_EPL; ++r) {
                const int e = lane + 32 * r;
                if (e < hd) acc[r] += pi * (fresh ? snv[e] : kv_load(vc, row + e, kv_f32));
            }
        }
        m = m_new;
    }
    if (lane == 0) {
        sm[warp] = m;
        sl[warp] = l;
    }
#pragma unroll
    for (int r = 0; r < ATT_MAX_EPL; ++r) {
        const int e = lane + 32 * r;
        if (e < hd) so[warp][e] = acc[r];
    }
    __syncthreads();
    float M = S1_NEG_INF;
    for (int w = 0; w < ATT_WARPS; ++w) M = fmaxf(M, sm[w]);
    float L = 0.0f;
    for (int w = 0; w < ATT_WARPS; ++w)
        if (sm[w] != S1_NEG_INF) L += sl[w] * expf(sm[w] - M);
    float* orow = out + (size_t)t * out_stride + (size_t)h * hd;
    if (active == 1) {
        const float inv = L > 0.0f ? 1.0f / L : 0.0f;
        for (int e = threadIdx.x; e < hd; e += blockDim.x) {
            float o = 0.0f;
            for (int w = 0; w < ATT_WARPS; ++w)
                if (sm[w] != S1_NEG_INF) o += so[w][e] * expf(sm[w] - M);
            orow[e] = o * inv;
        }
        return;
    }
    const size_t base = ((size_t)h * T + t) * n_split;
    const size_t idx = base + split;
    if (threadIdx.x == 0) {
        part_ml[idx * 2] = M;
        part_ml[idx * 2 + 1] = L;
    }
    for (int e = threadIdx.x; e < hd; e += blockDim.x) {
        float o = 0.0f;
        for (int w = 0; w < ATT_WARPS; ++w)
            if (sm[w] != S1_NEG_INF) o += so[w][e] * expf(sm[w] - M);
        part_o[idx * hd + e] = o;
    }
    // Partials visible to every SM before this block is counted.
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
        unsigned int* c = counters + (size_t)h * T + t;
        is_last = atomicAdd(c, 1u) == (unsigned int)active - 1u;
        if (is_last) *c = 0u;  // every block of (h, t) has counted: ready for the next launch
    }
    __syncthreads();
    if (!is_last) return;
    __threadfence();
    // The merge reads other blocks' partials from L2 (__ldcg: not through this SM's L1).
    float MM = S1_NEG_INF;
    for (int s = 0; s < active; ++s) MM = fmaxf(MM, __ldcg(part_ml + (base + s) * 2));
    float LL = 0.0f;
    for (int s = 0; s < active; ++s) {
        const float ms = __ldcg(part_ml + (base + s) * 2);
        if (ms != S1_NEG_INF) LL += __ldcg(part_ml + (base + s) * 2 + 1) * expf(ms - MM);
    }
    const float inv = LL > 0.0f ? 1.0f / LL : 0.0f;
    for (int e = threadIdx.x; e < hd; e += blockDim.x) {
        float o = 0.0f;
        for (int s = 0; s < active; ++s) {
            const float ms = __ldcg(part_ml + (base + s) * 2);
            if (ms != S1_NEG_INF) o += __ldcg(part_o + (base + s) * hd + e) * expf(ms - MM);
        }
        orow[e] = o * inv;
    }
}
