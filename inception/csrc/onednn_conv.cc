// oneDNN convolutions for XLA:CPU, as XLA FFI handlers (inception/onednn.py).
//
// Three handlers, NHWC activations and HWIO kernels as in the rest of the
// codebase; the operands are float32 or bfloat16, every output is float32
// (bf16 products accumulate in float32 inside oneDNN):
//   inception_onednn_conv_fwd:       y  = conv(x, w)
//   inception_onednn_conv_bwd_data:  dx = conv_transpose(dy, w)
//   inception_onednn_conv_bwd_wei:   dw = correlation(x, dy)
// Attributes: stride, pad_top, pad_bottom, pad_left, pad_right (int64).
//
// Activations keep XLA's NHWC layout (oneDNN's brgemm convolutions run on it
// directly); kernels take the layout oneDNN picks and are reordered on each
// call, which is cheap next to the convolution. Primitives are built once per
// shape and cached. One call runs at a time: XLA may run independent ops
// concurrently, and two OpenMP teams on the same cores would thrash.
//
// oneDNN's sums (the weight gradient's above all) split by thread count, so
// the team size decides the last bits of the result. It follows XLA's own
// rule, one thread per CPU the process may run on, and not OMP_NUM_THREADS:
// a run launched by Ray or SLURM, which set that variable, then computes
// exactly what the same run computes started by hand.
#include <omp.h>
#include <sched.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using tag = dnnl::memory::format_tag;

namespace {

struct Geometry {
  int64_t n, h, w, c;       // input (or input gradient)
  int64_t ho, wo, o;        // output (or output gradient)
  int64_t kh, kw;           // kernel
  int64_t stride, pt, pb, pl, pr;
  memory::data_type operand;  // x, w and dy; the result is always f32

  std::string Key(const char* op) const {
    std::ostringstream s;
    s << op << ':' << n << ',' << h << ',' << w << ',' << c << ',' << ho << ','
      << wo << ',' << o << ',' << kh << ',' << kw << ',' << stride << ',' << pt
      << ',' << pb << ',' << pl << ',' << pr << ',' << int(operand);
    return s.str();
  }
  memory::desc Src(memory::data_type t) const {
    return memory::desc({n, c, h, w}, t, tag::nhwc);
  }
  memory::desc Dst(memory::data_type t) const {
    return memory::desc({n, o, ho, wo}, t, tag::nhwc);
  }
  memory::desc UserWeights(memory::data_type t) const {
    return memory::desc({o, c, kh, kw}, t, tag::hwio);
  }
  memory::desc AnyWeights(memory::data_type t) const {
    return memory::desc({o, c, kh, kw}, t, tag::any);
  }
  dnnl::convolution_forward::primitive_desc Forward(
      const dnnl::engine& eng, memory::data_type out) const {
    return dnnl::convolution_forward::primitive_desc(
        eng, dnnl::prop_kind::forward_training,
        dnnl::algorithm::convolution_direct, Src(operand), AnyWeights(operand),
        Dst(out), {stride, stride}, {pt, pl}, {pb, pr});
  }
};

// A cached primitive and the kernel reorder that goes with it.
struct Plan {
  dnnl::primitive conv;
  dnnl::reorder weights;       // user HWIO <-> the primitive's layout
  memory::desc weights_desc;   // the primitive's kernel layout
  bool weights_reordered;      // false when oneDNN took HWIO as it is
};

dnnl::engine& Engine() {
  static dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  return eng;
}

std::mutex& CallMutex() {
  static std::mutex m;
  return m;
}

// Called with CallMutex held.
template <typename Build>
const Plan& Cached(const std::string& key, Build build) {
  static std::unordered_map<std::string, std::unique_ptr<Plan>> cache;
  auto it = cache.find(key);
  if (it == cache.end()) {
    it = cache.emplace(key, std::make_unique<Plan>(build())).first;
  }
  return *it->second;
}

// Kernel scratch in the primitive's layout, reused across calls.
void* WeightScratch(size_t bytes) {
  static std::vector<uint8_t> buffer;
  if (buffer.size() < bytes) buffer.resize(bytes);
  return buffer.data();
}

ffi::Error OperandType(ffi::DataType t, memory::data_type* out) {
  if (t == ffi::DataType::F32) {
    *out = memory::data_type::f32;
  } else if (t == ffi::DataType::BF16) {
    *out = memory::data_type::bf16;
  } else {
    return ffi::Error::InvalidArgument("oneDNN conv: operands must be f32 or bf16");
  }
  return ffi::Error::Success();
}

Plan WithWeightReorder(dnnl::primitive conv, const memory::desc& user,
                       const memory::desc& chosen, bool to_user) {
  Plan p{conv, {}, chosen, chosen != user};
  if (p.weights_reordered) {
    const dnnl::engine& eng = Engine();
    p.weights = to_user ? dnnl::reorder(memory(chosen, eng, nullptr),
                                        memory(user, eng, nullptr))
                        : dnnl::reorder(memory(user, eng, nullptr),
                                        memory(chosen, eng, nullptr));
  }
  return p;
}

int Threads() {
  static const int n = [] {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) != 0) return omp_get_num_procs();
    return CPU_COUNT(&set);
  }();
  return n;
}

template <typename Fn>
ffi::Error Guarded(Fn fn) {
  try {
    std::lock_guard<std::mutex> lock(CallMutex());
    // Per call: the setting belongs to the calling thread, and XLA calls
    // from any of its workers. Primitives are built and run under it.
    omp_set_num_threads(Threads());
    fn();
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("oneDNN: ") + e.what());
  }
  return ffi::Error::Success();
}

ffi::Error ConvFwdImpl(ffi::AnyBuffer x, ffi::AnyBuffer w,
                       ffi::Result<ffi::AnyBuffer> y, int64_t stride,
                       int64_t pad_top, int64_t pad_bottom, int64_t pad_left,
                       int64_t pad_right) {
  auto xd = x.dimensions(), wd = w.dimensions(), yd = y->dimensions();
  Geometry g{xd[0], xd[1], xd[2], xd[3], yd[1], yd[2], yd[3], wd[0], wd[1],
             stride, pad_top, pad_bottom, pad_left, pad_right,
             memory::data_type::f32};
  if (auto err = OperandType(x.element_type(), &g.operand); err.failure())
    return err;
  return Guarded([&] {
    dnnl::engine& eng = Engine();
    const Plan& p = Cached(g.Key("fwd"), [&] {
      auto pd = g.Forward(eng, memory::data_type::f32);
      return WithWeightReorder(dnnl::convolution_forward(pd),
                               g.UserWeights(g.operand), pd.weights_desc(),
                               /*to_user=*/false);
    });
    dnnl::stream s(eng);
    memory user_w(g.UserWeights(g.operand), eng, w.untyped_data());
    memory conv_w = user_w;
    if (p.weights_reordered) {
      conv_w = memory(p.weights_desc, eng,
                      WeightScratch(p.weights_desc.get_size()));
      p.weights.execute(s, user_w, conv_w);
    }
    p.conv.execute(
        s, {{DNNL_ARG_SRC, memory(g.Src(g.operand), eng, x.untyped_data())},
            {DNNL_ARG_WEIGHTS, conv_w},
            {DNNL_ARG_DST,
             memory(g.Dst(memory::data_type::f32), eng, y->untyped_data())}});
    s.wait();
  });
}

ffi::Error ConvBwdDataImpl(ffi::AnyBuffer dy, ffi::AnyBuffer w,
                           ffi::Result<ffi::AnyBuffer> dx, int64_t stride,
                           int64_t pad_top, int64_t pad_bottom,
                           int64_t pad_left, int64_t pad_right) {
  auto dyd = dy.dimensions(), wd = w.dimensions(), xd = dx->dimensions();
  Geometry g{xd[0], xd[1], xd[2], xd[3], dyd[1], dyd[2], dyd[3], wd[0], wd[1],
             stride, pad_top, pad_bottom, pad_left, pad_right,
             memory::data_type::f32};
  if (auto err = OperandType(dy.element_type(), &g.operand); err.failure())
    return err;
  return Guarded([&] {
    dnnl::engine& eng = Engine();
    const Plan& p = Cached(g.Key("bwd_data"), [&] {
      auto hint = g.Forward(eng, g.operand);
      dnnl::convolution_backward_data::primitive_desc pd(
          eng, dnnl::algorithm::convolution_direct,
          g.Src(memory::data_type::f32), g.AnyWeights(g.operand),
          g.Dst(g.operand), {stride, stride}, {g.pt, g.pl}, {g.pb, g.pr},
          hint);
      return WithWeightReorder(dnnl::convolution_backward_data(pd),
                               g.UserWeights(g.operand), pd.weights_desc(),
                               /*to_user=*/false);
    });
    dnnl::stream s(eng);
    memory user_w(g.UserWeights(g.operand), eng, w.untyped_data());
    memory conv_w = user_w;
    if (p.weights_reordered) {
      conv_w = memory(p.weights_desc, eng,
                      WeightScratch(p.weights_desc.get_size()));
      p.weights.execute(s, user_w, conv_w);
    }
    p.conv.execute(
        s, {{DNNL_ARG_DIFF_DST,
             memory(g.Dst(g.operand), eng, dy.untyped_data())},
            {DNNL_ARG_WEIGHTS, conv_w},
            {DNNL_ARG_DIFF_SRC,
             memory(g.Src(memory::data_type::f32), eng, dx->untyped_data())}});
    s.wait();
  });
}

ffi::Error ConvBwdWeightsImpl(ffi::AnyBuffer x, ffi::AnyBuffer dy,
                              ffi::Result<ffi::AnyBuffer> dw, int64_t stride,
                              int64_t pad_top, int64_t pad_bottom,
                              int64_t pad_left, int64_t pad_right) {
  auto xd = x.dimensions(), dyd = dy.dimensions(), wd = dw->dimensions();
  Geometry g{xd[0], xd[1], xd[2], xd[3], dyd[1], dyd[2], dyd[3], wd[0], wd[1],
             stride, pad_top, pad_bottom, pad_left, pad_right,
             memory::data_type::f32};
  if (auto err = OperandType(x.element_type(), &g.operand); err.failure())
    return err;
  const auto f32 = memory::data_type::f32;
  return Guarded([&] {
    dnnl::engine& eng = Engine();
    const Plan& p = Cached(g.Key("bwd_wei"), [&] {
      auto hint = g.Forward(eng, g.operand);
      dnnl::convolution_backward_weights::primitive_desc pd(
          eng, dnnl::algorithm::convolution_direct, g.Src(g.operand),
          g.AnyWeights(f32), g.Dst(g.operand), {stride, stride}, {g.pt, g.pl},
          {g.pb, g.pr}, hint);
      return WithWeightReorder(dnnl::convolution_backward_weights(pd),
                               g.UserWeights(f32), pd.diff_weights_desc(),
                               /*to_user=*/true);
    });
    dnnl::stream s(eng);
    memory user_dw(g.UserWeights(f32), eng, dw->untyped_data());
    memory conv_dw = user_dw;
    if (p.weights_reordered) {
      conv_dw = memory(p.weights_desc, eng,
                       WeightScratch(p.weights_desc.get_size()));
    }
    p.conv.execute(
        s, {{DNNL_ARG_SRC, memory(g.Src(g.operand), eng, x.untyped_data())},
            {DNNL_ARG_DIFF_DST,
             memory(g.Dst(g.operand), eng, dy.untyped_data())},
            {DNNL_ARG_DIFF_WEIGHTS, conv_dw}});
    if (p.weights_reordered) p.weights.execute(s, conv_dw, user_dw);
    s.wait();
  });
}

}  // namespace

#define INCEPTION_CONV_BINDING                 \
  ffi::Ffi::Bind()                             \
      .Arg<ffi::AnyBuffer>()                   \
      .Arg<ffi::AnyBuffer>()                   \
      .Ret<ffi::AnyBuffer>()                   \
      .Attr<int64_t>("stride")                 \
      .Attr<int64_t>("pad_top")                \
      .Attr<int64_t>("pad_bottom")             \
      .Attr<int64_t>("pad_left")               \
      .Attr<int64_t>("pad_right")

XLA_FFI_DEFINE_HANDLER_SYMBOL(InceptionOnednnConvFwd, ConvFwdImpl,
                              INCEPTION_CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(InceptionOnednnConvBwdData, ConvBwdDataImpl,
                              INCEPTION_CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(InceptionOnednnConvBwdWeights,
                              ConvBwdWeightsImpl,
                              INCEPTION_CONV_BINDING);
