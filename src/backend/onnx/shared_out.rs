//! The output buffer of one of onnx-cpu's own kernels (attention.rs, snake.rs), which the
//! kernel's parallel tasks (`ComputeContext::par_for`) write at disjoint places.

/// A pointer and length to the output; each task rebuilds its slice from [`SharedOut::parts`]
/// and writes only its own part (the kernel's `SAFETY` comment says which).
pub(super) struct SharedOut<T>(*mut T, usize);

// Manual impls: derive would require `T: Clone`, which a pointer copy does not need.
impl<T> Clone for SharedOut<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SharedOut<T> {}

// SAFETY: the kernels' tasks write disjoint places of the buffer, which outlives par_for (it
// returns after every task); see each kernel's `compute`.
unsafe impl<T: Send> Send for SharedOut<T> {}
unsafe impl<T: Send> Sync for SharedOut<T> {}

impl<T> SharedOut<T> {
    pub(super) fn new(out: &mut [T]) -> Self {
        SharedOut(out.as_mut_ptr(), out.len())
    }

    /// The pointer and length (a method, so that closures capture the whole `Sync` value).
    pub(super) fn parts(self) -> (*mut T, usize) {
        (self.0, self.1)
    }
}
