// Causal GQA attention over the filled KV length only, split-K (flash-decoding).
// q: [T, *] f32 with row stride q_stride, head h at q[t*q_stride + h*hd]; query t sits at absolute
// position p = *pos_ptr + pos_add + t and sees keys 0..=p. kc/vc: [nkv, max_pos, hd] bf16.
// Query head h reads kv head h / (nh / nkv) (fish-speech repeat_interleave).
// Pass 1 `attention_f32`: grid (nh, T, n_split), block 128 (4 warps); each block handles a
// contiguous key range and writes its un-normalised partial (m, l, o[hd]).
// Pass 2 `attention_combine_f32`: grid (nh, T), block 128; merges the splits into out
// ([T, nh*hd] f32, row stride out_stride). hd <= 128.
// With n_split == 1 pass 1 writes the normalised output itself and pass 2 is not launched.

#define ATT_WARPS 4
#define ATT_MAX_EPL 4  // hd / 32, hd <= 128

extern "C" __global__ void attention_f32(const float* __restrict__ q, int q_stride,
                                         const bf16_t* __restrict__ kc, const bf16_t* __restrict__ vc,
                                         int T, const int* __restrict__ pos_ptr, int pos_add, int nh, int nkv,
                                         int hd, int max_pos, float scale, int n_split,
                                         float* __restrict__ part_o, float* __restrict__ part_ml,
                                         float* __restrict__ out, int out_stride) {
    __shared__ float sq[128];
    __shared__ float sm[ATT_WARPS], sl[ATT_WARPS];
    __shared__ float so[ATT_WARPS][128];
    const int h = blockIdx.x, t = blockIdx.y, split = blockIdx.z;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int kvh = h / (nh / nkv);
    int len = *pos_ptr + pos_add + t + 1;
    if (len > max_pos) len = max_pos;
    const int chunk = (len + n_split - 1) / n_split;
    const int begin = split * chunk;
    const int end = min(len, begin + chunk);

    for (int e = threadIdx.x; e < hd; e += blockDim.x) sq[e] = q[(size_t)t * q_stride + (size_t)h * hd + e];
    __syncthreads();

    float m = S1_NEG_INF, l = 0.0f;
    float acc[ATT_MAX_EPL] = {0.0f, 0.0f, 0.0f, 0.0f};
    const bf16_t* kbase = kc + (size_t)kvh * max_pos * hd;
    const bf16_t* vbase = vc + (size_t)kvh * max_pos * hd;
    for (int j = begin + warp; j < end; j += ATT_WARPS) {
        const bf16_t* kr = kbase + (size_t)j * hd;
        float s = 0.0f;
#pragma unroll
        for (int r = 0; r < ATT_MAX_EPL; ++r) {
            const int e = lane + 32 * r;
            if (e < hd) s += sq[e] * bf16_to_f32(kr[e]);
        }
        s = warp_sum(s) * scale;
        const float m_new = fmaxf(m, s);
        const float corr = expf(m - m_new);  // m = -inf on the first key: corr = 0
        const float pj = expf(s - m_new);
        l = l * corr + pj;
        const bf16_t* vr = vbase + (size_t)j * hd;
#pragma unroll
        for (int r = 0; r < ATT_MAX_EPL; ++r) {
            const int e = lane + 32 * r;
            acc[r] = acc[r] * corr + (e < hd ? pj * bf16_to_f32(vr[e]) : 0.0f);
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
    if (n_split == 1) {
        float L = 0.0f;
        for (int w = 0; w < ATT_WARPS; ++w)
            if (sm[w] != S1_NEG_INF) L += sl[w] * expf(sm[w] - M);
        const float inv = L > 0.0f ? 1.0f / L : 0.0f;
        for (int e = threadIdx.x; e < hd; e += blockDim.x) {
            float o = 0.0f;
            for (int w = 0; w < ATT_WARPS; ++w)
                if (sm[w] != S1_NEG_INF) o += so[w][e] * expf(sm[w] - M);
            out[(size_t)t * out_stride + (size_t)h * hd + e] = o * inv;
        }
        return;
    }
    const size_t idx = ((size_t)h * T + t) * n_split + split;
    if (threadIdx.x == 0) {
        float L = 0.0f;
        for (int w = 0; w < ATT_WARPS; ++w)
            if (sm[w] != S1_NEG_INF) L += sl[w] * expf(sm[w] - M);
        part_ml[idx * 2] = M;
        part_ml[idx * 2 + 1] = L;
    }
    for (int e = threadIdx.x; e < hd; e += blockDim.x) {
        float o = 0.0f;
        for (int w = 0; w < ATT_WARPS; ++w)
            if (sm[w] != S1_NEG_INF) o += so[w][e] * expf(sm[w] - M);
        part_o[idx * hd + e] = o;
    }
}

extern "C" __global__ void attention_combine_f32(const float* __restrict__ part_o,
                                                 const float* __restrict__ part_ml, float* __restrict__ out,
                                                 int out_stride, int T, int nh, int hd, int n_split) {
    const int h = blockIdx.x, t = blockIdx.y;
    const size_t base = ((size_t)h * T + t) * n_split;
    float M = S1_NEG_INF;
    for (int s = 0; s < n_split; ++s) M = fmaxf(M, part_ml[(base + s) * 2]);
    float L = 0.0f;
    for (int s = 0; s < n_split; ++s) {
        const float ms = part_ml[(base + s) * 2];
        if (ms != S1_NEG_INF) L += part_ml[(base + s) * 2 + 1] * expf(ms - M);
    }
    const float inv = L > 0.0f ? 1.0f / L : 0.0f;
    for (int e = threadIdx.x; e < hd; e += blockDim.x) {
        float o = 0.0f;
        for (int s = 0; s < n_split; ++s) {
            const float ms = part_ml[(base + s) * 2];
            if (ms != S1_NEG_INF) o += part_o[(base + s) * hd + e] * expf(ms - M);
        }
        out[(size_t)t * out_stride + (size_t)h * hd + e] = o * inv;
    }
}
