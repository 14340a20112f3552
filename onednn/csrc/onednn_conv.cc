// oneDNN convolutions for XLA:CPU, as XLA FFI handlers (inception/kernels/onednn.py).
//
// Three handlers, NHWC activations and HWIO kernels as in the rest of the
// codebase; the operands are float32 or bfloat16 and accumulate in float32
// inside oneDNN; y and dx come out in their result buffer's dtype (float32,
// or bfloat16 where the activations are bf16), dw always in float32:
//   inception_onednn_conv_fwd:       y  = conv(x, w)
//   inception_onednn_conv_fwd_bias:  y  = conv(x, w) + b, then a ReLU if the
//                                    ``relu`` attribute is 1 (b: f32 [C_out]),
//                                    both fused into the convolution; with the
//                                    ReLU, a channel whose kernel or bias is
//                                    not finite comes out NaN
//   inception_onednn_conv_bwd_data:  dx = conv_transpose(dy, w)
//   inception_onednn_conv_bwd_wei:   dw = correlation(x, dy)
// Attributes: stride, pad_top, pad_bottom, pad_left, pad_right (int64), and
// relu (int64) for the biased forward.
//
// Activations keep XLA's NHWC layout (oneDNN's brgemm convolutions run on it
// directly); kernels take the layout oneDNN picks and are reordered on each
// call, which is cheap next to the convolution. Primitives are built once per
// shape and cached (onednn_common.h: one call at a time, thread count).
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "csrc/onednn_common.h"

namespace inception_onednn {
namespace {

struct Geometry {
  int64_t n, h, w, c;       // input (or input gradient)
  int64_t ho, wo, o;        // output (or output gradient)
  int64_t kh, kw;           // kernel
  int64_t stride, pt, pb, pl, pr;
  memory::data_type operand;  // x, w and dy
  memory::data_type result;   // y or dx (dw is always f32)

  std::string Key(const char* op) const {
    std::ostringstream s;
    s << op << ':' << n << ',' << h << ',' << w << ',' << c << ',' << ho << ','
      << wo << ',' << o << ',' << kh << ',' << kw << ',' << stride << ',' << pt
      << ',' << pb << ',' << pl << ',' << pr << ',' << int(operand) << ','
      << int(result);
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
        Dst(out), {stride, stride}, {pt, pl}, {pb, pr}, UserScratchpad());
  }
};

// A cached primitive and the kernel reorder that goes with it, with their
// scratchpads (onednn_common.h).
struct Plan {
  dnnl::primitive conv;
  memory::desc conv_scratchpad;
  dnnl::reorder weights;       // user HWIO <-> the primitive's layout
  memory::desc weights_scratchpad;
  memory::desc weights_desc;   // the primitive's kernel layout
  bool weights_reordered;      // false when oneDNN took HWIO as it is
};

// Kernel scratch in the primitive's layout, reused across calls (apart from
// the primitives' own scratchpad: both are live in one call).
void* WeightScratch(size_t bytes) {
  static Scratch buffer;
  return buffer.Get(bytes);
}

// The geometry of a call from its buffers' dimensions: the input side
// (x or dx), the output side (y or dy) and the kernel (w or dw), all NHWC /
// HWIO; f32 or bf16 operands.
ffi::Error MakeGeometry(ffi::AnyBuffer::Dimensions in,
                        ffi::AnyBuffer::Dimensions out,
                        ffi::AnyBuffer::Dimensions kernel,
                        ffi::DataType operand, ffi::DataType result,
                        int64_t stride, int64_t pt, int64_t pb, int64_t pl,
                        int64_t pr, Geometry* g) {
  if (in.size() != 4 || out.size() != 4 || kernel.size() != 4)
    return ffi::Error::InvalidArgument(
        "oneDNN conv: activations must be NHWC and the kernel HWIO");
  if (in[0] != out[0] || in[3] != kernel[2] || out[3] != kernel[3] ||
      in[0] < 1 || in[3] < 1 || out[3] < 1)
    return ffi::Error::InvalidArgument(
        "oneDNN conv: batch or channel counts do not match the kernel");
  if (auto err = CheckWindow("conv", in[1], kernel[0], stride, pt, pb, out[1]);
      err.failure())
    return err;
  if (auto err = CheckWindow("conv", in[2], kernel[1], stride, pl, pr, out[2]);
      err.failure())
    return err;
  *g = Geometry{in[0], in[1], in[2], in[3], out[1], out[2], out[3],
                kernel[0], kernel[1], stride, pt, pb, pl, pr,
                memory::data_type::f32, memory::data_type::f32};
  if (auto err = ToDnnlType(operand, &g->operand, "conv operands");
      err.failure())
    return err;
  return ToDnnlType(result, &g->result, "conv results");
}

// Both operands of a call must have the operand dtype.
ffi::Error SameDtype(const ffi::AnyBuffer& a, const ffi::AnyBuffer& b) {
  if (a.element_type() != b.element_type())
    return ffi::Error::InvalidArgument(
        "oneDNN conv: the two operands differ in dtype");
  return ffi::Error::Success();
}

// The kernel in the primitive's layout: the user's HWIO buffer itself, or
// its reorder into the scratch buffer.
memory StagedWeights(const Plan& p, memory user, dnnl::stream& s) {
  if (!p.weights_reordered) return user;
  memory staged(p.weights_desc, Engine(),
                WeightScratch(p.weights_desc.get_size()));
  Execute(p.weights, p.weights_scratchpad, s,
          {{DNNL_ARG_FROM, user}, {DNNL_ARG_TO, staged}});
  return staged;
}

template <typename PrimitiveDesc, typename Primitive>
Plan WithWeightReorder(const PrimitiveDesc& pd, const Primitive& conv,
                       const memory::desc& user, const memory::desc& chosen,
                       bool to_user) {
  Plan p{conv, pd.scratchpad_desc(), {}, {}, chosen, chosen != user};
  if (p.weights_reordered) {
    const dnnl::engine& eng = Engine();
    dnnl::reorder::primitive_desc rpd =
        to_user ? dnnl::reorder::primitive_desc(eng, chosen, eng, user,
                                                UserScratchpad())
                : dnnl::reorder::primitive_desc(eng, user, eng, chosen,
                                                UserScratchpad());
    p.weights = dnnl::reorder(rpd);
    p.weights_scratchpad = rpd.scratchpad_desc();
  }
  return p;
}

// The fused ReLU maps NaN to 0, where the reference (conv, bias, then a ReLU)
// keeps it: every output channel whose kernel slice (HWIO: the channel is the
// last index) or bias holds an inf or NaN is set to NaN, so a network whose
// parameters went non-finite still shows it. One pass over the kernel, which
// is small next to the convolution; nothing more unless a value is bad.
void PoisonNonFiniteChannels(const ffi::AnyBuffer& w, const ffi::AnyBuffer& b,
                             ffi::AnyBuffer& y, int64_t channels) {
  if (!AnyNonFinite(w) && !AnyNonFinite(b)) return;
  std::vector<char> bad(channels, 0);
  const bool w_bf16 = IsBf16(w);
  const int64_t w_size = static_cast<int64_t>(w.element_count());
  for (int64_t i = 0; i < w_size; ++i)
    if (NonFinite(w.untyped_data(), w_bf16, i)) bad[i % channels] = 1;
  for (int64_t c = 0; c < channels; ++c)
    if (NonFinite(b.untyped_data(), /*bf16=*/false, c)) bad[c] = 1;
  PoisonChannels(y, bad.data(), channels);
}

// y = conv(x, w), plus b and then a ReLU if ``relu`` where ``b`` is given:
// both forward handlers.
ffi::Error Forward(const ffi::AnyBuffer& x, const ffi::AnyBuffer& w,
                   const ffi::AnyBuffer* b, ffi::AnyBuffer& y, int64_t stride,
                   int64_t pad_top, int64_t pad_bottom, int64_t pad_left,
                   int64_t pad_right, bool relu) {
  Geometry g;
  if (auto err = MakeGeometry(x.dimensions(), y.dimensions(), w.dimensions(),
                              x.element_type(), y.element_type(), stride,
                              pad_top, pad_bottom, pad_left, pad_right, &g);
      err.failure())
    return err;
  if (auto err = SameDtype(x, w); err.failure()) return err;
  if (b != nullptr &&
      (b->element_type() != ffi::DataType::F32 ||
       b->dimensions().size() != 1 || b->dimensions()[0] != g.o))
    return ffi::Error::InvalidArgument(
        "oneDNN conv: the bias must be f32 with one value per output channel");
  const memory::desc bias_desc({g.o}, memory::data_type::f32, tag::a);
  const char* key = b == nullptr ? "fwd" : relu ? "fwd_bias_relu" : "fwd_bias";
  return Guarded([&] {
    dnnl::engine& eng = Engine();
    const Plan& p = Cached<Plan>(g.Key(key), [&] {
      dnnl::primitive_attr attr = UserScratchpad();
      if (relu) {
        dnnl::post_ops ops;
        ops.append_eltwise(dnnl::algorithm::eltwise_relu, 0.f, 0.f);
        attr.set_post_ops(ops);
      }
      auto pd = b == nullptr
          ? g.Forward(eng, g.result)
          : dnnl::convolution_forward::primitive_desc(
                eng, dnnl::prop_kind::forward_training,
                dnnl::algorithm::convolution_direct, g.Src(g.operand),
                g.AnyWeights(g.operand), bias_desc, g.Dst(g.result),
                {stride, stride}, {g.pt, g.pl}, {g.pb, g.pr}, attr);
      return WithWeightReorder(pd, dnnl::convolution_forward(pd),
                               g.UserWeights(g.operand), pd.weights_desc(),
                               /*to_user=*/false);
    });
    dnnl::stream s(eng);
    memory conv_w = StagedWeights(
        p, memory(g.UserWeights(g.operand), eng, w.untyped_data()), s);
    std::unordered_map<int, memory> args{
        {DNNL_ARG_SRC, memory(g.Src(g.operand), eng, x.untyped_data())},
        {DNNL_ARG_WEIGHTS, conv_w},
        {DNNL_ARG_DST, memory(g.Dst(g.result), eng, y.untyped_data())}};
    if (b != nullptr)
      args[DNNL_ARG_BIAS] = memory(bias_desc, eng, b->untyped_data());
    Execute(p.conv, p.conv_scratchpad, s, args);
    s.wait();
    if (relu && b != nullptr) PoisonNonFiniteChannels(w, *b, y, g.o);
  });
}

ffi::Error ConvFwdImpl(ffi::AnyBuffer x, ffi::AnyBuffer w,
                       ffi::Result<ffi::AnyBuffer> y, int64_t stride,
                       int64_t pad_top, int64_t pad_bottom, int64_t pad_left,
                       int64_t pad_right) {
  return Forward(x, w, nullptr, *y, stride, pad_top, pad_bottom, pad_left,
                 pad_right, /*relu=*/false);
}

ffi::Error ConvFwdBiasImpl(ffi::AnyBuffer x, ffi::AnyBuffer w,
                           ffi::AnyBuffer b, ffi::Result<ffi::AnyBuffer> y,
                           int64_t stride, int64_t pad_top, int64_t pad_bottom,
                           int64_t pad_left, int64_t pad_right, int64_t relu) {
  return Forward(x, w, &b, *y, stride, pad_top, pad_bottom, pad_left,
                 pad_right, relu != 0);
}

ffi::Error ConvBwdDataImpl(ffi::AnyBuffer dy, ffi::AnyBuffer w,
                           ffi::Result<ffi::AnyBuffer> dx, int64_t stride,
                           int64_t pad_top, int64_t pad_bottom,
                           int64_t pad_left, int64_t pad_right) {
  Geometry g;
  if (auto err = MakeGeometry(dx->dimensions(), dy.dimensions(),
                              w.dimensions(), dy.element_type(),
                              dx->element_type(), stride, pad_top, pad_bottom,
                              pad_left, pad_right, &g);
      err.failure())
    return err;
  if (auto err = SameDtype(dy, w); err.failure()) return err;
  return Guarded([&] {
    dnnl::engine& eng = Engine();
    const Plan& p = Cached<Plan>(g.Key("bwd_data"), [&] {
      auto hint = g.Forward(eng, g.operand);
      dnnl::convolution_backward_data::primitive_desc pd(
          eng, dnnl::algorithm::convolution_direct, g.Src(g.result),
          g.AnyWeights(g.operand),
          g.Dst(g.operand), {stride, stride}, {g.pt, g.pl}, {g.pb, g.pr},
          hint, UserScratchpad());
      return WithWeightReorder(pd, dnnl::convolution_backward_data(pd),
                               g.UserWeights(g.operand), pd.weights_desc(),
                               /*to_user=*/false);
    });
    dnnl::stream s(eng);
    memory conv_w = StagedWeights(
        p, memory(g.UserWeights(g.operand), eng, w.untyped_data()), s);
    Execute(p.conv, p.conv_scratchpad,
        s, {{DNNL_ARG_DIFF_DST,
             memory(g.Dst(g.operand), eng, dy.untyped_data())},
            {DNNL_ARG_WEIGHTS, conv_w},
            {DNNL_ARG_DIFF_SRC,
             memory(g.Src(g.result), eng, dx->untyped_data())}});
    s.wait();
  });
}

ffi::Error ConvBwdWeightsImpl(ffi::AnyBuffer x, ffi::AnyBuffer dy,
                              ffi::Result<ffi::AnyBuffer> dw, int64_t stride,
                              int64_t pad_top, int64_t pad_bottom,
                              int64_t pad_left, int64_t pad_right) {
  Geometry g;
  if (auto err = MakeGeometry(x.dimensions(), dy.dimensions(),
                              dw->dimensions(), x.element_type(),
                              dw->element_type(), stride, pad_top, pad_bottom,
                              pad_left, pad_right, &g);
      err.failure())
    return err;
  if (g.result != memory::data_type::f32)
    return ffi::Error::InvalidArgument("oneDNN conv: dw must be f32");
  if (auto err = SameDtype(x, dy); err.failure()) return err;
  const auto f32 = memory::data_type::f32;
  return Guarded([&] {
    dnnl::engine& eng = Engine();
    const Plan& p = Cached<Plan>(g.Key("bwd_wei"), [&] {
      auto hint = g.Forward(eng, g.operand);
      dnnl::convolution_backward_weights::primitive_desc pd(
          eng, dnnl::algorithm::convolution_direct, g.Src(g.operand),
          g.AnyWeights(f32), g.Dst(g.operand), {stride, stride}, {g.pt, g.pl},
          {g.pb, g.pr}, hint, UserScratchpad());
      return WithWeightReorder(pd, dnnl::convolution_backward_weights(pd),
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
    Execute(p.conv, p.conv_scratchpad,
        s, {{DNNL_ARG_SRC, memory(g.Src(g.operand), eng, x.untyped_data())},
            {DNNL_ARG_DIFF_DST,
             memory(g.Dst(g.operand), eng, dy.untyped_data())},
            {DNNL_ARG_DIFF_WEIGHTS, conv_dw}});
    if (p.weights_reordered) {
      Execute(p.weights, p.weights_scratchpad, s,
              {{DNNL_ARG_FROM, conv_dw}, {DNNL_ARG_TO, user_dw}});
    }
    s.wait();
  });
}

}  // namespace
}  // namespace inception_onednn

extern "C" int64_t InceptionOnednnAbiVersion() { return INCEPTION_ONEDNN_ABI; }
extern "C" const char* InceptionOnednnJaxlibVersion() {
  return INCEPTION_JAXLIB_VERSION;
}

// The newest instruction set oneDNN's kernels use on this CPU, e.g.
// "avx512_core_amx" (AMX tiles for bf16) or "avx512_core_bf16".
extern "C" const char* InceptionOnednnCpuIsa() {
  using isa = dnnl::cpu_isa;
  switch (dnnl::get_effective_cpu_isa()) {
    case isa::sse41: return "sse41";
    case isa::avx: return "avx";
    case isa::avx2: return "avx2";
    case isa::avx2_vnni: return "avx2_vnni";
    case isa::avx2_vnni_2: return "avx2_vnni_2";
    case isa::avx512_core: return "avx512_core";
    case isa::avx512_core_vnni: return "avx512_core_vnni";
    case isa::avx512_core_bf16: return "avx512_core_bf16";
    case isa::avx512_core_fp16: return "avx512_core_fp16";
    case isa::avx512_core_amx: return "avx512_core_amx";
    case isa::avx512_core_amx_fp16: return "avx512_core_amx_fp16";
    default: return "unknown";
  }
}

#define INCEPTION_CONV_BINDING \
  xla::ffi::Ffi::Bind()        \
      .Arg<xla::ffi::AnyBuffer>() \
      .Arg<xla::ffi::AnyBuffer>() \
      .Ret<xla::ffi::AnyBuffer>() INCEPTION_ONEDNN_WINDOW_ATTRS

XLA_FFI_DEFINE_HANDLER_SYMBOL(InceptionOnednnConvFwd,
                              inception_onednn::ConvFwdImpl,
                              INCEPTION_CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(InceptionOnednnConvFwdBias,
                              inception_onednn::ConvFwdBiasImpl,
                              xla::ffi::Ffi::Bind()
                                  .Arg<xla::ffi::AnyBuffer>()
                                  .Arg<xla::ffi::AnyBuffer>()
                                  .Arg<xla::ffi::AnyBuffer>()
                                  .Ret<xla::ffi::AnyBuffer>()
                                      INCEPTION_ONEDNN_WINDOW_ATTRS
                                  .Attr<int64_t>("relu"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(InceptionOnednnConvBwdData,
                              inception_onednn::ConvBwdDataImpl,
                              INCEPTION_CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(InceptionOnednnConvBwdWeights,
                              inception_onednn::ConvBwdWeightsImpl,
                              INCEPTION_CONV_BINDING);
