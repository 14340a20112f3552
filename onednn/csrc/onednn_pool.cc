// oneDNN max and average pooling for XLA:CPU, as XLA FFI handlers
// (inception/kernels/onednn.py).
//
//   inception_onednn_max_pool_fwd: x -> (y, workspace)
//   inception_onednn_max_pool_bwd: (dy, workspace) -> dx
//   inception_onednn_avg_pool_fwd: x -> y   (padding not counted: each
//   inception_onednn_avg_pool_bwd: dy -> dx  window averages what it covers)
// NHWC float32 or bfloat16 (dy and dx in x's dtype), square window;
// attributes: window, stride, pad_top, pad_bottom, pad_left, pad_right
// (int64). Padded positions never win, as
// with XLA's -inf padding. The workspace is oneDNN's record of each window's
// argmax, so the backward pass routes dy without comparing again; its size
// comes from InceptionOnednnMaxPoolWorkspaceBytes, which Python calls while
// tracing.
#include <cstdint>
#include <sstream>
#include <string>

#include "csrc/onednn_common.h"

namespace inception_onednn {
namespace {

struct Pool {
  int64_t n, h, w, c, ho, wo, window, stride, pt, pb, pl, pr;
  memory::data_type dt;
  dnnl::algorithm alg = dnnl::algorithm::pooling_max;

  std::string Key(const char* op) const {
    std::ostringstream s;
    s << op << ':' << int(alg) << ':' << n << ',' << h << ',' << w << ',' << c << ',' << ho << ','
      << wo << ',' << window << ',' << stride << ',' << pt << ',' << pb << ','
      << pl << ',' << pr << ',' << int(dt);
    return s.str();
  }
  memory::desc Src() const {
    return memory::desc({n, c, h, w}, dt, tag::nhwc);
  }
  memory::desc Dst() const {
    return memory::desc({n, c, ho, wo}, dt, tag::nhwc);
  }
  dnnl::pooling_forward::primitive_desc Forward() const {
    return dnnl::pooling_forward::primitive_desc(
        Engine(), dnnl::prop_kind::forward_training,
        alg, Src(), Dst(), {stride, stride},
        {window, window}, {0, 0}, {pt, pl}, {pb, pr}, UserScratchpad());
  }
};

struct PoolPlan {
  dnnl::primitive pool;
  memory::desc workspace;
  memory::desc scratchpad;
};

// The cached forward and backward primitives of a pool (its key names the
// algorithm).
const PoolPlan& ForwardPlan(const Pool& p) {
  return Cached<PoolPlan>(p.Key("pool_fwd"), [&] {
    auto pd = p.Forward();
    return PoolPlan{dnnl::pooling_forward(pd), pd.workspace_desc(),
                    pd.scratchpad_desc()};
  });
}

const PoolPlan& BackwardPlan(const Pool& p) {
  return Cached<PoolPlan>(p.Key("pool_bwd"), [&] {
    dnnl::pooling_backward::primitive_desc pd(
        Engine(), p.alg, p.Src(), p.Dst(), {p.stride, p.stride},
        {p.window, p.window}, {0, 0}, {p.pt, p.pl}, {p.pb, p.pr}, p.Forward(),
        UserScratchpad());
    return PoolPlan{dnnl::pooling_backward(pd), pd.workspace_desc(),
                    pd.scratchpad_desc()};
  });
}

// The call's geometry from x's (or dx's) and y's (or dy's) dimensions:
// NHWC, the same batch and channels, and a window that fits.
ffi::Error MakePool(ffi::AnyBuffer::Dimensions in,
                    ffi::AnyBuffer::Dimensions out, int64_t window,
                    int64_t stride, int64_t pt, int64_t pb, int64_t pl,
                    int64_t pr, Pool* p) {
  if (in.size() != 4 || out.size() != 4)
    return ffi::Error::InvalidArgument("oneDNN pool: arrays must be NHWC");
  if (in[0] != out[0] || in[3] != out[3] || in[0] < 1 || in[3] < 1)
    return ffi::Error::InvalidArgument(
        "oneDNN pool: input and output differ in batch or channels");
  if (auto err = CheckWindow("pool", in[1], window, stride, pt, pb,
                             out[1]);
      err.failure())
    return err;
  if (auto err = CheckWindow("pool", in[2], window, stride, pl, pr,
                             out[2]);
      err.failure())
    return err;
  *p = Pool{in[0], in[1], in[2], in[3], out[1], out[2], window, stride,
            pt, pb, pl, pr, memory::data_type::f32};
  return ffi::Error::Success();
}

// The workspace buffer must hold what oneDNN records.
void CheckWorkspace(const PoolPlan& plan, size_t bytes) {
  if (plan.workspace.get_size() > bytes)
    throw dnnl::error(dnnl_invalid_arguments, "workspace too small");
}

// oneDNN's maximum skips NaNs where XLA's reduce_window propagates them:
// every output whose window holds a NaN is set to NaN. One vectorised pass
// over x; the window loops run only when it found a NaN.
void PropagateNaN(const Pool& p, const ffi::AnyBuffer& x, ffi::AnyBuffer& y) {
  if (!AnyNonFinite(x, /*nan_only=*/true)) return;
  const bool bf16 = IsBf16(x);
  for (int64_t n = 0; n < p.n; ++n)
    for (int64_t oh = 0; oh < p.ho; ++oh)
      for (int64_t ow = 0; ow < p.wo; ++ow)
        for (int64_t ch = 0; ch < p.c; ++ch) {
          bool nan = false;
          for (int64_t i = 0; i < p.window && !nan; ++i) {
            const int64_t ih = oh * p.stride - p.pt + i;
            if (ih < 0 || ih >= p.h) continue;
            for (int64_t j = 0; j < p.window && !nan; ++j) {
              const int64_t iw = ow * p.stride - p.pl + j;
              if (iw < 0 || iw >= p.w) continue;
              nan = IsNaN(x.untyped_data(), bf16,
                          ((n * p.h + ih) * p.w + iw) * p.c + ch);
            }
          }
          if (nan)
            SetNaN(y.untyped_data(), bf16,
                   ((n * p.ho + oh) * p.wo + ow) * p.c + ch);
        }
}

ffi::Error MaxPoolFwdImpl(ffi::AnyBuffer x, ffi::Result<ffi::AnyBuffer> y,
                          ffi::Result<ffi::AnyBuffer> workspace,
                          int64_t window, int64_t stride, int64_t pad_top,
                          int64_t pad_bottom, int64_t pad_left,
                          int64_t pad_right) {
  Pool p;
  if (auto err = MakePool(x.dimensions(), y->dimensions(), window, stride,
                          pad_top, pad_bottom, pad_left, pad_right, &p);
      err.failure())
    return err;
  if (auto err = ToDnnlType(x.element_type(), &p.dt, "max pool's x");
      err.failure())
    return err;
  if (y->element_type() != x.element_type())
    return ffi::Error::InvalidArgument("oneDNN max pool: y must be x's dtype");
  return Guarded([&] {
    const PoolPlan& plan = ForwardPlan(p);
    CheckWorkspace(plan, workspace->size_bytes());
    dnnl::engine& eng = Engine();
    dnnl::stream s(eng);
    Execute(plan.pool, plan.scratchpad,
        s, {{DNNL_ARG_SRC, memory(p.Src(), eng, x.untyped_data())},
            {DNNL_ARG_DST, memory(p.Dst(), eng, y->untyped_data())},
            {DNNL_ARG_WORKSPACE,
             memory(plan.workspace, eng, workspace->untyped_data())}});
    s.wait();
    PropagateNaN(p, x, *y);
  });
}

ffi::Error MaxPoolBwdImpl(ffi::AnyBuffer dy, ffi::AnyBuffer workspace,
                          ffi::Result<ffi::AnyBuffer> dx, int64_t window,
                          int64_t stride, int64_t pad_top, int64_t pad_bottom,
                          int64_t pad_left, int64_t pad_right) {
  Pool p;
  if (auto err = MakePool(dx->dimensions(), dy.dimensions(), window, stride,
                          pad_top, pad_bottom, pad_left, pad_right, &p);
      err.failure())
    return err;
  if (auto err = ToDnnlType(dy.element_type(), &p.dt, "max pool's dy");
      err.failure())
    return err;
  if (dx->element_type() != dy.element_type())
    return ffi::Error::InvalidArgument(
        "oneDNN max pool: dx must be dy's dtype");
  return Guarded([&] {
    const PoolPlan& fwd = ForwardPlan(p);
    CheckWorkspace(fwd, workspace.size_bytes());
    const PoolPlan& plan = BackwardPlan(p);
    dnnl::engine& eng = Engine();
    dnnl::stream s(eng);
    Execute(plan.pool, plan.scratchpad,
        s, {{DNNL_ARG_DIFF_DST, memory(p.Dst(), eng, dy.untyped_data())},
            {DNNL_ARG_WORKSPACE,
             memory(fwd.workspace, eng, workspace.untyped_data())},
            {DNNL_ARG_DIFF_SRC, memory(p.Src(), eng, dx->untyped_data())}});
    s.wait();
  });
}

// The geometry and dtype of an average pool from x's (or dx's) and y's (or
// dy's) buffers, which must share one dtype.
ffi::Error MakeAvgPool(const ffi::AnyBuffer& in, const ffi::AnyBuffer& out,
                       int64_t window, int64_t stride, int64_t pt, int64_t pb,
                       int64_t pl, int64_t pr, Pool* p) {
  if (auto err = MakePool(in.dimensions(), out.dimensions(), window, stride,
                          pt, pb, pl, pr, p);
      err.failure())
    return err;
  if (auto err = ToDnnlType(in.element_type(), &p->dt, "avg pool's arrays");
      err.failure())
    return err;
  if (in.element_type() != out.element_type())
    return ffi::Error::InvalidArgument(
        "oneDNN avg pool: input and output differ in dtype");
  p->alg = dnnl::algorithm::pooling_avg_exclude_padding;
  return ffi::Error::Success();
}

ffi::Error AvgPoolFwdImpl(ffi::AnyBuffer x, ffi::Result<ffi::AnyBuffer> y,
                          int64_t window, int64_t stride, int64_t pad_top,
                          int64_t pad_bottom, int64_t pad_left,
                          int64_t pad_right) {
  Pool p;
  if (auto err = MakeAvgPool(x, *y, window, stride, pad_top, pad_bottom,
                             pad_left, pad_right, &p);
      err.failure())
    return err;
  return Guarded([&] {
    const PoolPlan& plan = ForwardPlan(p);
    dnnl::engine& eng = Engine();
    dnnl::stream s(eng);
    Execute(plan.pool, plan.scratchpad,
        s, {{DNNL_ARG_SRC, memory(p.Src(), eng, x.untyped_data())},
            {DNNL_ARG_DST, memory(p.Dst(), eng, y->untyped_data())}});
    s.wait();
  });
}

ffi::Error AvgPoolBwdImpl(ffi::AnyBuffer dy, ffi::Result<ffi::AnyBuffer> dx,
                          int64_t window, int64_t stride, int64_t pad_top,
                          int64_t pad_bottom, int64_t pad_left,
                          int64_t pad_right) {
  Pool p;
  if (auto err = MakeAvgPool(*dx, dy, window, stride, pad_top, pad_bottom,
                             pad_left, pad_right, &p);
      err.failure())
    return err;
  return Guarded([&] {
    const PoolPlan& plan = BackwardPlan(p);
    dnnl::engine& eng = Engine();
    dnnl::stream s(eng);
    Execute(plan.pool, plan.scratchpad,
        s, {{DNNL_ARG_DIFF_DST, memory(p.Dst(), eng, dy.untyped_data())},
            {DNNL_ARG_DIFF_SRC, memory(p.Src(), eng, dx->untyped_data())}});
    s.wait();
  });
}

}  // namespace
}  // namespace inception_onednn

// The forward workspace's size in bytes, or -1 if oneDNN refuses the shape.
// bf16: 1 for bfloat16 activations, 0 for float32.
extern "C" int64_t InceptionOnednnMaxPoolWorkspaceBytes(
    int64_t n, int64_t h, int64_t w, int64_t c, int64_t ho, int64_t wo,
    int64_t window, int64_t stride, int64_t pad_top, int64_t pad_bottom,
    int64_t pad_left, int64_t pad_right, int64_t bf16) {
  inception_onednn::Pool p{
      n, h, w, c, ho, wo, window, stride, pad_top, pad_bottom, pad_left,
      pad_right,
      bf16 ? dnnl::memory::data_type::bf16 : dnnl::memory::data_type::f32};
  int64_t bytes = -1;
  auto status = inception_onednn::Guarded(
      [&] { bytes = inception_onednn::ForwardPlan(p).workspace.get_size(); });
  return status.failure() ? -1 : bytes;
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(InceptionOnednnMaxPoolFwd,
                              inception_onednn::MaxPoolFwdImpl,
                              xla::ffi::Ffi::Bind()
                                  .Arg<xla::ffi::AnyBuffer>()
                                  .Ret<xla::ffi::AnyBuffer>()
                                  .Ret<xla::ffi::AnyBuffer>()
                                  .Attr<int64_t>("window")
                                      INCEPTION_ONEDNN_WINDOW_ATTRS);

XLA_FFI_DEFINE_HANDLER_SYMBOL(InceptionOnednnMaxPoolBwd,
                              inception_onednn::MaxPoolBwdImpl,
                              xla::ffi::Ffi::Bind()
                                  .Arg<xla::ffi::AnyBuffer>()
                                  .Arg<xla::ffi::AnyBuffer>()
                                  .Ret<xla::ffi::AnyBuffer>()
                                  .Attr<int64_t>("window")
                                      INCEPTION_ONEDNN_WINDOW_ATTRS);

#define INCEPTION_AVG_POOL_BINDING \
  xla::ffi::Ffi::Bind()            \
      .Arg<xla::ffi::AnyBuffer>()  \
      .Ret<xla::ffi::AnyBuffer>()  \
      .Attr<int64_t>("window") INCEPTION_ONEDNN_WINDOW_ATTRS

XLA_FFI_DEFINE_HANDLER_SYMBOL(InceptionOnednnAvgPoolFwd,
                              inception_onednn::AvgPoolFwdImpl,
                              INCEPTION_AVG_POOL_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(InceptionOnednnAvgPoolBwd,
                              inception_onednn::AvgPoolBwdImpl,
                              INCEPTION_AVG_POOL_BINDING);
