// oneDNN training-mode BatchNorm (+ ReLU) for XLA:CPU, as XLA FFI handlers
// (inception/kernels/onednn.py).
//
//   inception_onednn_batch_norm_fwd: (x, scale, shift) -> (y, mean, var, ws)
//   inception_onednn_batch_norm_bwd: (x, mean, var, dy, scale, ws)
//                                        -> (dx, dscale, dshift)
// x, y, dy and dx are NHWC, f32 or bf16 (one dtype per call); scale, shift,
// the batch mean and (biased) variance and their gradients are f32.
// Attributes: epsilon (f32), relu (int64: 1 fuses a ReLU after the affine
// map). The workspace is oneDNN's record of where that ReLU passed, so the
// backward pass masks dy without the output; its size comes from
// InceptionOnednnBatchNormWorkspaceBytes, which Python calls while tracing.
//
// Why: XLA:CPU's BatchNorm is several passes of f32 elementwise loops and
// reductions, and with bf16 activations it converts every element through
// f32 and is slower still; oneDNN's kernel reads bf16 as it is.
//
// It runs on one thread. Its passes meet at several barriers, and when two
// processes share the cores (a sweep's --parallel 2 on 2 cores) every
// barrier waits for a descheduled thread: with a team of two, the demo sweep
// ran 2.3x slower (benchmarks/README.md). Memory-bound, it loses nothing
// measurable on one thread in a lone process, and its sums no longer depend
// on the core count.
#include <cstdint>
#include <initializer_list>
#include <iomanip>
#include <sstream>
#include <string>
#include <vector>

#include "csrc/onednn_common.h"

namespace inception_onednn {
namespace {

using flags = dnnl::normalization_flags;

// One thread: see the file comment.
constexpr int kThreads = 1;

struct Norm {
  int64_t n, h, w, c;
  memory::data_type dt;  // x, y, dy, dx
  bool relu;
  float epsilon;

  std::string Key(const char* op) const {
    std::ostringstream s;
    s << op << ':' << n << ',' << h << ',' << w << ',' << c << ',' << int(dt)
      << ',' << relu << ',' << std::setprecision(9) << epsilon;
    return s.str();
  }
  memory::desc Data() const {
    return memory::desc({n, c, h, w}, dt, tag::nhwc);
  }
  memory::desc Channels() const {
    return memory::desc({c}, memory::data_type::f32, tag::a);
  }
  flags Flags() const {
    flags f = flags::use_scale | flags::use_shift;
    return relu ? f | flags::fuse_norm_relu : f;
  }
  dnnl::batch_normalization_forward::primitive_desc Forward() const {
    return dnnl::batch_normalization_forward::primitive_desc(
        Engine(), dnnl::prop_kind::forward_training, Data(), Data(), epsilon,
        Flags(), UserScratchpad());
  }
};

struct NormPlan {
  dnnl::primitive norm;
  memory::desc workspace;
  memory::desc scratchpad;
  std::string impl;  // oneDNN's name for the kernel it picked
};

const NormPlan& ForwardPlan(const Norm& p) {
  return Cached<NormPlan>(p.Key("bnorm_fwd"), [&] {
    auto pd = p.Forward();
    return NormPlan{dnnl::batch_normalization_forward(pd),
                    pd.workspace_desc(), pd.scratchpad_desc(),
                    std::string(pd.impl_info_str())};
  });
}

const NormPlan& BackwardPlan(const Norm& p) {
  return Cached<NormPlan>(p.Key("bnorm_bwd"), [&] {
    dnnl::batch_normalization_backward::primitive_desc pd(
        Engine(), dnnl::prop_kind::backward, p.Data(), p.Data(), p.Data(),
        p.epsilon, p.Flags(), p.Forward(), UserScratchpad());
    return NormPlan{dnnl::batch_normalization_backward(pd),
                    pd.workspace_desc(), pd.scratchpad_desc(),
                    std::string(pd.impl_info_str())};
  });
}

void* Data(const ffi::AnyBuffer& b) { return b.untyped_data(); }

// ``b`` must have the dimensions ``want`` and the dtype ``dt``.
ffi::Error CheckBuffer(const ffi::AnyBuffer& b,
                       std::initializer_list<int64_t> want, ffi::DataType dt,
                       const char* what) {
  auto d = b.dimensions();
  bool same = d.size() == want.size() && b.element_type() == dt;
  for (size_t i = 0; same && i < want.size(); ++i)
    same = d[i] == want.begin()[i];
  if (!same)
    return ffi::Error::InvalidArgument(
        std::string("oneDNN batch norm: ") + what +
        " does not match x's shape or the expected dtype");
  return ffi::Error::Success();
}

// Every buffer of a call against x: the NHWC ones equal x's shape and dtype,
// the per-channel ones are [C] float32.
ffi::Error CheckCall(const Norm& p, ffi::DataType x_dtype,
                     std::initializer_list<const ffi::AnyBuffer*> data,
                     std::initializer_list<const ffi::AnyBuffer*> channels) {
  for (const ffi::AnyBuffer* b : data) {
    if (auto err = CheckBuffer(*b, {p.n, p.h, p.w, p.c}, x_dtype, "an array");
        err.failure())
      return err;
  }
  for (const ffi::AnyBuffer* b : channels) {
    if (auto err = CheckBuffer(*b, {p.c}, ffi::DataType::F32,
                               "a per-channel array");
        err.failure())
      return err;
  }
  return ffi::Error::Success();
}

void CheckWorkspace(const NormPlan& plan, size_t bytes) {
  if (plan.workspace.get_size() > bytes)
    throw dnnl::error(dnnl_invalid_arguments, "workspace too small");
}

// The call's shape, dtype and attributes from x (NHWC, f32 or bf16).
ffi::Error MakeNorm(const ffi::AnyBuffer& x, int64_t relu, float epsilon,
                    Norm* p) {
  auto d = x.dimensions();
  if (d.size() != 4 || d[0] < 1 || d[1] < 1 || d[2] < 1 || d[3] < 1)
    return ffi::Error::InvalidArgument(
        "oneDNN batch norm: x must be a non-empty NHWC array");
  *p = Norm{d[0], d[1], d[2], d[3], memory::data_type::f32, relu != 0,
            epsilon};
  return ToDnnlType(x.element_type(), &p->dt, "batch norm's x");
}

// The fused ReLU maps NaN to 0, where the reference (BatchNorm, then
// jax.nn.relu) keeps it: a channel whose statistics (a NaN mean or variance,
// an infinite mean) or affine parameters are not finite is all NaN there,
// so it is set to NaN here too.
void PoisonBadChannels(const ffi::AnyBuffer& scale, const ffi::AnyBuffer& shift,
                       const ffi::AnyBuffer& mean, const ffi::AnyBuffer& var,
                       ffi::AnyBuffer& y, int64_t channels) {
  std::vector<char> bad(channels, 0);
  bool any = false;
  for (int64_t c = 0; c < channels; ++c) {
    if (NonFinite(mean.untyped_data(), false, c) ||
        IsNaN(var.untyped_data(), false, c) ||
        NonFinite(scale.untyped_data(), false, c) ||
        NonFinite(shift.untyped_data(), false, c))
      bad[c] = any = true;
  }
  if (any) PoisonChannels(y, bad.data(), channels);
}

ffi::Error BatchNormFwdImpl(ffi::AnyBuffer x, ffi::AnyBuffer scale,
                            ffi::AnyBuffer shift, ffi::Result<ffi::AnyBuffer> y,
                            ffi::Result<ffi::AnyBuffer> mean,
                            ffi::Result<ffi::AnyBuffer> var,
                            ffi::Result<ffi::AnyBuffer> workspace,
                            float epsilon, int64_t relu) {
  Norm p;
  if (auto err = MakeNorm(x, relu, epsilon, &p); err.failure()) return err;
  if (auto err = CheckCall(p, x.element_type(), {&x, &*y},
                           {&scale, &shift, &*mean, &*var});
      err.failure())
    return err;
  return Guarded([&] {
    const NormPlan& plan = ForwardPlan(p);
    CheckWorkspace(plan, workspace->size_bytes());
    dnnl::engine& eng = Engine();
    dnnl::stream s(eng);
    std::unordered_map<int, memory> args{
        {DNNL_ARG_SRC, memory(p.Data(), eng, Data(x))},
        {DNNL_ARG_SCALE, memory(p.Channels(), eng, Data(scale))},
        {DNNL_ARG_SHIFT, memory(p.Channels(), eng, Data(shift))},
        {DNNL_ARG_DST, memory(p.Data(), eng, y->untyped_data())},
        {DNNL_ARG_MEAN, memory(p.Channels(), eng, mean->untyped_data())},
        {DNNL_ARG_VARIANCE, memory(p.Channels(), eng, var->untyped_data())}};
    if (plan.workspace.get_size() > 0) {  // the ReLU's mask
      args[DNNL_ARG_WORKSPACE] =
          memory(plan.workspace, eng, workspace->untyped_data());
    }
    Execute(plan.norm, plan.scratchpad, s, args);
    s.wait();
    if (p.relu) PoisonBadChannels(scale, shift, *mean, *var, *y, p.c);
  }, kThreads);
}

ffi::Error BatchNormBwdImpl(ffi::AnyBuffer x, ffi::AnyBuffer mean,
                            ffi::AnyBuffer var, ffi::AnyBuffer dy,
                            ffi::AnyBuffer scale, ffi::AnyBuffer workspace,
                            ffi::Result<ffi::AnyBuffer> dx,
                            ffi::Result<ffi::AnyBuffer> dscale,
                            ffi::Result<ffi::AnyBuffer> dshift, float epsilon,
                            int64_t relu) {
  Norm p;
  if (auto err = MakeNorm(x, relu, epsilon, &p); err.failure()) return err;
  if (auto err = CheckCall(p, x.element_type(), {&x, &dy, &*dx},
                           {&mean, &var, &scale, &*dscale, &*dshift});
      err.failure())
    return err;
  return Guarded([&] {
    const NormPlan& fwd = ForwardPlan(p);
    CheckWorkspace(fwd, workspace.size_bytes());
    const NormPlan& plan = BackwardPlan(p);
    dnnl::engine& eng = Engine();
    dnnl::stream s(eng);
    std::unordered_map<int, memory> args{
        {DNNL_ARG_SRC, memory(p.Data(), eng, Data(x))},
        {DNNL_ARG_MEAN, memory(p.Channels(), eng, Data(mean))},
        {DNNL_ARG_VARIANCE, memory(p.Channels(), eng, Data(var))},
        {DNNL_ARG_DIFF_DST, memory(p.Data(), eng, Data(dy))},
        {DNNL_ARG_SCALE, memory(p.Channels(), eng, Data(scale))},
        {DNNL_ARG_DIFF_SRC, memory(p.Data(), eng, dx->untyped_data())},
        {DNNL_ARG_DIFF_SCALE,
         memory(p.Channels(), eng, dscale->untyped_data())},
        {DNNL_ARG_DIFF_SHIFT,
         memory(p.Channels(), eng, dshift->untyped_data())}};
    if (fwd.workspace.get_size() > 0) {
      args[DNNL_ARG_WORKSPACE] = memory(fwd.workspace, eng, Data(workspace));
    }
    Execute(plan.norm, plan.scratchpad, s, args);
    s.wait();
  }, kThreads);
}

}  // namespace
}  // namespace inception_onednn

// What Python asks while tracing: the forward workspace's size in bytes (0
// without the ReLU), or -1 if oneDNN refuses the shape; ``*jit`` is 1 when
// both passes run oneDNN's JIT-compiled kernels. oneDNN falls back to plain
// C++ loops for channel counts its vector kernels do not take (on AVX-512:
// not a multiple of 16 in bf16, of 8 in f32), 5x to 40x slower than XLA's
// BatchNorm, so Python keeps XLA's there. bf16: 1 for bfloat16 activations.
extern "C" int64_t InceptionOnednnBatchNormWorkspaceBytes(
    int64_t n, int64_t h, int64_t w, int64_t c, int64_t bf16, int64_t relu,
    float epsilon, int64_t* jit) {
  inception_onednn::Norm p{
      n, h, w, c,
      bf16 ? dnnl::memory::data_type::bf16 : dnnl::memory::data_type::f32,
      relu != 0, epsilon};
  int64_t bytes = -1;
  auto status = inception_onednn::Guarded([&] {
    const auto& fwd = inception_onednn::ForwardPlan(p);
    const auto& bwd = inception_onednn::BackwardPlan(p);
    *jit = fwd.impl.find("jit") != std::string::npos &&
           bwd.impl.find("jit") != std::string::npos;
    bytes = fwd.workspace.get_size();
  }, inception_onednn::kThreads);
  return status.failure() ? -1 : bytes;
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(InceptionOnednnBatchNormFwd,
                              inception_onednn::BatchNormFwdImpl,
                              xla::ffi::Ffi::Bind()
                                  .Arg<xla::ffi::AnyBuffer>()
                                  .Arg<xla::ffi::AnyBuffer>()
                                  .Arg<xla::ffi::AnyBuffer>()
                                  .Ret<xla::ffi::AnyBuffer>()
                                  .Ret<xla::ffi::AnyBuffer>()
                                  .Ret<xla::ffi::AnyBuffer>()
                                  .Ret<xla::ffi::AnyBuffer>()
                                  .Attr<float>("epsilon")
                                  .Attr<int64_t>("relu"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(InceptionOnednnBatchNormBwd,
                              inception_onednn::BatchNormBwdImpl,
                              xla::ffi::Ffi::Bind()
                                  .Arg<xla::ffi::AnyBuffer>()
                                  .Arg<xla::ffi::AnyBuffer>()
                                  .Arg<xla::ffi::AnyBuffer>()
                                  .Arg<xla::ffi::AnyBuffer>()
                                  .Arg<xla::ffi::AnyBuffer>()
                                  .Arg<xla::ffi::AnyBuffer>()
                                  .Ret<xla::ffi::AnyBuffer>()
                                  .Ret<xla::ffi::AnyBuffer>()
                                  .Ret<xla::ffi::AnyBuffer>()
                                  .Attr<float>("epsilon")
                                  .Attr<int64_t>("relu"));
