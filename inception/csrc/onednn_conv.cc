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
// shape and cached (onednn_common.h: one call at a time, thread count).
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "inception/csrc/onednn_common.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using tag = dnnl::memory::format_tag;
using inception_onednn::Cached;
using inception_onednn::Engine;
using inception_onednn::Guarded;

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
    const Plan& p = Cached<Plan>(g.Key("fwd"), [&] {
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
    const Plan& p = Cached<Plan>(g.Key("bwd_data"), [&] {
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
    const Plan& p = Cached<Plan>(g.Key("bwd_wei"), [&] {
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
