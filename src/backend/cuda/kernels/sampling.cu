// fish-speech sampling on the device, bit-for-bit the algorithm of src/sampling.rs
// (docs/bundle-format.md "Sampling and the RNG"):
//   mask (slow head: semantic rows + <|im_end|>) -> repetition penalty over the window read from
//   the device history -> greedy argmax when temperature = 0, else top-p on the un-tempered softmax
//   (block bitonic sort, f64 prefix sums) -> temperature -> softmax -> exponential race
//   argmax p_i / q_i, q_i = -ln(u_i), u_i from Philox4x32-10 with counter (i, frame, slot, 0).
// exp/log are evaluated in f64 and rounded to f32 (what a correctly rounded libm gives the CPU).
//
// logits: [n] f32. frame: [1+K] i64, the frame being built = the next slow step's tokens
// (row 0 main token id, rows 1.. codes c0..c(K-1)); slot 0 writes frame[0] and frame[1], slot k
// writes frame[k+1]. hist: [max_hist, 1+K] i64, decoded frame d in row d, zero-initialised.
// grid (1), block 1024, dynamic shared memory = n_pad * 12 bytes (n_pad = power of two >= max(n, 1024)).

#define SAMPLE_THREADS 1024
#define WINDOW 16

__device__ __forceinline__ unsigned int order_key(float v) {
    if (v != v) return 0u;          // NaN sorts last (dropped first)
    if (v == 0.0f) v = 0.0f;        // -0 == +0, ties by index as on the CPU
    const unsigned int u = __float_as_uint(v);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ __forceinline__ int head_index(i64_t id, int sem_begin, int sem_end, int im_end, int im_end_index) {
    if (id >= sem_begin && id <= sem_end) return (int)(id - sem_begin);
    if (id == im_end) return im_end_index;
    return -1;
}

// Lowest-index argmax of (v, i) pairs across the warp, left in every lane.
__device__ __forceinline__ void warp_argmax(float& v, int& i) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, v, o);
        const int oi = __shfl_xor_sync(0xffffffffu, i, o);
        if (ov > v || (ov == v && oi < i)) {
            v = ov;
            i = oi;
        }
    }
}

// Lowest-index argmax of (v, i) pairs across the block; NaN never wins. All threads get it.
__device__ __forceinline__ int block_argmax(float v, int i, float* sv, int* si) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    warp_argmax(v, i);
    __syncthreads();
    if (lane == 0) {
        sv[warp] = v;
        si[warp] = i;
    }
    __syncthreads();
    if (warp == 0) {
        v = sv[lane];
        i = si[lane];
        warp_argmax(v, i);
        if (lane == 0) si[0] = i;
    }
    __syncthreads();
    const int r = si[0];
    __syncthreads();
    return r;
}

// Sorts n_pad (a power of two, a multiple of SAMPLE_THREADS) unique keys in shared memory,
// descending (bitonic network). Exchanges across 32 or more slots go through shared memory, one
// barrier each; the strides below 32 that end every stage run in registers with warp shuffles
// (slot i is held by lane i % 32 of its warp), one barrier for all of them.
__device__ __forceinline__ void bitonic_sort_desc(unsigned long long* keys, int n_pad) {
    const int tid = threadIdx.x;
    for (int size = 2; size <= n_pad; size <<= 1) {
        int stride = size >> 1;
        for (; stride >= 32; stride >>= 1) {
            for (int i = tid; i < n_pad; i += SAMPLE_THREADS) {
                const int j = i ^ stride;
                if (j > i) {
                    const unsigned long long a = keys[i], b = keys[j];
                    const bool desc = (i & size) == 0;
                    if (desc ? (a < b) : (a > b)) {
                        keys[i] = b;
                        keys[j] = a;
                    }
                }
            }
            __syncthreads();
        }
        for (int i = tid; i < n_pad; i += SAMPLE_THREADS) {
            unsigned long long v = keys[i];
            const bool desc = (i & size) == 0;
            for (int st = stride; st > 0; st >>= 1) {
                const unsigned long long other = __shfl_xor_sync(0xffffffffu, v, st);
                // The lower slot of a pair keeps the larger key in a descending run.
                const bool keep_max = ((i & st) == 0) == desc;
                v = keep_max ? (v > other ? v : other) : (v < other ? v : other);
            }
            keys[i] = v;
        }
        __syncthreads();
    }
}

extern "C" __global__ void __launch_bounds__(SAMPLE_THREADS)
sample_f32(const float* __restrict__ logits, int n, int slot, int n_pad, const S1State* __restrict__ st,
           const i64_t* __restrict__ hist, int max_hist, int K, int sem_begin, int sem_end, int im_end,
           int im_end_index, int semantic_rows, i64_t* __restrict__ frame) {
    pdl_enter();
    extern __shared__ unsigned long long smem_u64[];
    unsigned long long* keys = smem_u64;                      // [n_pad]
    float* vals = reinterpret_cast<float*>(keys + n_pad);     // [n_pad]
    __shared__ float sv[32];
    __shared__ int si[32];
    __shared__ double sd[32];
    __shared__ int win[WINDOW];
    __shared__ int nwin;
    const int tid = threadIdx.x;
    const unsigned int f = st->frame;
    const float temperature = st->temperature, top_p = st->top_p, rp = st->rep_penalty;

    // 1. logits, with the slow head's mask.
    for (int i = tid; i < n_pad; i += SAMPLE_THREADS) {
        float v = i < n ? logits[i] : S1_NEG_INF;
        if (slot == 0 && i < n && !(i < semantic_rows || (!st->ignore_end && i == im_end_index))) v = S1_NEG_INF;
        vals[i] = v;
    }
    // 2. the repetition window (decoded frames only: d = f - 1).
    if (tid == 0) {
        int c = 0;
        if (f > 0) {
            const int d = (int)f - 1;
            const int first = d < WINDOW ? 0 : d - WINDOW;
            if (slot == 0 && st->compat) {
                // fish-speech previous_tokens[:, 0]: the first column's 1+K values read as ids.
                for (int r = 0; r <= K && c < WINDOW; ++r) {
                    const i64_t v = first < max_hist ? hist[(size_t)first * (K + 1) + r] : 0;
                    const int hi = head_index(v, sem_begin, sem_end, im_end, im_end_index);
                    if (hi >= 0) win[c++] = hi;
                }
            } else {
                for (int j = 0; j < WINDOW; ++j) {
                    const int col = first + j;
                    const i64_t v = col < max_hist ? hist[(size_t)col * (K + 1) + (slot == 0 ? 0 : slot + 1)] : 0;
                    const int idx = slot == 0 ? head_index(v, sem_begin, sem_end, im_end, im_end_index)
                                              : (v >= 0 && v < 0x7fffffff ? (int)v : -1);
                    if (idx >= 0) win[c++] = idx;
                }
            }
        }
        nwin = c;
    }
    __syncthreads();
    if (rp != 1.0f && tid < nwin) {
        const int idx = win[tid];
        bool first_seen = idx < n;
        for (int k = 0; k < tid; ++k)
            if (win[k] == idx) first_seen = false;
        if (first_seen) {
            const float v = vals[idx];
            vals[idx] = v < 0.0f ? v * rp : v / rp;
        }
    }
    __syncthreads();

    int best;
    if (temperature == 0.0f) {
        // Greedy: argmax of the penalised logits.
        float bv = S1_NEG_INF;
        int bi = 0x7fffffff;
        for (int i = tid; i < n; i += SAMPLE_THREADS) {
            const float v = vals[i];
            if (v == v && (bi == 0x7fffffff || v > bv)) {
                bv = v;
                bi = i;
            }
        }
        best = block_argmax(bv, bi, sv, si);
        if (best == 0x7fffffff) best = 0;
    } else {
        // 3. top-p over the un-tempered softmax: sort (value desc, index asc).
        for (int i = tid; i < n_pad; i += SAMPLE_THREADS)
            keys[i] = i < n ? (((unsigned long long)order_key(vals[i]) << 32) | (0xffffffffu - (unsigned int)i)) : 0ull;
        __syncthreads();
        bitonic_sort_desc(keys, n_pad);
        const int top = (int)(0xffffffffu - (unsigned int)(keys[0] & 0xffffffffu));
        const float m = vals[top];
        if (m == S1_NEG_INF || m != m) {
            best = 0;  // every logit masked: the CPU race also ends at index 0
        } else {
            const int per = n_pad / SAMPLE_THREADS;  // ranks per thread, contiguous
            float e_local = 0.0f;
            for (int r = tid * per; r < (tid + 1) * per; ++r) {
                const unsigned int idx = 0xffffffffu - (unsigned int)(keys[r] & 0xffffffffu);
                const float v = idx < (unsigned int)n ? vals[idx] : S1_NEG_INF;
                e_local += (v != v) ? 0.0f : (float)exp((double)(v - m));
            }
            const float sum = block_sum(e_local, sv);
            const float inv = 1.0f / sum;
            double local = 0.0;
            for (int r = tid * per; r < (tid + 1) * per; ++r) {
                const unsigned int idx = 0xffffffffu - (unsigned int)(keys[r] & 0xffffffffu);
                const float v = idx < (unsigned int)n ? vals[idx] : S1_NEG_INF;
                local += (double)(((v != v) ? 0.0f : (float)exp((double)(v - m))) * inv);
            }
            // Exclusive block scan of the per-thread sums (f64).
            const int lane = tid & 31, warp = tid >> 5;
            double incl = local;
#pragma unroll
            for (int o = 1; o < 32; o <<= 1) {
                const double y = __shfl_up_sync(0xffffffffu, incl, o);
                if (lane >= o) incl += y;
            }
            if (lane == 31) sd[warp] = incl;
            __syncthreads();
            if (warp == 0) {
                double w = sd[lane];
#pragma unroll
                for (int o = 1; o < 32; o <<= 1) {
                    const double y = __shfl_up_sync(0xffffffffu, w, o);
                    if (lane >= o) w += y;
                }
                sd[lane] = w;
            }
            __syncthreads();
            double cum = (warp > 0 ? sd[warp - 1] : 0.0) + (incl - local);
            // Drop where the cumulative sum (rounded to f32) exceeds top_p; rank 0 always stays.
            // Writes go to distinct indices; reads of vals above are finished (block_sum synced,
            // and the scan's barriers sit between them and these writes).
            for (int r = tid * per; r < (tid + 1) * per; ++r) {
                const unsigned int idx = 0xffffffffu - (unsigned int)(keys[r] & 0xffffffffu);
                const float v = idx < (unsigned int)n ? vals[idx] : S1_NEG_INF;
                cum += (double)(((v != v) ? 0.0f : (float)exp((double)(v - m))) * inv);
                if (r > 0 && idx < (unsigned int)n && (float)cum > top_p) vals[idx] = S1_NEG_INF;
            }
            __syncthreads();
            // 4. temperature, softmax, exponential race.
            const float t = fmaxf(temperature, 1e-5f);
            float mx = S1_NEG_INF;
            for (int i = tid; i < n; i += SAMPLE_THREADS) {
                const float v = vals[i] / t;
                vals[i] = v;
                mx = fmaxf(mx, v);
            }
            mx = block_max(mx, sv);
            float s2 = 0.0f;
            for (int i = tid; i < n; i += SAMPLE_THREADS) {
                const float v = vals[i];
                s2 += (v != v) ? 0.0f : (float)exp((double)(v - mx));
            }
            s2 = block_sum(s2, sv);
            const float inv2 = 1.0f / s2;
            float bv = S1_NEG_INF;
            int bi = 0x7fffffff;
            for (int i = tid; i < n; i += SAMPLE_THREADS) {
                const float v = vals[i];
                const float p = ((v != v) ? 0.0f : (float)exp((double)(v - mx))) * inv2;
                float ratio = 0.0f;
                if (p > 0.0f) {
                    const unsigned int x = philox_x0((unsigned int)i, f, (unsigned int)slot, 0u, st->seed_lo, st->seed_hi);
                    const float u = ((float)(x >> 8) + 0.5f) / 16777216.0f;
                    const float q = -(float)log((double)u);
                    ratio = p / q;
                }
                if (bi == 0x7fffffff || ratio > bv) {
                    bv = ratio;
                    bi = i;
                }
            }
            best = block_argmax(bv, bi, sv, si);
            if (best == 0x7fffffff) best = 0;
        }
    }
    if (tid == 0) {
        if (slot == 0) {
            if (best == im_end_index) {
                frame[0] = im_end;
                frame[1] = 0;  // fish-speech clamps the negative code of a non-semantic token
            } else {
                frame[0] = (i64_t)sem_begin + best;
                frame[1] = best;
            }
        } else {
            frame[slot + 1] = best;
        }
    }
}

// End of a frame: decoded frames (f > 0) go to history row f - 1; the frame counter advances.
// grid (1), block 32.
extern "C" __global__ void frame_finish(S1State* st, const i64_t* __restrict__ frame, i64_t* __restrict__ hist,
                                        int max_hist, int K) {
    pdl_enter();
    const unsigned int f = st->frame;
    if (f > 0 && (int)(f - 1) < max_hist) {
        for (int r = threadIdx.x; r <= K; r += blockDim.x) hist[(size_t)(f - 1) * (K + 1) + r] = frame[r];
    }
    __syncthreads();
    if (threadIdx.x == 0) st->frame = f + 1;
}

// After a slow pass over T positions: kv_pos += T. grid (1), block 1.
extern "C" __global__ void advance_pos(S1State* st, int T) {
    pdl_enter();
    st->kv_pos += T;
}
