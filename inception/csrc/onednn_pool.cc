// oneDNN max pooling for XLA:CPU, as XLA FFI handlers (inception/onednn.py).
//
//   inception_onednn_max_pool_fwd: x -> (y, workspace)
//   inception_onednn_max_pool_bwd: (dy, workspace) -> dx
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

#include "inception/csrc/onednn_common.h"

namespace inception_onednn {
namespace {

struct Pool {
  int64_t n, h, w, c, ho, wo, window, stride, pt, pb, pl, pr;
  memory::data_type dt;

  std::string Key(const char* op) const {
    std::ostringstream s;
    s << op << ':' << n << ',' << h << ',' << w << ',' << c << ',' << ho << ','
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
        dnnl::algorithm::pooling_max, Src(), Dst(), {stride, stride},
        {window, window}, {0, 0}, {pt, pl}, {pb, pr});
  }
};

struct PoolPlan {
  dnnl::primitive pool;
  memory::desc workspace;
};

const PoolPlan& ForwardPlan(const Pool& p) {
  return Cached<PoolPlan>(p.Key("max_pool_fwd"), [&] {
    auto pd = p.Forward();
    return PoolPlan{dnnl::pooling_forward(pd), pd.workspace_desc()};
  });
}

ffi::Error MaxPoolFwdImpl(ffi::AnyBuffer x, ffi::Result<ffi::AnyBuffer> y,
                          ffi::Result<ffi::AnyBuffer> workspace,
                          int64_t window, int64_t stride, int64_t pad_top,
                          int64_t pad_bottom, int64_t pad_left,
                          int64_t pad_right) {
  auto xd = x.dimensions(), yd = y->dimensions();
  Pool p{xd[0], xd[1], xd[2], xd[3], yd[1], yd[2], window, stride,
         pad_top, pad_bottom, pad_left, pad_right, memory::data_type::f32};
  if (auto err = ToDnnlType(x.element_type(), &p.dt, "max pool's x");
      err.failure())
    return err;
  return Guarded([&] {
    const PoolPlan& plan = ForwardPlan(p);
    if (plan.workspace.get_size() > workspace->size_bytes())
      throw dnnl::error(dnnl_invalid_arguments, "workspace too small");
    dnnl::engine& eng = Engine();
    dnnl::stream s(eng);
    plan.pool.execute(
        s, {{DNNL_ARG_SRC, memory(p.Src(), eng, x.untyped_data())},
            {DNNL_ARG_DST, memory(p.Dst(), eng, y->untyped_data())},
            {DNNL_ARG_WORKSPACE,
             memory(plan.workspace, eng, workspace->untyped_data())}});
    s.wait();
  });
}

ffi::Error MaxPoolBwdImpl(ffi::AnyBuffer dy, ffi::AnyBuffer workspace,
                          ffi::Result<ffi::AnyBuffer> dx, int64_t window,
                          int64_t stride, int64_t pad_top, int64_t pad_bottom,
                          int64_t pad_left, int64_t pad_right) {
  auto dyd = dy.dimensions(), xd = dx->dimensions();
  Pool p{xd[0], xd[1], xd[2], xd[3], dyd[1], dyd[2], window, stride,
         pad_top, pad_bottom, pad_left, pad_right, memory::data_type::f32};
  if (auto err = ToDnnlType(dy.element_type(), &p.dt, "max pool's dy");
      err.failure())
    return err;
  return Guarded([&] {
    const PoolPlan& fwd = ForwardPlan(p);
    const PoolPlan& plan = Cached<PoolPlan>(p.Key("max_pool_bwd"), [&] {
      dnnl::pooling_backward::primitive_desc pd(
          Engine(), dnnl::algorithm::pooling_max, p.Src(), p.Dst(),
          {stride, stride}, {window, window}, {0, 0}, {pad_top, pad_left},
          {pad_bottom, pad_right}, p.Forward());
      return PoolPlan{dnnl::pooling_backward(pd), pd.workspace_desc()};
    });
    dnnl::engine& eng = Engine();
    dnnl::stream s(eng);
    plan.pool.execute(
        s, {{DNNL_ARG_DIFF_DST, memory(p.Dst(), eng, dy.untyped_data())},
            {DNNL_ARG_WORKSPACE,
             memory(fwd.workspace, eng, workspace.untyped_data())},
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
