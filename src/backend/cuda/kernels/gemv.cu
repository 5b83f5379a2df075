// Mat-vec (and small-batch mat-mat) with bf16 or int8 weights and f32 activations, for decode.
// W: [N, K] row-major (torch Linear layout), x: [T, K] f32 (row stride x_stride), y: [T, N] f32
// (row stride y_stride).
//
// A block is 8 warps = (8 / ks) output rows x ks parts of K: warp w computes row
// blockIdx.x * (8 / ks) + w / ks over the K range of part w % ks, and the parts are summed in
// shared memory. Splitting K keeps enough loads in flight when N is small (1024 rows would
// otherwise be 1024 warps on 132 SMs). Each lane streams 16-byte weight vectors, GEMV_UNROLL
// of them issued before the first is used. The launcher picks ks (plan::gemv_split) so that
// K / ks is a multiple of 8 (bf16) or 16 (int8).
//
// The block stages the activations of a pass (up to GEMV_TT rows) in shared memory once, so
// the eight warps read them from there rather than each from L2.
//
// Optional RMSNorm prologue (norm_w != 0): the product is taken with rmsnorm(x[t]) * norm_w
// without writing it out: y = r_t * (W . (x[t] * norm_w)), r_t = rsqrt(mean(x[t]^2) + eps).
// The norm runs over the whole row, so x rows then hold exactly K values.
// grid (ceil(N / (8 / ks))), block 256, dynamic shared memory min(T, GEMV_TT) * K * 4 bytes.

#define GEMV_TT 4      // activation rows per pass
#define GEMV_UNROLL 4  // 16-byte weight loads in flight per lane

// Activations of the pass, staged once per block: gemv_x[t * K + k] = x[t, k] (times the norm
// weight). Dynamic shared memory, min(T, GEMV_TT) * K floats (plan::gemv).
extern __shared__ float gemv_x[];

__device__ __forceinline__ float dot4_i8(int w, float4 v) {
    return (float)(signed char)(w & 0xff) * v.x + (float)(signed char)((w >> 8) & 0xff) * v.y
         + (float)(signed char)((w >> 16) & 0xff) * v.z + (float)(signed char)((w >> 24) & 0xff) * v.w;
}

// One 16-byte weight vector per lane (8 bf16 or 16 int8 weights) and its dot product with the
// staged activations at the same k.
template <typename W> struct WVec;

template <> struct WVec<bf16_t> {
    typedef uint4 V;
    static constexpr int PER = 8;
    static __device__ __forceinline__ V load(const bf16_t* p) { return __ldg(reinterpret_cast<const uint4*>(p)); }
    static __device__ __forceinline__ V zero() { return make_uint4(0u, 0u, 0u, 0u); }
    static __device__ __forceinline__ float dot(V w, const float* xs) {
        const float4 a = *reinterpret_cast<const float4*>(xs);
        const float4 b = *reinterpret_cast<const float4*>(xs + 4);
        return bf16_lo(w.x) * a.x + bf16_hi(w.x) * a.y + bf16_lo(w.y) * a.z + bf16_hi(w.y) * a.w
             + bf16_lo(w.z) * b.x + bf16_hi(w.z) * b.y + bf16_lo(w.w) * b.z + bf16_hi(w.w) * b.w;
    }
};

template <> struct WVec<signed char> {
    typedef int4 V;
    static constexpr int PER = 16;
    static __device__ __forceinline__ V load(const signed char* p) { return __ldg(reinterpret_cast<const int4*>(p)); }
    static __device__ __forceinline__ V zero() { return make_int4(0, 0, 0, 0); }
    static __device__ __forceinline__ float dot(V w, const float* xs) {
        const float4* v = reinterpret_cast<const float4*>(xs);
        return dot4_i8(w.x, v[0]) + dot4_i8(w.y, v[1]) + dot4_i8(w.z, v[2]) + dot4_i8(w.w, v[3]);
    }
};

// Stages tn activation rows (times norm_w when given) in gemv_x and returns r_t, the RMSNorm
// factor of each row (1 without the norm), to every thread. Every thread of the block calls it,
// and this is where a GEMV waits for the kernel before it (pdl_enter, common.cuh).
__device__ __forceinline__ void stage_x(const float* x, int x_stride, int K, int tn, const bf16_t* norm_w,
                                        float eps, float* r) {
    __shared__ float red_ss[8][GEMV_TT];
    float ss[GEMV_TT] = {0.0f, 0.0f, 0.0f, 0.0f};
    pdl_enter();      // x comes from the previous kernel (the weight loads before this may not wait)
    __syncthreads();  // the previous pass has finished reading gemv_x and red_ss
    for (int i = threadIdx.x * 4; i < tn * K; i += blockDim.x * 4) {
        const int t = i / K, k = i - t * K;
        float4 v = __ldg(reinterpret_cast<const float4*>(x + (size_t)t * x_stride + k));
        if (norm_w != 0) {
#pragma unroll
            for (int u = 0; u < GEMV_TT; ++u)
                if (u == t) ss[u] += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
            const uint2 g = __ldg(reinterpret_cast<const uint2*>(norm_w + k));
            v.x *= bf16_lo(g.x);
            v.y *= bf16_hi(g.x);
            v.z *= bf16_lo(g.y);
            v.w *= bf16_hi(g.y);
        }
        *reinterpret_cast<float4*>(gemv_x + i) = v;
    }
    if (norm_w != 0) {
#pragma unroll
        for (int t = 0; t < GEMV_TT; ++t) {
            ss[t] = warp_sum(ss[t]);
            if ((threadIdx.x & 31) == 0) red_ss[threadIdx.x >> 5][t] = ss[t];
        }
    }
    __syncthreads();
#pragma unroll
    for (int t = 0; t < GEMV_TT; ++t) {
        r[t] = 1.0f;
        if (norm_w != 0 && t < tn) {
            float tot = 0.0f;
            for (int w = 0; w < 8; ++w) tot += red_ss[w][t];
            r[t] = rsqrtf(tot / (float)K + eps);
        }
    }
}

// The products of NR weight rows with the tn staged rows over [kb, ke), lane-local (the caller
// reduces). This warp's first GEMV_UNROLL weight vectors per row are requested before the
// activations are staged, so their DRAM latency overlaps the staging (with S1-mini's shapes
// that is every vector of the row).
template <typename W, int NR>
__device__ __forceinline__ void gemv_pass(const W* const* wrows, bool live, const float* x, int x_stride, int K,
                                          const bf16_t* nw, float eps, int kb, int ke, int tn,
                                          float (*acc)[GEMV_TT]) {
    typedef WVec<W> Vec;
    const int span = 32 * Vec::PER;  // elements per warp-wide step
    const int k0 = kb + (threadIdx.x & 31) * Vec::PER;
    typename Vec::V w[NR][GEMV_UNROLL];
#pragma unroll
    for (int j = 0; j < NR; ++j)
#pragma unroll
        for (int u = 0; u < GEMV_UNROLL; ++u) {
            const int k = k0 + u * span;
            w[j][u] = live && k < ke ? Vec::load(wrows[j] + k) : Vec::zero();
        }
    float r[GEMV_TT];
    stage_x(x, x_stride, K, tn, nw, eps, r);
    if (!live) return;
    for (int k1 = k0; k1 < ke; k1 += span * GEMV_UNROLL) {
        if (k1 != k0) {  // rows longer than GEMV_UNROLL vectors per lane: the next batch
#pragma unroll
            for (int j = 0; j < NR; ++j)
#pragma unroll
                for (int u = 0; u < GEMV_UNROLL; ++u) {
                    const int k = k1 + u * span;
                    w[j][u] = k < ke ? Vec::load(wrows[j] + k) : Vec::zero();
                }
        }
#pragma unroll
        for (int u = 0; u < GEMV_UNROLL; ++u) {
            const int k = k1 + u * span;
            if (k < ke) {
#pragma unroll
                for (int t = 0; t < GEMV_TT; ++t) {
                    if (t < tn) {
#pragma unroll
                        for (int j = 0; j < NR; ++j) acc[j][t] += Vec::dot(w[j][u], gemv_x + t * K + k);
                    }
                }
            }
        }
    }
#pragma unroll
    for (int j = 0; j < NR; ++j)
#pragma unroll
        for (int t = 0; t < GEMV_TT; ++t) acc[j][t] *= r[t];
}

// Warp sums, then the sum over the ks K-parts of each row (through shared memory). Every thread
// of the block must call it; the totals end up in the lanes of each row's part-0 warp.
__device__ __forceinline__ void reduce_parts(float* acc, int ks, float (*red)[GEMV_TT]) {
#pragma unroll
    for (int t = 0; t < GEMV_TT; ++t) acc[t] = warp_sum(acc[t]);
    if (ks == 1) return;
    const int warp = threadIdx.x >> 5;
    __syncthreads();  // `red` may still be read from the previous pass
    if ((threadIdx.x & 31) == 0) {
#pragma unroll
        for (int t = 0; t < GEMV_TT; ++t) red[warp][t] = acc[t];
    }
    __syncthreads();
    if (warp % ks == 0) {
#pragma unroll
        for (int t = 0; t < GEMV_TT; ++t) {
            float s = 0.0f;
            for (int p = 0; p < ks; ++p) s += red[warp + p][t];
            acc[t] = s;
        }
    }
}

// Which row and K range this warp computes.
struct GemvSlot {
    int n, kb, ke;
    bool live, writer;  // writer: lane 0 of the row's part-0 warp
};

__device__ __forceinline__ GemvSlot gemv_slot(int N, int K, int ks) {
    const int warp = threadIdx.x >> 5;
    GemvSlot s;
    s.n = blockIdx.x * (8 / ks) + warp / ks;
    const int kp = K / ks, part = warp % ks;
    s.kb = part * kp;
    s.ke = s.kb + kp;
    s.live = s.n < N;
    s.writer = s.live && part == 0 && (threadIdx.x & 31) == 0;
    return s;
}

// y[t, n] = (res ? res[t, n] : 0) + scale[n] * (W[n, :] . xn[t, :]), scale = 1 for bf16.
// `res` may alias `y` (in-place residual).
template <typename W>
__device__ __forceinline__ void gemv_body(const W* W0, const float* scale, const float* x, int x_stride, float* y,
                                          int y_stride, const float* res, int N, int K, int T,
                                          const bf16_t* norm_w, float eps, int ks) {
    __shared__ float red[8][GEMV_TT];
    const GemvSlot s = gemv_slot(N, K, ks);
    const W* rows[1] = {W0 + (size_t)(s.live ? s.n : 0) * K};
    for (int t0 = 0; t0 < T; t0 += GEMV_TT) {
        const int tn = min(GEMV_TT, T - t0);
        float acc[1][GEMV_TT] = {{0.0f, 0.0f, 0.0f, 0.0f}};
        gemv_pass<W, 1>(rows, s.live, x + (size_t)t0 * x_stride, x_stride, K, norm_w, eps, s.kb, s.ke, tn, acc);
        reduce_parts(acc[0], ks, red);
        if (s.writer) {
            const float sc = scale ? scale[s.n] : 1.0f;
            for (int t = 0; t < tn; ++t) {
                const size_t o = (size_t)(t0 + t) * y_stride + s.n;
                y[o] = (res ? res[o] : 0.0f) + acc[0][t] * sc;
            }
        }
    }
}

// y[t, n] = silu(s1[n] W1[n] . xn[t]) * (s3[n] W3[n] . xn[t])  (fish-speech FeedForward before w2).
template <typename W>
__device__ __forceinline__ void swiglu_body(const W* W1, const float* s1, const W* W3, const float* s3,
                                            const float* x, int x_stride, float* y, int y_stride, int N, int K,
                                            int T, const bf16_t* norm_w, float eps, int ks) {
    __shared__ float red[8][GEMV_TT];
    const GemvSlot s = gemv_slot(N, K, ks);
    const size_t off = (size_t)(s.live ? s.n : 0) * K;
    const W* rows[2] = {W1 + off, W3 + off};
    for (int t0 = 0; t0 < T; t0 += GEMV_TT) {
        const int tn = min(GEMV_TT, T - t0);
        float acc[2][GEMV_TT] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
        gemv_pass<W, 2>(rows, s.live, x + (size_t)t0 * x_stride, x_stride, K, norm_w, eps, s.kb, s.ke, tn, acc);
        reduce_parts(acc[0], ks, red);
        reduce_parts(acc[1], ks, red);
        if (s.writer) {
            const float a1 = s1 ? s1[s.n] : 1.0f, a3 = s3 ? s3[s.n] : 1.0f;
            for (int t = 0; t < tn; ++t) {
                const float g = acc[0][t] * a1;
                y[(size_t)(t0 + t) * y_stride + s.n] = (g / (1.0f + expf(-g))) * (acc[1][t] * a3);
            }
        }
    }
}

extern "C" __global__ void gemv_bf16(const bf16_t* __restrict__ W, const float* x, int x_stride, float* y,
                                     int y_stride, const float* res, int N, int K, int T,
                                     const bf16_t* norm_w, float eps, int ks) {
    gemv_body<bf16_t>(W, 0, x, x_stride, y, y_stride, res, N, K, T, norm_w, eps, ks);
}

extern "C" __global__ void gemv_swiglu_bf16(const bf16_t* __restrict__ W1, const bf16_t* __restrict__ W3,
                                            const float* x, int x_stride, float* y, int y_stride, int N,
                                            int K, int T, const bf16_t* norm_w, float eps, int ks) {
    swiglu_body<bf16_t>(W1, 0, W3, 0, x, x_stride, y, y_stride, N, K, T, norm_w, eps, ks);
}

// int8 weight-only variants: W[n, k] = q[n, k] * scale[n].
extern "C" __global__ void gemv_i8(const signed char* __restrict__ W, const float* __restrict__ scale,
                                   const float* x, int x_stride, float* y, int y_stride, const float* res,
                                   int N, int K, int T, const bf16_t* norm_w, float eps, int ks) {
    gemv_body<signed char>(W, scale, x, x_stride, y, y_stride, res, N, K, T, norm_w, eps, ks);
}

extern "C" __global__ void gemv_swiglu_i8(const signed char* __restrict__ W1, const float* __restrict__ s1,
                                          const signed char* __restrict__ W3, const float* __restrict__ s3,
                                          const float* x, int x_stride, float* y, int y_stride, int N, int K,
                                          int T, const bf16_t* norm_w, float eps, int ks) {
    swiglu_body<signed char>(W1, s1, W3, s3, x, x_stride, y, y_stride, N, K, T, norm_w, eps, ks);
}

// Per-output-channel symmetric int8 quantisation at load: scale[n] = max|W[n,:]| / 127.
// grid (N), block 256.
extern "C" __global__ void quantize_i8_bf16(const bf16_t* __restrict__ W, signed char* __restrict__ q,
                                            float* __restrict__ scale, int K) {
    pdl_enter();
    __shared__ float scratch[32];
    const bf16_t* row = W + (size_t)blockIdx.x * K;
    float m = 0.0f;
    for (int k = threadIdx.x; k < K; k += blockDim.x) m = fmaxf(m, fabsf(bf16_to_f32(row[k])));
    m = block_max(m, scratch);
    const float s = m > 0.0f ? m / 127.0f : 1.0f;
    if (threadIdx.x == 0) scale[blockIdx.x] = s;
    for (int k = threadIdx.x; k < K; k += blockDim.x) {
        float v = rintf(bf16_to_f32(row[k]) / s);
        v = fminf(127.0f, fmaxf(-127.0f, v));
        q[(size_t)blockIdx.x * K + k] = (signed char)v;
    }
}

// W[n, k] = bf16(q[n, k] * scale[n]): an int8 layer as bf16 for the prefill's cuBLAS GEMMs (an
// int8 model keeps no bf16 originals; one scratch matrix is refilled per product). count = N * K.
// grid-stride.
extern "C" __global__ void dequantize_i8_bf16(const signed char* __restrict__ q, const float* __restrict__ scale,
                                              bf16_t* __restrict__ W, int K, int count) {
    pdl_enter();
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < count; i += gridDim.x * blockDim.x)
        W[i] = f32_to_bf16((float)q[i] * scale[i / K]);
}

// out[i] = silu(a[i]) * b[i] (prefill SwiGLU after two cuBLAS GEMMs). grid-stride.
extern "C" __global__ void silu_mul_f32(const float* __restrict__ a, const float* __restrict__ b,
                                        float* __restrict__ out, int n) {
    pdl_enter();
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        const float x = a[i];
        out[i] = (x / (1.0f + expf(-x))) * b[i];
    }
}
