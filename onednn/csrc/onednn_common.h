// What the oneDNN handlers share (onednn_conv.cc, onednn_pool.cc,
// onednn_bnorm.cc): one engine, one call at a time, the thread count, dtypes,
// scratchpads, shape checks and a cache of primitives.
//
// Every primitive takes its scratchpad from the caller
// (scratchpad_mode::user). oneDNN's default, library mode, keeps one
// scratchpad per *thread* and sizes it when a primitive is created; XLA runs
// a handler on whichever worker thread is free, so a primitive created on
// one thread and run on another wrote past a smaller scratchpad (GoogLeNet at
// 8x8 input segfaulted: an im2col convolution's buffer overflowed the heap).
//
// A buffer whose shape does not match the call's geometry is an FFI error,
// never a kernel run on a wrong size.
// One call runs at a time: XLA may run independent ops concurrently, and two
// OpenMP teams on the same cores would thrash.
//
// oneDNN's sums (the weight gradient's above all) split by thread count, so
// the team size decides the last bits of the result. It follows XLA's own
// rule, one thread per CPU the process may run on, and not OMP_NUM_THREADS:
// a run launched by Ray or SLURM, which set that variable, then computes
// exactly what the same run computes started by hand.
#ifndef INCEPTION_CSRC_ONEDNN_COMMON_H_
#define INCEPTION_CSRC_ONEDNN_COMMON_H_

#include <omp.h>
#include <sched.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace inception_onednn {

namespace ffi = xla::ffi;
using dnnl::memory;
using tag = dnnl::memory::format_tag;

// The FFI attributes every handler here takes after its buffers.
#define INCEPTION_ONEDNN_WINDOW_ATTRS \
  .Attr<int64_t>("stride")            \
      .Attr<int64_t>("pad_top")       \
      .Attr<int64_t>("pad_bottom")    \
      .Attr<int64_t>("pad_left")      \
      .Attr<int64_t>("pad_right")

// Elementwise views of a float32 or bfloat16 buffer, for the handlers' NaN
// guards: oneDNN's fused ReLU and max pooling drop NaNs that the reference
// ops (jax.nn.relu, XLA's reduce_window) keep, and these restore them.
inline uint32_t Bits(const void* data, bool bf16, int64_t i) {
  if (bf16) {
    uint16_t v;
    std::memcpy(&v, static_cast<const char*>(data) + 2 * i, 2);
    return static_cast<uint32_t>(v) << 16;
  }
  uint32_t v;
  std::memcpy(&v, static_cast<const char*>(data) + 4 * i, 4);
  return v;
}
inline bool NonFinite(const void* data, bool bf16, int64_t i) {
  return (Bits(data, bf16, i) & 0x7F800000u) == 0x7F800000u;
}
inline bool IsNaN(const void* data, bool bf16, int64_t i) {
  const uint32_t v = Bits(data, bf16, i);
  return (v & 0x7F800000u) == 0x7F800000u && (v & 0x007FFFFFu) != 0;
}
inline void SetNaN(void* data, bool bf16, int64_t i) {
  const uint32_t nan = 0x7FC00000u;
  const uint16_t nan16 = 0x7FC0u;
  if (bf16) std::memcpy(static_cast<char*>(data) + 2 * i, &nan16, 2);
  else std::memcpy(static_cast<char*>(data) + 4 * i, &nan, 4);
}
inline bool IsBf16(const ffi::AnyBuffer& b) {
  return b.element_type() == ffi::DataType::BF16;
}
// Sets every element of an NHWC (channel-last) buffer whose channel is
// flagged in ``bad`` (one char per channel) to NaN.
inline void PoisonChannels(ffi::AnyBuffer& y, const char* bad,
                           int64_t channels) {
  const int64_t size = static_cast<int64_t>(y.element_count());
  const bool bf16 = IsBf16(y);
  for (int64_t i = 0; i < size; ++i)
    if (bad[i % channels]) SetNaN(y.untyped_data(), bf16, i);
}

// Whether a float32 or bfloat16 buffer holds a NaN (``nan_only``) or any
// non-finite value: one branch-free pass the compiler vectorises, so that the
// guards cost a read of the buffer and nothing more when all is finite.
__attribute__((optimize("O3"))) inline bool AnyNonFinite(
    const ffi::AnyBuffer& b, bool nan_only = false) {
  const int64_t size = static_cast<int64_t>(b.element_count());
  bool any = false;
  if (IsBf16(b)) {
    const uint16_t* v = static_cast<const uint16_t*>(b.untyped_data());
    const uint16_t limit = nan_only ? 0x7F81u : 0x7F80u;
    for (int64_t i = 0; i < size; ++i) any |= (v[i] & 0x7FFFu) >= limit;
  } else {
    const uint32_t* v = static_cast<const uint32_t*>(b.untyped_data());
    const uint32_t limit = nan_only ? 0x7F800001u : 0x7F800000u;
    for (int64_t i = 0; i < size; ++i) any |= (v[i] & 0x7FFFFFFFu) >= limit;
  }
  return any;
}

inline dnnl::engine& Engine() {
  static dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  return eng;
}

inline std::mutex& CallMutex() {
  static std::mutex m;
  return m;
}

inline int Threads() {
  static const int n = [] {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) != 0) return omp_get_num_procs();
    return CPU_COUNT(&set);
  }();
  return n;
}

// Runs fn under the call lock with XLA's thread count (or ``threads``, for
// kernels that must not use a team); oneDNN errors become
// FFI errors. The setting is per call because it belongs to the calling
// thread, and XLA calls from any of its workers; primitives are built and
// run under it.
template <typename Fn>
ffi::Error Guarded(Fn fn, int threads = Threads()) {
  try {
    std::lock_guard<std::mutex> lock(CallMutex());
    omp_set_num_threads(threads);
    fn();
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("oneDNN: ") + e.what());
  } catch (const std::bad_alloc&) {
    return ffi::Error::Internal("oneDNN: out of memory for a scratchpad");
  }
  return ffi::Error::Success();
}

// An f32 or bf16 buffer's oneDNN data type; any other dtype is an error
// naming ``what``.
inline ffi::Error ToDnnlType(ffi::DataType t, memory::data_type* dt,
                             const char* what) {
  if (t == ffi::DataType::F32) {
    *dt = memory::data_type::f32;
  } else if (t == ffi::DataType::BF16) {
    *dt = memory::data_type::bf16;
  } else {
    return ffi::Error::InvalidArgument(std::string("oneDNN: ") + what +
                                       " must be f32 or bf16");
  }
  return ffi::Error::Success();
}

// The attribute every primitive here is built with: see the file comment.
inline dnnl::primitive_attr UserScratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

// A grow-only, 64-byte aligned buffer; use with the call lock held.
class Scratch {
 public:
  void* Get(size_t bytes) {
    if (bytes > size_) {
      const size_t rounded = (bytes + 63) / 64 * 64;
      void* p = std::aligned_alloc(64, rounded);
      if (p == nullptr) throw std::bad_alloc();
      data_.reset(p);
      size_ = rounded;
    }
    return data_.get();
  }

 private:
  struct Free {
    void operator()(void* p) const { std::free(p); }
  };
  std::unique_ptr<void, Free> data_;
  size_t size_ = 0;
};

// Runs a primitive with its scratchpad (``scratchpad``: the primitive
// descriptor's scratchpad_desc()) on the shared buffer. Primitives run one
// after another, so they can share it.
inline void Execute(const dnnl::primitive& p, const memory::desc& scratchpad,
                    dnnl::stream& s, std::unordered_map<int, memory> args) {
  static Scratch buffer;
  if (scratchpad.get_size() > 0) {
    args[DNNL_ARG_SCRATCHPAD] =
        memory(scratchpad, Engine(), buffer.Get(scratchpad.get_size()));
  }
  p.execute(s, args);
}

// One spatial dimension of a windowed op (conv or pool): the output size
// must be what the input, window, stride and padding give, and every window
// must overlap the input. An InvalidArgument naming ``op`` otherwise.
inline ffi::Error CheckWindow(const char* op, int64_t in, int64_t window,
                              int64_t stride, int64_t lo, int64_t hi,
                              int64_t out) {
  auto fail = [&](const std::string& why) {
    return ffi::Error::InvalidArgument(std::string("oneDNN ") + op + ": " +
                                       why);
  };
  if (in < 1 || window < 1 || out < 1) return fail("empty input or window");
  if (stride < 1) return fail("stride must be at least 1");
  if (lo < 0 || hi < 0) return fail("padding must be non-negative");
  if (lo >= window || hi >= window)
    return fail("padding must be smaller than the window");
  if (in + lo + hi < window) return fail("window larger than padded input");
  if ((in + lo + hi - window) / stride + 1 != out)
    return fail("output size does not match input, window, stride, padding");
  return ffi::Error::Success();
}

// The plan built once per key (shape and attributes); call with the lock held.
template <typename T, typename Build>
const T& Cached(const std::string& key, Build build) {
  static std::unordered_map<std::string, std::unique_ptr<T>> cache;
  auto it = cache.find(key);
  if (it == cache.end()) {
    it = cache.emplace(key, std::make_unique<T>(build())).first;
  }
  return *it->second;
}

}  // namespace inception_onednn

// What the library says of itself (set by onednn/setup.py); inception/kernels/onednn.py
// checks both before it registers a handler.
#ifndef INCEPTION_ONEDNN_ABI
#error "build with onednn/setup.py: INCEPTION_ONEDNN_ABI is not defined"
#endif
#ifndef INCEPTION_JAXLIB_VERSION
#error "build with onednn/setup.py: INCEPTION_JAXLIB_VERSION is not defined"
#endif

#endif  // INCEPTION_CSRC_ONEDNN_COMMON_H_
