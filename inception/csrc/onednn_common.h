// What the oneDNN handlers share (onednn_conv.cc, onednn_pool.cc,
// onednn_bnorm.cc): one engine, one call at a time, the thread count, dtypes,
// and a cache of primitives.
//
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

#endif  // INCEPTION_CSRC_ONEDNN_COMMON_H_
