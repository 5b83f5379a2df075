// Runs the backend's CUDA C kernels on the CPU, for the tests (emulator.rs compiles each kernel
// module with the host C++ compiler and this header in front). Not a CUDA implementation: just
// what the kernels in kernels/*.cu use, so that their logic can be checked where there is no GPU.
//
// - One launch runs its blocks one after another, in a shuffled order (a fixed sequence of
//   permutations, the same on every run), so a block that reads what another block of the same
//   launch writes, without waiting for it, sees the wrong value in some launches as it would on
//   a GPU. The threads of a block are fibers
//   on this one OS thread: a fiber runs until it reaches __syncthreads() or a warp
//   shuffle, then the next one runs. A barrier opens when every thread of the block (of the warp,
//   for shuffles) that has not returned is waiting at it, as on sm_70+ where exited threads no
//   longer take part. If no fiber can run and no barrier can open, the launch fails with
//   "deadlock" (on a GPU: a hang or undefined behaviour).
// - Fibers are resumed in thread order, and in reverse order every other round, so that a
//   missing barrier between a write and a read of shared memory shows up as a wrong result.
// - `__shared__` variables are `static` (blocks never overlap); `extern __shared__` arrays are
//   defined by emulator.rs at the size of the largest opt-in and filled with 0xff bytes (NaN) before
//   every block.
// - Arithmetic is the host's (no fused multiply-add unless the compiler contracts), so results
//   match the GPU's to rounding, which the self-test's tolerances allow.
#pragma once

#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

struct dim3 {
    unsigned int x = 1, y = 1, z = 1;
};
struct alignas(16) uint4 {
    unsigned int x, y, z, w;
};
struct alignas(16) int4 {
    int x, y, z, w;
};
struct alignas(16) float4 {
    float x, y, z, w;
};
struct alignas(8) uint2 {
    unsigned int x, y;
};
inline uint4 make_uint4(unsigned int x, unsigned int y, unsigned int z, unsigned int w) { return {x, y, z, w}; }
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(n)

// The position of the running fiber (set by the scheduler before it resumes one).
inline dim3 threadIdx, blockIdx, blockDim, gridDim;

using std::max;
using std::min;

inline float __uint_as_float(unsigned int u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline unsigned int __float_as_uint(float f) {
    unsigned int u;
    std::memcpy(&u, &f, 4);
    return u;
}
inline float __int_as_float(int i) {
    float f;
    std::memcpy(&f, &i, 4);
    return f;
}
inline unsigned int __umulhi(unsigned int a, unsigned int b) {
    return (unsigned int)(((unsigned long long)a * b) >> 32);
}
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
template <typename T> inline T __ldg(const T* p) { return *p; }
template <typename T> inline T __ldcg(const T* p) { return *p; }
inline unsigned int atomicAdd(unsigned int* p, unsigned int v) {
    const unsigned int old = *p;
    *p = old + v;
    return old;
}
inline void __threadfence() {}

namespace s1emu {

// Switching between fibers. On x86-64 a switch saves the callee-saved registers, MXCSR and the
// x87 control word on the old stack and restores them from the new one (s1emu_switch, defined
// once, in the module compiled with S1EMU_DEFINE_SWITCH); elsewhere ucontext, which is correct
// but much slower (a system call per switch for the signal mask).
#if defined(__x86_64__)
extern "C" void s1emu_switch(void** save_sp, void* next_sp);
struct Context {
    void* sp = nullptr;
};
inline void switch_to(Context& from, Context& to) { s1emu_switch(&from.sp, to.sp); }
// A stack whose first switch "returns" into entry (which must never return).
inline void start(Context& c, std::vector<char>& stack, void (*entry)()) {
    void** sp = (void**)(((uintptr_t)(stack.data() + stack.size())) & ~(uintptr_t)15);
    *--sp = nullptr;          // entry's return address (never used)
    *--sp = (void*)entry;     // popped by s1emu_switch's ret
    for (int i = 0; i < 6; ++i) *--sp = nullptr;  // rbp rbx r12 r13 r14 r15
    unsigned int csr[2] = {0, 0};
    asm volatile("stmxcsr %0" : "=m"(csr[0]));
    asm volatile("fnstcw %0" : "=m"(*(unsigned short*)&csr[1]));
    sp -= 1;
    std::memcpy(sp, csr, 8);
    c.sp = sp;
}
#else
struct Context {
    ucontext_t uc;
};
inline void switch_to(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }
inline void start(Context& c, std::vector<char>& stack, void (*entry)()) {
    getcontext(&c.uc);
    c.uc.uc_stack.ss_sp = stack.data();
    c.uc.uc_stack.ss_size = stack.size();
    c.uc.uc_link = nullptr;
    makecontext(&c.uc, entry, 0);
}
#endif

enum class State { Ready, AtBlockBarrier, AtWarpBarrier, Done };

struct Fiber {
    Context ctx;
    State state;
    unsigned int tid;
    unsigned long long lane_value[2];  // warp shuffle operands, by the shuffle's parity
    unsigned int shuffles;             // warp shuffles this thread has done
};

struct Launch {
    Context main;
    std::vector<Fiber> fibers;
    std::vector<std::vector<char>> stacks;
    unsigned int current = 0;
    void (*body)(void*) = nullptr;
    void* body_arg = nullptr;
};

inline Launch* launch_state = nullptr;

// Dynamic shared memory arrays of every module (registered by emulator.rs's definitions).
struct DynShared {
    void* ptr;
    size_t bytes;
};
inline std::vector<DynShared>& dyn_shared() {
    static std::vector<DynShared> v;
    return v;
}
inline int register_dyn_shared(void* p, size_t bytes) {
    dyn_shared().push_back({p, bytes});
    return 0;
}

inline void wait_as(State s) {
    Launch* L = launch_state;
    Fiber& f = L->fibers[L->current];
    f.state = s;
    switch_to(f.ctx, L->main);
}

inline void fiber_entry() {
    Launch* L = launch_state;
    L->body(L->body_arg);
    L->fibers[L->current].state = State::Done;
    switch_to(L->fibers[L->current].ctx, L->main);  // never resumed
    std::abort();
}

// Runs one block of blockDim.x fibers; false on deadlock.
inline bool run_block(Launch& L) {
    const unsigned int n = blockDim.x;
    for (unsigned int t = 0; t < n; ++t) {
        Fiber& f = L.fibers[t];
        f.state = State::Ready;
        f.tid = t;
        f.shuffles = 0;
        start(f.ctx, L.stacks[t], fiber_entry);
    }
    for (const DynShared& d : dyn_shared()) std::memset(d.ptr, 0xff, d.bytes);
    for (unsigned int round = 0;; ++round) {
        bool ran = false;
        for (unsigned int k = 0; k < n; ++k) {
            const unsigned int t = (round & 1) ? n - 1 - k : k;
            if (L.fibers[t].state != State::Ready) continue;
            L.current = t;
            threadIdx = dim3{t, 0, 0};
            switch_to(L.main, L.fibers[t].ctx);
            ran = true;
        }
        unsigned int live = 0, at_block = 0;
        for (unsigned int t = 0; t < n; ++t) {
            live += L.fibers[t].state != State::Done;
            at_block += L.fibers[t].state == State::AtBlockBarrier;
        }
        if (live == 0) return true;
        bool opened = false;
        if (at_block == live) {
            for (unsigned int t = 0; t < n; ++t)
                if (L.fibers[t].state == State::AtBlockBarrier) L.fibers[t].state = State::Ready;
            opened = true;
        }
        for (unsigned int w0 = 0; w0 < n; w0 += 32) {
            const unsigned int w1 = std::min(n, w0 + 32);
            unsigned int wl = 0, ww = 0;
            for (unsigned int t = w0; t < w1; ++t) {
                wl += L.fibers[t].state != State::Done;
                ww += L.fibers[t].state == State::AtWarpBarrier;
            }
            if (wl > 0 && ww == wl) {
                for (unsigned int t = w0; t < w1; ++t)
                    if (L.fibers[t].state == State::AtWarpBarrier) L.fibers[t].state = State::Ready;
                opened = true;
            }
        }
        if (!ran && !opened) return false;
    }
}

// A warp shuffle: every lane publishes its value, then reads lane `src` of its warp (its own
// value when `src` is outside the warp). Values go to one of two slots by the shuffle's parity, so
// one barrier per shuffle suffices: a lane can publish the next value only after every lane has
// reached this barrier, and it can overwrite this slot only two shuffles on, after every lane
// has passed the next barrier and so has read this one.
template <typename T> inline T exchange(T v, int src) {
    static_assert(sizeof(T) <= 8, "shuffle operands are at most 8 bytes");
    Launch* L = launch_state;
    const unsigned int me = threadIdx.x, base = me & ~31u;
    Fiber& f = L->fibers[me];
    const unsigned int slot = f.shuffles++ & 1u;
    unsigned long long bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    f.lane_value[slot] = bits;
    wait_as(State::AtWarpBarrier);
    T r = v;
    if (src >= 0 && src < 32 && base + (unsigned int)src < blockDim.x) {
        const unsigned long long b = L->fibers[base + src].lane_value[slot];
        std::memcpy(&r, &b, sizeof(T));
    }
    return r;
}

template <typename... A, size_t... I>
inline void call(void (*k)(A...), void** args, std::index_sequence<I...>) {
    k(*static_cast<std::remove_cv_t<std::remove_reference_t<A>>*>(args[I])...);
}

template <typename... A> struct Call {
    void (*kernel)(A...);
    void** args;
    static void run(void* p) {
        Call* c = static_cast<Call*>(p);
        call(c->kernel, c->args, std::index_sequence_for<A...>{});
    }
};

// Launches `kernel` over grid (gx, gy, gz) of bx-thread blocks; args point at the arguments as
// for cuLaunchKernel. Returns 0, or 1 with a message in err.
template <typename... A>
inline int launch(void (*kernel)(A...), unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx,
                  void** args, char* err, size_t err_len) {
    if (bx == 0 || bx > 1024) {
        std::snprintf(err, err_len, "block of %u threads", bx);
        return 1;
    }
    Launch L;
    L.fibers.resize(bx);
    L.stacks.assign(bx, std::vector<char>(64 * 1024));
    Call<A...> c{kernel, args};
    L.body = &Call<A...>::run;
    L.body_arg = &c;
    launch_state = &L;
    gridDim = dim3{gx, gy, gz};
    blockDim = dim3{bx, 1, 1};
    const unsigned long long blocks = (unsigned long long)gx * gy * gz;
    std::vector<unsigned long long> order(blocks);
    for (unsigned long long b = 0; b < blocks; ++b) order[b] = b;
    static unsigned long long seed = 0x9E3779B97F4A7C15ull;  // advances with every launch
    for (unsigned long long b = blocks; b > 1; --b) {       // Fisher-Yates, xorshift64
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::swap(order[b - 1], order[seed % b]);
    }
    for (unsigned long long b : order) {
        const unsigned int x = (unsigned int)(b % gx), y = (unsigned int)(b / gx % gy), z = (unsigned int)(b / gx / gy);
        blockIdx = dim3{x, y, z};
        if (!run_block(L)) {
            std::snprintf(err, err_len, "deadlock in block (%u, %u, %u)", x, y, z);
            launch_state = nullptr;
            return 1;
        }
    }
    launch_state = nullptr;
    return 0;
}

}  // namespace s1emu

#if defined(__x86_64__) && defined(S1EMU_DEFINE_SWITCH)
asm(R"(
    .text
    .globl s1emu_switch
    .type s1emu_switch, @function
s1emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size s1emu_switch, .-s1emu_switch
)");
#endif

inline void __syncthreads() { s1emu::wait_as(s1emu::State::AtBlockBarrier); }

template <typename T> inline T __shfl_sync(unsigned int, T v, int src) { return s1emu::exchange(v, src & 31); }
template <typename T> inline T __shfl_xor_sync(unsigned int, T v, int mask) {
    return s1emu::exchange(v, (int)((threadIdx.x & 31u) ^ (unsigned int)mask));
}
template <typename T> inline T __shfl_up_sync(unsigned int, T v, int delta) {
    const int lane = (int)(threadIdx.x & 31u);
    return s1emu::exchange(v, lane >= delta ? lane - delta : lane);
}
