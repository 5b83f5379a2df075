//! The CUDA device: probing without panics, the context and stream, kernel modules, raw device
//! buffers, cuBLAS. Every driver call goes through cudarc; every `unsafe` block states why it
//! is sound.

use std::collections::HashMap;
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Arc;

use cudarc::driver::{result, sys, CudaContext, CudaFunction, CudaGraph, CudaModule, CudaStream};

use super::error::CudaError;
use super::kernels;
use super::nvrtc;
use super::plan::{self, Dims};
use super::DeviceInfo;
use crate::config::EngineConfig;

/// Pointer to a kernel argument (the driver copies the value at launch/capture).
macro_rules! args {
    ($($a:expr),* $(,)?) => {
        [$(&$a as *const _ as *mut std::ffi::c_void),*]
    };
}
pub(super) use args;

/// Oldest architecture the kernels target (bf16 loads and 163 KiB of shared memory: sm_80).
pub const MIN_COMPUTE_MAJOR: i32 = 8;

fn drv(what: &str, e: result::DriverError) -> CudaError {
    CudaError::driver(what, e)
}

/// Whether the driver library (libcuda) can be opened at all.
pub fn libcuda_present() -> bool {
    // SAFETY: only dlopen()s the candidate library names; no CUDA call is made.
    unsafe { sys::is_culib_present() }
}

/// The CUDA version the installed driver supports, e.g. "13.0" (`cuDriverGetVersion`, which
/// needs no context and no `cuInit`).
pub(super) fn driver_version() -> Result<String, CudaError> {
    if !libcuda_present() {
        return Err(no_libcuda());
    }
    let r = catch_unwind(|| {
        let mut v: std::ffi::c_int = 0;
        // SAFETY: `v` is a valid out-pointer for the call's one `int *` argument.
        let status = unsafe { sys::cuDriverGetVersion(&mut v) };
        if status == sys::CUresult::CUDA_SUCCESS {
            Ok(format!("{}.{}", v / 1000, (v % 1000) / 10))
        } else {
            Err(CudaError::Unavailable(format!("cuDriverGetVersion failed: {status:?}")))
        }
    });
    r.unwrap_or_else(|_| Err(CudaError::Unavailable("the CUDA driver panicked".into())))
}

/// Opens the context on `ordinal`, never panicking: libcuda is probed first and cudarc's
/// panics (missing symbols) are caught.
fn open_context(ordinal: usize) -> Result<Arc<CudaContext>, CudaError> {
    if !libcuda_present() {
        return Err(no_libcuda());
    }
    let r = catch_unwind(|| -> Result<Arc<CudaContext>, CudaError> {
        let n = CudaContext::device_count().map_err(|e| drv("cuDeviceGetCount", e))?;
        if n <= 0 {
            return Err(CudaError::Unavailable("no CUDA device is visible".into()));
        }
        if ordinal >= n as usize {
            return Err(CudaError::Unavailable(format!(
                "device_id {ordinal} but only {n} CUDA device(s)"
            )));
        }
        CudaContext::new(ordinal).map_err(|e| drv("cuCtxCreate", e))
    });
    r.unwrap_or_else(|_| {
        Err(CudaError::Unavailable("the CUDA driver panicked during initialisation".into()))
    })
}

fn no_libcuda() -> CudaError {
    CudaError::Unavailable("the NVIDIA driver library (libcuda.so.1) is not installed".into())
}

fn info_of(ctx: &Arc<CudaContext>) -> Result<DeviceInfo, CudaError> {
    let name = ctx.name().map_err(|e| drv("cuDeviceGetName", e))?;
    let cc = ctx.compute_capability().map_err(|e| drv("cuDeviceGetAttribute", e))?;
    let total = ctx.total_mem().map_err(|e| drv("cuDeviceTotalMem", e))?;
    Ok(DeviceInfo { name, compute_capability: cc, total_memory_bytes: total })
}

/// Bytes in use on the device (total − free), through the device's primary context (the one
/// the engine and ONNX Runtime use, so asking costs no new context).
pub(super) fn memory_in_use(ordinal: usize) -> Option<u64> {
    let ctx = open_context(ordinal).ok()?;
    catch_unwind(AssertUnwindSafe(|| {
        ctx.bind_to_thread().ok()?;
        let (free, total) = result::mem_get_info().ok()?;
        Some(total.saturating_sub(free) as u64)
    }))
    .ok()
    .flatten()
}

/// What `environment()` reports: driver, device, architecture and NVRTC.
pub(super) fn probe(config: &EngineConfig) -> Result<DeviceInfo, CudaError> {
    let ctx = open_context(config.device_id as usize)?;
    let info = catch_unwind(AssertUnwindSafe(|| info_of(&ctx)))
        .unwrap_or_else(|_| Err(CudaError::Unavailable("the CUDA driver panicked".into())))?;
    if info.compute_capability.0 < MIN_COMPUTE_MAJOR {
        return Err(CudaError::Unavailable(format!(
            "{} is sm_{}{}; the cuda backend needs sm_80 or newer",
            info.name, info.compute_capability.0, info.compute_capability.1
        )));
    }
    nvrtc::ensure_nvrtc()?;
    Ok(info)
}

/// Who frees a buffer: the CUDA context it was allocated in, or (the kernel emulator in the
/// tests) the host allocator.
enum Owner {
    Cuda(Arc<CudaContext>),
    #[cfg(test)]
    Host(std::alloc::Layout),
}

/// A raw device allocation, freed on drop.
pub struct DevBuf {
    ptr: sys::CUdeviceptr,
    bytes: usize,
    owner: Owner,
}

impl DevBuf {
    /// Device address.
    pub fn ptr(&self) -> u64 {
        self.ptr
    }
    /// Size in bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
    /// Address `off` bytes in.
    pub fn at(&self, off: usize) -> u64 {
        debug_assert!(off <= self.bytes);
        self.ptr + off as u64
    }
}

impl Drop for DevBuf {
    fn drop(&mut self) {
        match &self.owner {
            Owner::Cuda(ctx) => {
                if self.ptr != 0 && ctx.bind_to_thread().is_ok() {
                    // SAFETY: `ptr` came from cuMemAlloc in this context and is freed exactly
                    // once; the engine synchronises its stream before dropping buffers.
                    let _ = unsafe { result::free_sync(self.ptr) };
                }
            }
            #[cfg(test)]
            // SAFETY: allocated by host_alloc with this layout, freed once.
            Owner::Host(layout) => unsafe { std::alloc::dealloc(self.ptr as *mut u8, *layout) },
        }
    }
}

/// Pinned (page-locked) host memory for async device-to-host copies.
pub struct PinnedBuf {
    ptr: *mut c_void,
    bytes: usize,
    owner: Owner,
}

// SAFETY: the pinned block is plain host memory owned by this value; access is serialised by
// `&mut self` (the request that owns it is used by one thread at a time).
unsafe impl Send for PinnedBuf {}

impl PinnedBuf {
    /// The block as i64s.
    pub fn as_i64(&self) -> &[i64] {
        // SAFETY: `ptr` is a live allocation of `bytes` bytes, aligned to at least 256 by the
        // driver; the device has finished writing (callers synchronise first).
        unsafe { std::slice::from_raw_parts(self.ptr as *const i64, self.bytes / 8) }
    }
    /// Host address.
    pub fn ptr(&self) -> *mut c_void {
        self.ptr
    }
}

impl Drop for PinnedBuf {
    fn drop(&mut self) {
        match &self.owner {
            Owner::Cuda(ctx) => {
                if !self.ptr.is_null() && ctx.bind_to_thread().is_ok() {
                    // SAFETY: allocated by cuMemHostAlloc and freed once.
                    let _ = unsafe { result::free_host(self.ptr) };
                }
            }
            #[cfg(test)]
            // SAFETY: allocated by host_alloc with this layout, freed once.
            Owner::Host(layout) => unsafe { std::alloc::dealloc(self.ptr as *mut u8, *layout) },
        }
    }
}

/// The emulator's copies between "device" and host memory, both host addresses.
///
/// # Safety
/// `src` and `dst` each address `bytes` live, non-overlapping bytes.
#[cfg(test)]
unsafe fn host_copy(src: u64, dst: u64, bytes: usize) -> Result<(), CudaError> {
    // SAFETY: the caller's contract.
    unsafe { std::ptr::copy_nonoverlapping(src as *const u8, dst as *mut u8, bytes) };
    Ok(())
}

/// 256-byte aligned host memory filled with 0xab (emulated device memory is uninitialised).
#[cfg(test)]
fn host_alloc(bytes: usize) -> Result<(*mut u8, std::alloc::Layout), CudaError> {
    let layout = std::alloc::Layout::from_size_align(bytes.max(256), 256)
        .map_err(|e| CudaError::Host(e.to_string()))?;
    // SAFETY: non-zero size; the caller owns the block and frees it with this layout.
    let ptr = unsafe { std::alloc::alloc(layout) };
    if ptr.is_null() {
        return Err(CudaError::Host(format!("out of host memory for {bytes} bytes")));
    }
    // SAFETY: `ptr` holds layout.size() bytes.
    unsafe { std::ptr::write_bytes(ptr, 0xab, layout.size()) };
    Ok((ptr, layout))
}

/// cuBLAS handle (prefill GEMMs).
pub struct Blas {
    handle: cudarc::cublas::sys::cublasHandle_t,
}

// SAFETY: the handle is used only from the thread that holds the engine's workspace
// (serialised by the request), never concurrently.
unsafe impl Send for Blas {}
// SAFETY: as above; no method takes `&self` concurrently with another on the same stream.
unsafe impl Sync for Blas {}

impl Drop for Blas {
    fn drop(&mut self) {
        // SAFETY: created by cublasCreate, destroyed once.
        let _ = unsafe { cudarc::cublas::result::destroy_handle(self.handle) };
    }
}

/// A CUDA device's context, the stream every launch and the frame graph use, the kernels.
struct CudaDevice {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    funcs: HashMap<&'static str, CudaFunction>,
    _modules: Vec<Arc<CudaModule>>,
}

/// Where the kernels run.
enum Target {
    Cuda(CudaDevice),
    /// The kernels compiled for the CPU (tests: `emulator.rs`): host memory, launches run to
    /// completion, no graphs, cuBLAS replaced by a host loop.
    #[cfg(test)]
    Emulated(Arc<super::emulator::Emulator>),
}

/// The device the engine runs on.
pub struct Gpu {
    target: Target,
    /// Multiprocessors.
    pub sm_count: usize,
    /// cuBLAS, when libcublas could be opened (prefill falls back to GEMV kernels otherwise).
    pub blas: Option<Blas>,
    /// Programmatic dependent launch ([`pdl_requested`] on sm_90 or newer): every kernel is
    /// launched with the programmatic-stream-serialization attribute, so its blocks may start
    /// (and the GEMVs request their weights) while the previous kernel finishes; each kernel
    /// waits for its predecessor in `pdl_enter` (common.cuh).
    pub pdl: bool,
    /// What the device is.
    pub info: DeviceInfo,
}

/// The environment variable that turns on programmatic dependent launch.
pub const PDL_ENV: &str = "S1_CUDA_PDL";

/// Whether `S1_CUDA_PDL=1` asks for programmatic dependent launch. Off by default until it has
/// been measured and checked for parity on a GPU (docs/cuda.md).
pub fn pdl_requested() -> bool {
    std::env::var(PDL_ENV).is_ok_and(|v| v == "1")
}

/// NVRTC's PTX cache: `cache_dir/cuda-ptx`, else `$XDG_CACHE_HOME` or `~/.cache` `/s1-mini/ptx`.
fn ptx_cache_dir(config: &EngineConfig) -> Option<PathBuf> {
    if let Some(d) = &config.cache_dir {
        return Some(d.join("cuda-ptx"));
    }
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(x).join("s1-mini/ptx"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/s1-mini/ptx"))
}

impl Gpu {
    /// Opens the device, compiles (or loads from cache) every kernel module, creates cuBLAS.
    pub fn open(config: &EngineConfig) -> Result<Gpu, CudaError> {
        let ctx = open_context(config.device_id as usize)?;
        let info = info_of(&ctx)?;
        let (major, minor) = info.compute_capability;
        if major < MIN_COMPUTE_MAJOR {
            return Err(CudaError::Unavailable(format!(
                "{} is sm_{major}{minor}; the cuda backend needs sm_80+",
                info.name
            )));
        }
        let sm_count = ctx
            .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(|e| drv("multiprocessor count", e))? as usize;
        let stream = ctx.new_stream().map_err(|e| drv("cuStreamCreate", e))?;
        // Newer archs than the compiler knows run compute_90 PTX through the driver's JIT.
        let arch = match kernels::arch_for(major, minor).as_str() {
            a @ ("compute_80" | "compute_86" | "compute_87" | "compute_89" | "compute_90") => {
                a.to_string()
            }
            _ => "compute_90".to_string(),
        };
        let cache = ptx_cache_dir(config);
        let mut funcs = HashMap::new();
        let mut modules = Vec::new();
        for m in kernels::MODULES {
            let ptx = nvrtc::compile_cached(m, &arch, cache.as_deref())?;
            let module = ctx
                .load_module(cudarc::nvrtc::Ptx::from_src(ptx))
                .map_err(|e| drv(&format!("cuModuleLoadData({})", m.name), e))?;
            for e in m.entries {
                let f = module
                    .load_function(e)
                    .map_err(|er| drv(&format!("cuModuleGetFunction({e})"), er))?;
                funcs.insert(*e, f);
            }
            modules.push(module);
        }
        // Opt-ins above the default 48 KiB of dynamic shared memory: the sampler sorts up to
        // 8192 logits in 96 KiB; a GEMV pass stages up to 48 KiB of activations.
        let opt_in = [
            ("sample_f32", 8192 * 12),
            ("gemv_bf16", plan::GEMV_MAX_SHARED_BYTES),
            ("gemv_swiglu_bf16", plan::GEMV_MAX_SHARED_BYTES),
            ("gemv_i8", plan::GEMV_MAX_SHARED_BYTES),
            ("gemv_swiglu_i8", plan::GEMV_MAX_SHARED_BYTES),
        ];
        for (name, bytes) in opt_in {
            if let Some(f) = funcs.get(name) {
                f.set_attribute(
                    sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    bytes as i32,
                )
                .map_err(|e| drv(&format!("cuFuncSetAttribute({name})"), e))?;
            }
        }
        // S1_CUDA_NO_CUBLAS=1 runs the prefill through the GEMV kernels (a diagnostic: it
        // separates a cuBLAS layout error from a kernel error).
        let blas = if std::env::var("S1_CUDA_NO_CUBLAS").is_ok_and(|v| v == "1") {
            None
        } else {
            Self::open_blas(&stream)
        };
        let requested = pdl_requested();
        let pdl = requested && major >= 9;
        if pdl {
            log::info!("cuda: programmatic dependent launch on ({PDL_ENV}=1)");
        } else if requested {
            log::warn!("cuda: {PDL_ENV}=1 ignored: programmatic dependent launch needs sm_90+");
        }
        let target = Target::Cuda(CudaDevice { ctx, stream, funcs, _modules: modules });
        Ok(Gpu { target, sm_count, blas, pdl, info })
    }

    fn open_blas(stream: &Arc<CudaStream>) -> Option<Blas> {
        // SAFETY: only dlopen()s candidate names.
        if !unsafe { cudarc::cublas::sys::is_culib_present() } {
            log::warn!("cuda: libcublas not found; prefill uses the GEMV kernels");
            return None;
        }
        catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: cublasCreate has no preconditions besides a current context (bound by
            // new_stream above on this thread); the stream belongs to that context.
            unsafe {
                let h = cudarc::cublas::result::create_handle().ok()?;
                if cudarc::cublas::result::set_stream(h, stream.cu_stream() as _).is_err() {
                    let _ = cudarc::cublas::result::destroy_handle(h);
                    return None;
                }
                Some(Blas { handle: h })
            }
        }))
        .ok()
        .flatten()
    }

    /// The kernels compiled for the CPU, as a device of `sm_count` multiprocessors (tests).
    #[cfg(test)]
    pub fn emulated(emulator: Arc<super::emulator::Emulator>, sm_count: usize) -> Gpu {
        let info = DeviceInfo {
            name: "CPU kernel emulator".into(),
            compute_capability: (9, 0),
            total_memory_bytes: 0,
        };
        Gpu { target: Target::Emulated(emulator), sm_count, blas: None, pdl: false, info }
    }

    /// Makes the device's context current on this thread.
    pub fn bind(&self) -> Result<(), CudaError> {
        match &self.target {
            Target::Cuda(d) => d.ctx.bind_to_thread().map_err(|e| drv("bind", e)),
            #[cfg(test)]
            Target::Emulated(_) => Ok(()),
        }
    }

    /// Whether the prefill GEMMs can run ([`Gpu::gemm_bf16`]): cuBLAS was found (or emulated).
    pub fn has_blas(&self) -> bool {
        match &self.target {
            Target::Cuda(_) => self.blas.is_some(),
            #[cfg(test)]
            Target::Emulated(_) => true,
        }
    }

    /// Records the launches `body` makes as a CUDA graph, uploaded and ready to replay; `None`
    /// on the emulator, where callers launch the same kernels directly instead.
    pub fn capture(
        &self,
        body: impl FnOnce() -> Result<(), CudaError>,
    ) -> Result<Option<CudaGraph>, CudaError> {
        #[allow(clippy::infallible_destructuring_match)] // Target::Emulated exists in tests
        let d = match &self.target {
            Target::Cuda(d) => d,
            #[cfg(test)]
            Target::Emulated(_) => return Ok(None),
        };
        d.stream
            .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(|e| drv("cuStreamBeginCapture", e))?;
        let r = body();
        let end = d.stream.end_capture(sys::CUgraphInstantiate_flags(0));
        r?;
        let g = end
            .map_err(|e| drv("cuStreamEndCapture", e))?
            .ok_or_else(|| CudaError::invariant("empty graph"))?;
        g.upload().map_err(|e| drv("cuGraphUpload", e))?;
        Ok(Some(g))
    }

    /// Allocates `bytes` of device memory (uninitialised).
    pub fn alloc(&self, bytes: usize) -> Result<DevBuf, CudaError> {
        match &self.target {
            Target::Cuda(d) => {
                d.ctx.bind_to_thread().map_err(|e| drv("bind", e))?;
                // SAFETY: plain cuMemAlloc in the bound context; the result is owned by DevBuf.
                let ptr = unsafe { result::malloc_sync(bytes.max(256)) }
                    .map_err(|e| drv(&format!("cuMemAlloc({bytes} bytes)"), e))?;
                Ok(DevBuf { ptr, bytes, owner: Owner::Cuda(d.ctx.clone()) })
            }
            #[cfg(test)]
            Target::Emulated(_) => {
                let (ptr, layout) = host_alloc(bytes)?;
                Ok(DevBuf { ptr: ptr as u64, bytes, owner: Owner::Host(layout) })
            }
        }
    }

    /// Allocates and zeroes.
    pub fn alloc_zeroed(&self, bytes: usize) -> Result<DevBuf, CudaError> {
        let b = self.alloc(bytes)?;
        self.memset0(b.ptr(), bytes)?;
        Ok(b)
    }

    /// Pinned host memory.
    pub fn alloc_pinned(&self, bytes: usize) -> Result<PinnedBuf, CudaError> {
        match &self.target {
            Target::Cuda(d) => {
                d.ctx.bind_to_thread().map_err(|e| drv("bind", e))?;
                // SAFETY: cuMemHostAlloc with no flags; owned by PinnedBuf.
                let ptr = unsafe { result::malloc_host(bytes.max(64), 0) }
                    .map_err(|e| drv("cuMemHostAlloc", e))?;
                Ok(PinnedBuf { ptr, bytes, owner: Owner::Cuda(d.ctx.clone()) })
            }
            #[cfg(test)]
            Target::Emulated(_) => {
                let (ptr, layout) = host_alloc(bytes)?;
                Ok(PinnedBuf { ptr: ptr.cast(), bytes, owner: Owner::Host(layout) })
            }
        }
    }

    /// Zeroes `bytes` at `ptr` on the stream.
    pub fn memset0(&self, ptr: u64, bytes: usize) -> Result<(), CudaError> {
        match &self.target {
            // SAFETY: `ptr..ptr+bytes` lies in a live DevBuf (callers pass their own buffers).
            Target::Cuda(d) => {
                unsafe { result::memset_d8_async(ptr, 0, bytes, d.stream.cu_stream()) }
                    .map_err(|e| drv("cuMemsetD8Async", e))
            }
            #[cfg(test)]
            Target::Emulated(_) => {
                // SAFETY: as above; emulated device memory is host memory.
                unsafe { std::ptr::write_bytes(ptr as *mut u8, 0, bytes) };
                Ok(())
            }
        }
    }

    /// Host → device (synchronous with respect to the host buffer: the stream is synchronised).
    pub fn upload<T>(&self, dst: u64, src: &[T]) -> Result<(), CudaError> {
        match &self.target {
            Target::Cuda(d) => {
                d.ctx.bind_to_thread().map_err(|e| drv("bind", e))?;
                // SAFETY: `dst` holds at least size_of_val(src) bytes (callers size their
                // buffers from the same shapes); `src` outlives the copy because we synchronise
                // before returning.
                unsafe { result::memcpy_htod_async(dst, src, d.stream.cu_stream()) }
                    .map_err(|e| drv("cuMemcpyHtoDAsync", e))?;
                self.sync()
            }
            #[cfg(test)]
            // SAFETY: as above; emulated device memory is host memory.
            Target::Emulated(_) => unsafe {
                host_copy(src.as_ptr() as u64, dst, std::mem::size_of_val(src))
            },
        }
    }

    /// Device → host, synchronous.
    pub fn download<T>(&self, dst: &mut [T], src: u64) -> Result<(), CudaError> {
        match &self.target {
            Target::Cuda(d) => {
                d.ctx.bind_to_thread().map_err(|e| drv("bind", e))?;
                // SAFETY: `src` holds at least size_of_val(dst) bytes; `dst` stays borrowed
                // until the stream is synchronised below.
                unsafe { result::memcpy_dtoh_async(dst, src, d.stream.cu_stream()) }
                    .map_err(|e| drv("cuMemcpyDtoHAsync", e))?;
                self.sync()
            }
            #[cfg(test)]
            // SAFETY: as above; emulated device memory is host memory, T plain data.
            Target::Emulated(_) => unsafe {
                host_copy(src, dst.as_mut_ptr() as u64, std::mem::size_of_val(dst))
            },
        }
    }

    /// Device → pinned host, asynchronous (the caller synchronises before reading).
    pub fn download_async(&self, dst: &PinnedBuf, src: u64, bytes: usize) -> Result<(), CudaError> {
        debug_assert!(bytes <= dst.bytes);
        match &self.target {
            // SAFETY: `dst` is pinned memory of at least `bytes` bytes that lives in the request
            // until after the stream is synchronised; `src` is a live device buffer.
            Target::Cuda(d) => unsafe {
                sys::cuMemcpyDtoHAsync_v2(dst.ptr(), src, bytes, d.stream.cu_stream())
                    .result()
                    .map_err(|e| drv("cuMemcpyDtoHAsync", e))
            },
            #[cfg(test)]
            // SAFETY: as above; both are host memory.
            Target::Emulated(_) => unsafe { host_copy(src, dst.ptr() as u64, bytes) },
        }
    }

    /// Waits for the stream.
    pub fn sync(&self) -> Result<(), CudaError> {
        match &self.target {
            Target::Cuda(d) => d.stream.synchronize().map_err(|e| drv("cuStreamSynchronize", e)),
            #[cfg(test)]
            Target::Emulated(_) => Ok(()),
        }
    }

    /// Launches kernel `name` with `dims`; `args` are pointers to the argument values in the
    /// kernel's parameter order.
    ///
    /// # Safety
    /// `args` must match the kernel's signature exactly (count, order, sizes), and every device
    /// pointer among them must address a live buffer large enough for the launch's accesses.
    pub unsafe fn launch(
        &self,
        name: &str,
        dims: Dims,
        args: &mut [*mut c_void],
    ) -> Result<(), CudaError> {
        #[allow(clippy::infallible_destructuring_match)] // Target::Emulated exists in tests
        let d = match &self.target {
            Target::Cuda(d) => d,
            // SAFETY: forwarded to the caller's contract above.
            #[cfg(test)]
            Target::Emulated(e) => return unsafe { e.launch(name, dims, args) },
        };
        let f = d.funcs.get(name).ok_or_else(|| CudaError::MissingKernel(name.to_string()))?;
        if self.pdl {
            // SAFETY: the attribute union is plain data (zero is a valid value of every member).
            let mut attr: sys::CUlaunchAttribute = unsafe { std::mem::zeroed() };
            attr.id =
                sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
            attr.value.programmaticStreamSerializationAllowed = 1;
            let cfg = sys::CUlaunchConfig {
                gridDimX: dims.grid.0,
                gridDimY: dims.grid.1,
                gridDimZ: dims.grid.2,
                blockDimX: dims.block,
                blockDimY: 1,
                blockDimZ: 1,
                sharedMemBytes: dims.shared_bytes,
                hStream: d.stream.cu_stream(),
                attrs: &mut attr,
                numAttrs: 1,
            };
            // SAFETY: the caller's contract above for `args`; `cfg` and `attr` outlive the call
            // (the driver copies them); every kernel starts with pdl_enter (checked in the PTX by
            // `kernels_every_kernel_waits_before_it_writes`).
            return unsafe {
                sys::cuLaunchKernelEx(
                    &cfg,
                    f.cu_function(),
                    args.as_mut_ptr(),
                    std::ptr::null_mut(),
                )
            }
            .result()
            .map_err(|e| drv(&format!("launch {name} (PDL)"), e));
        }
        // SAFETY: forwarded to the caller's contract above.
        unsafe {
            result::launch_kernel(
                f.cu_function(),
                dims.grid,
                (dims.block, 1, 1),
                dims.shared_bytes,
                d.stream.cu_stream(),
                args,
            )
        }
        .map_err(|e| drv(&format!("launch {name}"), e))
    }

    /// Y[t, n] = (beta ? Y : 0) + X[t, :] · W[n, :] with bf16 X (`xb`) and W, f32 Y, by cuBLAS.
    ///
    /// # Safety
    /// `w` holds n·k bf16, `xb` t·k bf16, `y` t·n f32, all live.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn gemm_bf16(
        &self,
        w: u64,
        xb: u64,
        y: u64,
        n: usize,
        k: usize,
        t: usize,
        beta: f32,
    ) -> Result<(), CudaError> {
        use cudarc::cublas::sys as cb;
        #[cfg(test)]
        if let Target::Emulated(_) = &self.target {
            // SAFETY: the caller's contract above; emulated device memory is host memory.
            unsafe { host_gemm_bf16(w, xb, y, n, k, t, beta) };
            return Ok(());
        }
        let blas =
            self.blas.as_ref().ok_or_else(|| CudaError::invariant("cuBLAS not available"))?;
        let alpha = 1.0f32;
        let (m_, n_, k_) = (n as i32, t as i32, k as i32);
        // SAFETY: column-major view: C[n×t] = op(A)[n×k] · B[k×t] with A = W (k×n, ld k,
        // transposed), B = X (k×t, ld k), C = Y (n×t, ld n); the caller guarantees the sizes.
        let st = unsafe {
            cb::cublasGemmEx(
                blas.handle,
                cb::cublasOperation_t::CUBLAS_OP_T,
                cb::cublasOperation_t::CUBLAS_OP_N,
                m_,
                n_,
                k_,
                &alpha as *const f32 as *const c_void,
                w as *const c_void,
                cb::cudaDataType::CUDA_R_16BF,
                k_,
                xb as *const c_void,
                cb::cudaDataType::CUDA_R_16BF,
                k_,
                &beta as *const f32 as *const c_void,
                y as *mut c_void,
                cb::cudaDataType::CUDA_R_32F,
                m_,
                cb::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                cb::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        };
        if st == cb::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
            Ok(())
        } else {
            Err(CudaError::Blas { call: "cublasGemmEx", status: format!("{st:?}") })
        }
    }
}

/// The emulator's stand-in for cuBLAS: Y[t, n] = beta·Y + X[t, :] · W[n, :], bf16 inputs, f32
/// sums (Y is not read when beta = 0, as in cuBLAS).
///
/// # Safety
/// As [`Gpu::gemm_bf16`], with host addresses.
#[cfg(test)]
#[allow(clippy::too_many_arguments)]
unsafe fn host_gemm_bf16(w: u64, xb: u64, y: u64, n: usize, k: usize, t: usize, beta: f32) {
    use super::layout::bf16_to_f32;
    // SAFETY: the caller guarantees the sizes; the three buffers do not overlap.
    let (w, x, y) = unsafe {
        (
            std::slice::from_raw_parts(w as *const u16, n * k),
            std::slice::from_raw_parts(xb as *const u16, t * k),
            std::slice::from_raw_parts_mut(y as *mut f32, t * n),
        )
    };
    for ti in 0..t {
        for ni in 0..n {
            let s: f32 =
                (0..k).map(|ki| bf16_to_f32(w[ni * k + ki]) * bf16_to_f32(x[ti * k + ki])).sum();
            let o = &mut y[ti * n + ni];
            *o = if beta == 0.0 { s } else { beta * *o + s };
        }
    }
}
