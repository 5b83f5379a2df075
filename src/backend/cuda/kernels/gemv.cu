// Mat-vec (and small-batch mat-mat) with bf16 or int8 weights and f32 activations, for decode.
// W: [N, K] row-major (torch Linear layout), x: [T, K] f32 (row stride x_stride), y: [T, N] f32
// (row stride y_stride). One warp per output row n; each lane streams 16-byte weight vectors.
// K must be a multiple of 8 (bf16) or 16 (int8); the launcher checks it.
// grid (ceil(N / 8)), block 256 (8 warps).

#define GEMV_TT 4  // activation rows per pass

__device__ __forceinline__ void fma8_bf16(float* acc, uint4 w, const float* x) {
    const float4 a = *reinterpret_cast<const float4*>(x);
    const float4 b = *reinterpret_cast<const float4*>(x + 4);
    acc[0] += bf16_lo(w.x) * a.x + bf16_hi(w.x) * a.y + bf16_lo(w.y) * a.z + bf16_hi(w.y) * a.w
            + bf16_lo(w.z) * b.x + bf16_hi(w.z) * b.y + bf16_lo(w.w) * b.z + bf16_hi(w.w) * b.w;
}

// Dot products of weight row `wrow` (bf16) with up to GEMV_TT activation rows.
__device__ __forceinline__ void dot_rows_bf16(const bf16_t* __restrict__ wrow, const float* x, int x_stride,
                                              int K, int tn, float* acc) {
    const int lane = threadIdx.x & 31;
    for (int k = lane * 8; k < K; k += 256) {
        const uint4 w = __ldg(reinterpret_cast<const uint4*>(wrow + k));
#pragma unroll
        for (int t = 0; t < GEMV_TT; ++t)
            if (t < tn) fma8_bf16(acc + t, w, x + (size_t)t * x_stride + k);
    }
#pragma unroll
    for (int t = 0; t < GEMV_TT; ++t) acc[t] = warp_sum(acc[t]);
}

__device__ __forceinline__ float dot16_i8(int4 w, const float* x) {
    float s = 0.0f;
    const int words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        const float4 a = *reinterpret_cast<const float4*>(x + 4 * j);
        const int v = words[j];
        s += (float)(signed char)(v & 0xff) * a.x + (float)(signed char)((v >> 8) & 0xff) * a.y
           + (float)(signed char)((v >> 16) & 0xff) * a.z + (float)(signed char)((v >> 24) & 0xff) * a.w;
    }
    return s;
}

__device__ __forceinline__ void dot_rows_i8(const signed char* __restrict__ wrow, const float* x, int x_stride,
                                            int K, int tn, float* acc) {
    const int lane = threadIdx.x & 31;
    for (int k = lane * 16; k < K; k += 512) {
        const int4 w = __ldg(reinterpret_cast<const int4*>(wrow + k));
#pragma unroll
        for (int t = 0; t < GEMV_TT; ++t)
            if (t < tn) acc[t] += dot16_i8(w, x + (size_t)t * x_stride + k);
    }
#pragma unroll
    for (int t = 0; t < GEMV_TT; ++t) acc[t] = warp_sum(acc[t]);
}

// y[t, n] = (res ? res[t, n] : 0) + W[n, :] . x[t, :]. `res` may alias `y` (in-place residual).
extern "C" __global__ void gemv_bf16(const bf16_t* __restrict__ W, const float* x, int x_stride, float* y,
                                     int y_stride, const float* res, int N, int K, int T) {
    const int n = blockIdx.x * 8 + (threadIdx.x >> 5);
    if (n >= N) return;
    const bf16_t* wrow = W + (size_t)n * K;
    for (int t0 = 0; t0 < T; t0 += GEMV_TT) {
        const int tn = min(GEMV_TT, T - t0);
        float acc[GEMV_TT] = {0.0f, 0.0f, 0.0f, 0.0f};
        dot_rows_bf16(wrow, x + (size_t)t0 * x_stride, x_stride, K, tn, acc);
        if ((threadIdx.x & 31) == 0) {
            for (int t = 0; t < tn; ++t) {
                const size_t o = (size_t)(t0 + t) * y_stride + n;
                y[o] = (res ? res[o] : 0.0f) + acc[t];
            }
        }
    }
}

// y[t, n] = silu(W1[n] . x[t]) * (W3[n] . x[t])   (fish-speech FeedForward before w2).
extern "C" __global__ void gemv_swiglu_bf16(const bf16_t* __restrict__ W1, const bf16_t* __restrict__ W3,
                                            const float* x, int x_stride, float* y, int y_stride, int N,
                                            int K, int T) {
    const int n = blockIdx.x * 8 + (threadIdx.x >> 5);
    if (n >= N) return;
    for (int t0 = 0; t0 < T; t0 += GEMV_TT) {
        const int tn = min(GEMV_TT, T - t0);
        float a[GEMV_TT] = {0.0f, 0.0f, 0.0f, 0.0f};
        float b[GEMV_TT] = {0.0f, 0.0f, 0.0f, 0.0f};
        dot_rows_bf16(W1 + (size_t)n * K, x + (size_t)t0 * x_stride, x_stride, K, tn, a);
        dot_rows_bf16(W3 + (size_t)n * K, x + (size_t)t0 * x_stride, x_stride, K, tn, b);
        if ((threadIdx.x & 31) == 0) {
            for (int t = 0; t < tn; ++t) {
                const float g = a[t] / (1.0f + expf(-a[t]));
                y[(size_t)(t0 + t) * y_stride + n] = g * b[t];
            }
        }
    }
}

// int8 weight-only variants: W[n, k] = q[n, k] * scale[n].
extern "C" __global__ void gemv_i8(const signed char* __restrict__ W, const float* __restrict__ scale,
                                   const float* x, int x_stride, float* y, int y_stride, const float* res,
                                   int N, int K, int T) {
    const int n = blockIdx.x * 8 + (threadIdx.x >> 5);
    if (n >= N) return;
    const signed char* wrow = W + (size_t)n * K;
    const float s = scale[n];
    for (int t0 = 0; t0 < T; t0 += GEMV_TT) {
        const int tn = min(GEMV_TT, T - t0);
        float acc[GEMV_TT] = {0.0f, 0.0f, 0.0f, 0.0f};
        dot_rows_i8(wrow, x + (size_t)t0 * x_stride, x_stride, K, tn, acc);
        if ((threadIdx.x & 31) == 0) {
            for (int t = 0; t < tn; ++t) {
                const size_t o = (size_t)(t0 + t) * y_stride + n;
                y[o] = (res ? res[o] : 0.0f) + acc[t] * s;
            }
        }
    }
}

extern "C" __global__ void gemv_swiglu_i8(const signed char* __restrict__ W1, const float* __restrict__ s1,
                                          const signed char* __restrict__ W3, const float* __restrict__ s3,
                                          const float* x, int x_stride, float* y, int y_stride, int N, int K,
                                          int T) {
    const int n = blockIdx.x * 8 + (threadIdx.x >> 5);
    if (n >= N) return;
    for (int t0 = 0; t0 < T; t0 += GEMV_TT) {
        const int tn = min(GEMV_TT, T - t0);
        float a[GEMV_TT] = {0.0f, 0.0f, 0.0f, 0.0f};
        float b[GEMV_TT] = {0.0f, 0.0f, 0.0f, 0.0f};
        dot_rows_i8(W1 + (size_t)n * K, x + (size_t)t0 * x_stride, x_stride, K, tn, a);
        dot_rows_i8(W3 + (size_t)n * K, x + (size_t)t0 * x_stride, x_stride, K, tn, b);
        if ((threadIdx.x & 31) == 0) {
            for (int t = 0; t < tn; ++t) {
                const float av = a[t] * s1[n], bv = b[t] * s3[n];
                y[(size_t)(t0 + t) * y_stride + n] = (av / (1.0f + expf(-av))) * bv;
            }
        }
    }
}

// Per-output-channel symmetric int8 quantisation at load: scale[n] = max|W[n,:]| / 127.
// grid (N), block 256.
extern "C" __global__ void quantize_i8_bf16(const bf16_t* __restrict__ W, signed char* __restrict__ q,
                                            float* __restrict__ scale, int K) {
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

// out[i] = silu(a[i]) * b[i] (prefill SwiGLU after two cuBLAS GEMMs). grid-stride.
extern "C" __global__ void silu_mul_f32(const float* __restrict__ a, const float* __restrict__ b,
                                        float* __restrict__ out, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        const float x = a[i];
        out[i] = (x / (1.0f + expf(-x))) * b[i];
    }
}
