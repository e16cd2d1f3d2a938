#ifndef WEIGHTMARK_TENSORIO_KERNELS_H
#define WEIGHTMARK_TENSORIO_KERNELS_H
// What the format layer needs in C: the Linux I/O calls Swift's Glibc overlay does not expose (sync_file_range,
// O_DIRECT through fcntl) and bf16 numerics (stochastic rounding, a fused add-and-round, sums of squares) that
// Swift's generic SIMD does not vectorize. Nothing here depends on a key: the watermark's keyed kernels are in
// CKernels, which builds on this target.
#include <stddef.h>
#include <stdint.h>

/// The vector code path every kernel (here and in CKernels) takes on this CPU: 2 = AVX-512 (F, DQ, VL, BW), 1 = AVX2+FMA,
/// 0 = portable. Functions taking a `level` accept any value up to this one.
int weightmark_vector_level(void);

/// Starts writeback of a written file range without waiting (Linux `sync_file_range(SYNC_FILE_RANGE_WRITE)`),
/// so the disk works while the producer computes instead of all at fsync. No-op elsewhere; returns 0 or -1.
int weightmark_start_writeback(int fd, int64_t offset, int64_t length);

/// Registers a temporary file or (empty) scratch folder to remove if the process gets SIGINT, SIGTERM or SIGHUP
/// (installs the handler on first use; signals already ignored stay ignored). Returns a slot for
/// `weightmark_unregister_temporary`, or -1 when the table is full or the path too long (then it is not removed).
int weightmark_register_temporary(const char *path);
void weightmark_unregister_temporary(int slot);

/// Registers a read-only file mapping so that a SIGBUS inside it (the file shrank while mapped) is absorbed: a zero
/// page replaces the faulting page and the mapping is marked as faulted. Returns a slot for the two calls below, or -1.
int weightmark_register_mapping(const void *base, size_t length);
void weightmark_unregister_mapping(int slot);
/// Whether a SIGBUS was absorbed in the mapping of `slot` since it was registered.
int weightmark_mapping_faulted(int slot);
/// SIGBUS faults absorbed in this process so far (all mappings).
long weightmark_mapping_fault_total(void);
/// Fatal signals print one line and end the process with the same signal (no backtracer that could hang a batch run).
void weightmark_install_crash_handler(void);

/// Turns direct I/O (Linux O_DIRECT: DMA from user buffers, no page-cache copy) on or off for `fd`.
/// Returns 0, or -1 where unsupported (other systems, some filesystems).
int weightmark_set_direct_io(int fd, int on);

/// bf16 stochastic rounding of `count` floats into `out` (little-endian host), drawing from SplitMix64 with
/// state `*state` (advanced): one 64-bit draw per four values, low 16 bits first, each value truncated and
/// stepped away from zero when its dropped 16 bits exceed the draw; NaN/inf, and steps that would overflow to
/// inf, round to nearest even instead. `level` is a code path as above.
void weightmark_bf16_stochastic(int level, const float *x, size_t count, uint16_t *out, uint64_t *state);

/// Adds the sum of squares of `count` bf16 values to *sum (each square exact in double).
void weightmark_bf16_sum_squares(int level, const uint16_t *w, size_t count, double *sum);

/// One pass of bf16 marking: reads stored bf16 weights w, writes bf16 out = stochastic_round(w + beta * h * p)
/// with h = 1 (magnitude_scale = 0) or |w| * magnitude_scale, drawing from SplitMix64 as
/// `weightmark_bf16_stochastic` does, and adds the stored distortion sum of (out - w)^2 to *diff2.
void weightmark_mark_bf16(int level, const uint16_t *w, const float *p, float beta, float magnitude_scale, size_t count,
                          uint16_t *out, uint64_t *state, double *diff2);

#endif
