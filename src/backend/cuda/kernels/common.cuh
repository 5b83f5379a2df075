// s1-mini CUDA kernels: shared helpers. Concatenated in front of every .cu file by kernels/mod.rs
// (NVRTC sees no file system, so no kernel file includes another).
//
// Conventions: weights are bf16 stored as raw `unsigned short` bits (no cuda_bf16.h needed);
// activations and the residual stream are f32; KV caches are bf16. Every index that can exceed
// 2^31 is computed in 64-bit.

typedef unsigned short bf16_t;
typedef long long i64_t;

#define S1_INF __int_as_float(0x7f800000)
#define S1_NEG_INF __int_as_float(0xff800000)

__device__ __forceinline__ float bf16_to_f32(bf16_t v) {
    return __uint_as_float(((unsigned int)v) << 16);
}

// Round to nearest even, NaN kept quiet (torch's float -> bfloat16 conversion).
__device__ __forceinline__ bf16_t f32_to_bf16(float f) {
    unsigned int u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        return (bf16_t)((u >> 16) | 0x40u);
    }
    unsigned int lsb = (u >> 16) & 1u;
    u += 0x7fffu + lsb;
    return (bf16_t)(u >> 16);
}

// KV-cache elements: bf16, or f32 in exact mode (kv_f32 != 0; the same for a whole launch).
__device__ __forceinline__ void kv_store2(void* cache, size_t i, float a, float b, int kv_f32) {
    if (kv_f32) {
        float* c = static_cast<float*>(cache);
        c[i] = a;
        c[i + 1] = b;
    } else {
        bf16_t* c = static_cast<bf16_t*>(cache);
        c[i] = f32_to_bf16(a);
        c[i + 1] = f32_to_bf16(b);
    }
}

__device__ __forceinline__ float kv_load(const void* cache, size_t i, int kv_f32) {
    return kv_f32 ? static_cast<const float*>(cache)[i] : bf16_to_f32(static_cast<const bf16_t*>(cache)[i]);
}

// Elements i..i+7 of a KV cache (i a multiple of 8: one 16-byte load for bf16, two for f32).
__device__ __forceinline__ void kv_load8(const void* cache, size_t i, int kv_f32, float* out) {
    if (kv_f32) {
        const float4* p = reinterpret_cast<const float4*>(static_cast<const float*>(cache) + i);
        const float4 a = p[0], b = p[1];
        out[0] = a.x; out[1] = a.y; out[2] = a.z; out[3] = a.w;
        out[4] = b.x; out[5] = b.y; out[6] = b.z; out[7] = b.w;
    } else {
        const uint4 w = *reinterpret_cast<const uint4*>(static_cast<const bf16_t*>(cache) + i);
        out[0] = __uint_as_float(w.x << 16); out[1] = __uint_as_float(w.x & 0xffff0000u);
        out[2] = __uint_as_float(w.y << 16); out[3] = __uint_as_float(w.y & 0xffff0000u);
        out[4] = __uint_as_float(w.z << 16); out[5] = __uint_as_float(w.z & 0xffff0000u);
        out[6] = __uint_as_float(w.w << 16); out[7] = __uint_as_float(w.w & 0xffff0000u);
    }
}

// Programmatic dependent launch (sm_90+, `S1_CUDA_PDL=1`). A kernel launched with the PDL
// attribute may start while the kernel before it in the stream is still running; pdl_enter()
// waits until that kernel has finished and its writes are visible, then lets the next kernel
// start launching. Every kernel calls it in every thread before it reads anything an earlier
// kernel wrote and before it writes anything; only weights, which no kernel writes after load,
// may be read before it (the GEMVs request their first weight vectors first). Since each
// kernel waits for its predecessor, which waited for its own, a kernel also sees the writes of
// all earlier ones. Without the attribute, and below sm_90, both instructions do nothing.
__device__ __forceinline__ void pdl_enter() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Two bf16 packed in one 32-bit word: low half is the element with the lower address.
__device__ __forceinline__ float bf16_lo(unsigned int w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float bf16_hi(unsigned int w) { return __uint_as_float(w & 0xffff0000u); }

// Reductions by an associative operation with an identity element (sum, max).
struct SumOp {
    static __device__ __forceinline__ float identity() { return 0.0f; }
    static __device__ __forceinline__ float apply(float a, float b) { return a + b; }
};

// fmaxf ignores NaN.
struct MaxOp {
    static __device__ __forceinline__ float identity() { return S1_NEG_INF; }
    static __device__ __forceinline__ float apply(float a, float b) { return fmaxf(a, b); }
};

template <typename Op>
__device__ __forceinline__ float warp_reduce(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = Op::apply(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

__device__ __forceinline__ float warp_sum(float v) { return warp_reduce<SumOp>(v); }
__device__ __forceinline__ float warp_max(float v) { return warp_reduce<MaxOp>(v); }

// Block-wide reduction; `scratch` holds >= 32 floats. All threads get the result.
template <typename Op>
__device__ __forceinline__ float block_reduce(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int nwarps = (blockDim.x + 31) >> 5;
    v = warp_reduce<Op>(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float r = (threadIdx.x < nwarps) ? scratch[threadIdx.x] : Op::identity();
    if (warp == 0) {
        r = warp_reduce<Op>(r);
        if (lane == 0) scratch[0] = r;
    }
    __syncthreads();
    r = scratch[0];
    __syncthreads();
    return r;
}

__device__ __forceinline__ float block_sum(float v, float* scratch) { return block_reduce<SumOp>(v, scratch); }
__device__ __forceinline__ float block_max(float v, float* scratch) { return block_reduce<MaxOp>(v, scratch); }

// qk-norm and interleaved RoPE of one head vector (llama.py L892-903, L928-940), by the
// threads of a block: thread i < hd/2 holds the pair (x0, x1) = (x[2i], x[2i+1]) and gets it
// back normalised (RMSNorm over the head, then times norm_w, when norm_w != 0) and rotated,
// (x0*c - x1*s, x1*c + x0*s), with the bf16 table rope[p][i] = (cos, sin). Every thread of the
// block calls it (the norm is a block sum); threads i >= hd/2 pass zeros. scratch: 32 floats.
__device__ __forceinline__ void qk_norm_rope(float& x0, float& x1, const bf16_t* norm_w, const bf16_t* rope,
                                             int p, int hd, float eps, float* scratch) {
    const int i = threadIdx.x;
    const bool active = i < hd / 2;
    if (norm_w != 0) {
        const float ss = block_sum(x0 * x0 + x1 * x1, scratch);
        const float r = rsqrtf(ss / (float)hd + eps);
        if (active) {
            x0 = (x0 * r) * bf16_to_f32(norm_w[2 * i]);
            x1 = (x1 * r) * bf16_to_f32(norm_w[2 * i + 1]);
        }
    }
    if (!active) return;
    const bf16_t* rp = rope + ((size_t)p * (hd / 2) + i) * 2;
    const float c = bf16_to_f32(rp[0]), s = bf16_to_f32(rp[1]);
    const float y0 = x0 * c - x1 * s;
    const float y1 = x1 * c + x0 * s;
    x0 = y0;
    x1 = y1;
}

// Device-resident state of one request, read by the captured frame graph (layout mirrored by
// `DeviceState` in engine.rs; 16 words).
struct S1State {
    int kv_pos;            // positions filled in the slow KV cache
    unsigned int frame;    // frame index f (0 = prefill frame)
    unsigned int seed_lo;  // Philox key word 0
    unsigned int seed_hi;  // Philox key word 1
    float temperature;     // 0 = greedy
    float top_p;
    float rep_penalty;
    int compat;            // fish_speech_compat: main-token window = first column's 11 values
    int ignore_end;        // mask <|im_end|> out of the slow head
    int max_kv;            // capacity of the slow KV cache, in positions
    int pad[6];
};

// Philox4x32-10 (Random123), first output word.
__device__ __forceinline__ unsigned int philox_x0(unsigned int c0, unsigned int c1, unsigned int c2,
                                                  unsigned int c3, unsigned int k0, unsigned int k1) {
#pragma unroll
    for (int r = 0; r < 10; ++r) {
        if (r > 0) {
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
        const unsigned int hi0 = __umulhi(0xD2511F53u, c0), lo0 = 0xD2511F53u * c0;
        const unsigned int hi1 = __umulhi(0xCD9E8D57u, c2), lo1 = 0xCD9E8D57u * c2;
        const unsigned int n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
        c0 = n0;
        c1 = lo1;
        c2 = n2;
        c3 = lo0;
    }
    return c0;
}
