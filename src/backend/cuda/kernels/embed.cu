// Slow-transformer input embedding (fish-speech `forward_generate`, llama.py L332-353):
//   vq = sum_{i<K} codebook_embeddings[tokens[1+i] + i*codebook_size]   (only at semantic positions)
//   x  = embeddings[tokens[0]] + vq;  x /= sqrt(K+1) at semantic positions when scaling is on.
// tokens: [1+K, T] i64 row-major (row stride `tok_stride`); out: [T, dim] f32.
// grid (T, ceil(dim / 256)), block 256: one thread per output value.
extern "C" __global__ void embed_tokens_f32(const i64_t* __restrict__ tokens, int tok_stride, int T,
                                            const bf16_t* __restrict__ emb,
                                            const bf16_t* __restrict__ cb_emb, float* __restrict__ out,
                                            int dim, int K, int codebook_size, int vocab,
                                            int sem_begin, int sem_end, float scale_div) {
    pdl_enter();
    const int t = blockIdx.x;
    if (t >= T) return;
    i64_t tok = tokens[t];
    if (tok < 0 || tok >= vocab) tok = 0;
    const bool semantic = tok >= sem_begin && tok <= sem_end;
    const bf16_t* erow = emb + (size_t)tok * dim;
    const int c = blockIdx.y * blockDim.x + threadIdx.x;
    if (c < dim) {
        float x = bf16_to_f32(erow[c]);
        if (semantic) {
            float vq = 0.0f;
            for (int i = 0; i < K; ++i) {
                i64_t code = tokens[(size_t)(1 + i) * tok_stride + t];
                if (code < 0) code = 0;
                if (code >= codebook_size) code = codebook_size - 1;
                vq += bf16_to_f32(cb_emb[((size_t)code + (size_t)i * codebook_size) * dim + c]);
            }
            x = x + vq;
            if (scale_div != 1.0f) x = x / scale_div;
        }
        out[(size_t)t * dim + c] = x;
    }
}

// Fast-transformer input at position `pos` of a frame: pos 0 = the slow hidden state,
// pos k >= 1 = fast_embeddings[*code] (one shared table, no per-codebook offset).
// hidden/out: [dim] f32. grid (1), block 256.
extern "C" __global__ void fast_input_f32(const float* __restrict__ hidden,
                                          const i64_t* __restrict__ code, int pos,
                                          const bf16_t* __restrict__ fast_emb, int codebook_size,
                                          float* __restrict__ out, int dim) {
    pdl_enter();
    if (pos == 0) {
        for (int c = threadIdx.x; c < dim; c += blockDim.x) out[c] = hidden[c];
        return;
    }
    i64_t v = *code;
    if (v < 0) v = 0;
    if (v >= codebook_size) v = codebook_size - 1;
    const bf16_t* row = fast_emb + (size_t)v * dim;
    for (int c = threadIdx.x; c < dim; c += blockDim.x) out[c] = bf16_to_f32(row[c]);
}

// out[i] = bf16(x[i]) (prefill activations for cuBLAS). grid-stride.
extern "C" __global__ void cast_bf16_f32(const float* __restrict__ x, bf16_t* __restrict__ out, int n) {
    pdl_enter();
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        out[i] = f32_to_bf16(x[i]);
}

// dst[i] = src[i] (copies the last prefill row etc. inside a graph). grid-stride.
extern "C" __global__ void copy_f32(const float* __restrict__ src, float* __restrict__ dst, int n) {
    pdl_enter();
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        dst[i] = src[i];
}
