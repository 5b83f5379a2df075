// RMSNorm as fish-speech (llama.py L892-903): computed in f32, then multiplied by the weight.
//   out = (x * rsqrt(mean(x^2) + eps)) * w
// x, out: [rows, dim] f32; w: [dim] bf16. grid (rows), block 256. (Prefill only: decode fuses the
// norm into the next GEMV, gemv.cu.)
extern "C" __global__ void rmsnorm_f32(const float* __restrict__ x, const bf16_t* __restrict__ w,
                                       float* __restrict__ out, int dim, float eps) {
    pdl_enter();
    __shared__ float scratch[32];
    const float* xr = x + (size_t)blockIdx.x * dim;
    float* orow = out + (size_t)blockIdx.x * dim;
    float ss = 0.0f;
    for (int c = threadIdx.x; c < dim; c += blockDim.x) ss += xr[c] * xr[c];
    ss = block_sum(ss, scratch);
    const float r = rsqrtf(ss / (float)dim + eps);
    for (int c = threadIdx.x; c < dim; c += blockDim.x) orow[c] = (xr[c] * r) * bf16_to_f32(w[c]);
}
