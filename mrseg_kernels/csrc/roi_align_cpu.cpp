// RoIAlign on the CPU, forward and backward, for NCHW (contiguous) and NHWC (channels_last) feature maps.
//
// The bilinear sampling of a RoI is separable: each sample point (y, x) reads rows y.lo/y.hi and columns
// x.lo/x.hi with weights y.w * x.w. A plan computes, once per RoI, the row and column taps of every sample
// coordinate, and every channel reuses it.
//
// Memory order decides the loops. NCHW: channel-outer, so one channel plane stays in cache while all RoIs read
// it (RoI-outer would fetch a fresh plane region from memory for every (RoI, channel)). NHWC: the channel loop is
// innermost and contiguous, so it vectorises. Backward parallelises over channels only, so no two threads ever
// add into the same grad_input element. Half types accumulate in float.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "roi_align.h"
#include "roi_align_geometry.h"

namespace mrseg {
namespace {

struct Shape {
  int64_t n, c, h, w, ph, pw;
  int64_t bins() const { return ph * pw; }
  int64_t plane() const { return h * w; }
};

// Row and column taps of every RoI. For RoI k: ys[y_begin[k] + ph * grid_h + iy] (lo/hi are row offsets
// y * W) and xs[x_begin[k] + pw * grid_w + ix] (lo/hi are column indices).
template <typename acc_t>
struct Plan {
  std::vector<int64_t> batch, y_begin, x_begin;
  std::vector<RoiGeometry<acc_t>> geom;
  std::vector<Interp1D<acc_t>> ys, xs;

  Plan(const acc_t* rois, int64_t K, const Shape& s, acc_t scale, int sampling_ratio, bool aligned)
      : batch(K), y_begin(K + 1), x_begin(K + 1), geom(K) {
    for (int64_t k = 0; k < K; ++k) {
      const acc_t* roi = rois + k * 5;
      batch[k] = static_cast<int64_t>(roi[0]);
      TORCH_CHECK(roi[0] >= acc_t(0) && batch[k] < s.n, "mrseg::roi_align: rois[", k, ", 0] = ", roi[0],
                  " is not a batch index of the input, which holds ", s.n,
                  " image(s); rois are [K, 5] rows of (batch_index, x1, y1, x2, y2) with 0 <= batch_index < N");
      geom[k] = roi_geometry<acc_t>(roi + 1, scale, s.ph, s.pw, sampling_ratio, aligned);
      y_begin[k + 1] = y_begin[k] + s.ph * geom[k].grid_h;
      x_begin[k + 1] = x_begin[k] + s.pw * geom[k].grid_w;
    }
    ys.resize(y_begin[K]);
    xs.resize(x_begin[K]);
    at::parallel_for(0, K, 64, [&](int64_t begin, int64_t end) {
      for (int64_t k = begin; k < end; ++k) {
        const RoiGeometry<acc_t>& g = geom[k];
        Interp1D<acc_t>* y = ys.data() + y_begin[k];
        for (int ph = 0; ph < s.ph; ++ph)
          for (int iy = 0; iy < g.grid_h; ++iy, ++y) {
            *y = interp_1d<acc_t>(sample_coord<acc_t>(g.start_h, g.bin_h, ph, iy, g.grid_h), s.h);
            y->lo *= s.w;
            y->hi *= s.w;
          }
        Interp1D<acc_t>* x = xs.data() + x_begin[k];
        for (int pw = 0; pw < s.pw; ++pw)
          for (int ix = 0; ix < g.grid_w; ++ix, ++x)
            *x = interp_1d<acc_t>(sample_coord<acc_t>(g.start_w, g.bin_w, pw, ix, g.grid_w), s.w);
      }
    });
  }
};

// Forward of one (RoI, channel) plane pair: out[ph * PW + pw].
template <typename scalar_t, typename acc_t>
inline void pool_plane(const scalar_t* plane, const Plan<acc_t>& plan, int64_t k, const Shape& s, scalar_t* out) {
  const RoiGeometry<acc_t>& g = plan.geom[k];
  const Interp1D<acc_t>* ys = plan.ys.data() + plan.y_begin[k];
  const Interp1D<acc_t>* xs = plan.xs.data() + plan.x_begin[k];
  for (int64_t ph = 0; ph < s.ph; ++ph) {
    for (int64_t pw = 0; pw < s.pw; ++pw) {
      acc_t sum = 0;
      for (int iy = 0; iy < g.grid_h; ++iy) {
        const Interp1D<acc_t>& y = ys[ph * g.grid_h + iy];
        const scalar_t* row_lo = plane + y.lo;
        const scalar_t* row_hi = plane + y.hi;
        for (int ix = 0; ix < g.grid_w; ++ix) {
          const Interp1D<acc_t>& x = xs[pw * g.grid_w + ix];
          sum += (y.w_lo * x.w_lo) * static_cast<acc_t>(row_lo[x.lo]) +
                 (y.w_lo * x.w_hi) * static_cast<acc_t>(row_lo[x.hi]) +
                 (y.w_hi * x.w_lo) * static_cast<acc_t>(row_hi[x.lo]) +
                 (y.w_hi * x.w_hi) * static_cast<acc_t>(row_hi[x.hi]);
        }
      }
      out[ph * s.pw + pw] = static_cast<scalar_t>(sum / g.count);
    }
  }
}

template <typename scalar_t, typename acc_t>
void forward_nchw(const scalar_t* in, const Plan<acc_t>& plan, int64_t K, const Shape& s, scalar_t* out) {
  // (channel, RoI) pairs in channel-major order: a thread's consecutive work items share a channel plane.
  at::parallel_for(0, s.c * K, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t c = i / K, k = i % K;
      pool_plane(in + (plan.batch[k] * s.c + c) * s.plane(), plan, k, s, out + (k * s.c + c) * s.bins());
    }
  });
}

template <typename scalar_t, typename acc_t>
void forward_nhwc(const scalar_t* in, const Plan<acc_t>& plan, int64_t K, const Shape& s, scalar_t* out) {
  const int64_t C = s.c;
  at::parallel_for(0, K * s.bins(), 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(C);
    acc_t* a = acc.data();
    for (int64_t i = begin; i < end; ++i) {
      const int64_t k = i / s.bins(), ph = (i % s.bins()) / s.pw, pw = i % s.pw;
      const RoiGeometry<acc_t>& g = plan.geom[k];
      const Interp1D<acc_t>* ys = plan.ys.data() + plan.y_begin[k] + ph * g.grid_h;
      const Interp1D<acc_t>* xs = plan.xs.data() + plan.x_begin[k] + pw * g.grid_w;
      const scalar_t* image = in + plan.batch[k] * s.plane() * C;
      std::fill(a, a + C, acc_t(0));
      for (int iy = 0; iy < g.grid_h; ++iy) {
        const Interp1D<acc_t>& y = ys[iy];
        for (int ix = 0; ix < g.grid_w; ++ix) {
          const Interp1D<acc_t>& x = xs[ix];
          const scalar_t* p00 = image + static_cast<int64_t>(y.lo + x.lo) * C;
          const scalar_t* p01 = image + static_cast<int64_t>(y.lo + x.hi) * C;
          const scalar_t* p10 = image + static_cast<int64_t>(y.hi + x.lo) * C;
          const scalar_t* p11 = image + static_cast<int64_t>(y.hi + x.hi) * C;
          const acc_t w00 = y.w_lo * x.w_lo, w01 = y.w_lo * x.w_hi, w10 = y.w_hi * x.w_lo, w11 = y.w_hi * x.w_hi;
          for (int64_t c = 0; c < C; ++c) {
            a[c] += w00 * static_cast<acc_t>(p00[c]) + w01 * static_cast<acc_t>(p01[c]) +
                    w10 * static_cast<acc_t>(p10[c]) + w11 * static_cast<acc_t>(p11[c]);
          }
        }
      }
      scalar_t* o = out + i * C;
      const acc_t count = g.count;
      for (int64_t c = 0; c < C; ++c) o[c] = static_cast<scalar_t>(a[c] / count);
    }
  });
}

// grad_in has the accumulation type and is zero on entry.
template <typename scalar_t, typename acc_t>
void backward_nchw(const scalar_t* grad, const Plan<acc_t>& plan, int64_t K, const Shape& s, acc_t* grad_in) {
  at::parallel_for(0, s.c, 1, [&](int64_t c_begin, int64_t c_end) {
    for (int64_t c = c_begin; c < c_end; ++c) {
      for (int64_t k = 0; k < K; ++k) {
        const RoiGeometry<acc_t>& g = plan.geom[k];
        const Interp1D<acc_t>* ys = plan.ys.data() + plan.y_begin[k];
        const Interp1D<acc_t>* xs = plan.xs.data() + plan.x_begin[k];
        acc_t* plane = grad_in + (plan.batch[k] * s.c + c) * s.plane();
        const scalar_t* gk = grad + (k * s.c + c) * s.bins();
        for (int64_t ph = 0; ph < s.ph; ++ph) {
          for (int64_t pw = 0; pw < s.pw; ++pw) {
            const acc_t gb = static_cast<acc_t>(gk[ph * s.pw + pw]) / g.count;
            for (int iy = 0; iy < g.grid_h; ++iy) {
              const Interp1D<acc_t>& y = ys[ph * g.grid_h + iy];
              acc_t* row_lo = plane + y.lo;
              acc_t* row_hi = plane + y.hi;
              for (int ix = 0; ix < g.grid_w; ++ix) {
                const Interp1D<acc_t>& x = xs[pw * g.grid_w + ix];
                row_lo[x.lo] += (y.w_lo * x.w_lo) * gb;
                row_lo[x.hi] += (y.w_lo * x.w_hi) * gb;
                row_hi[x.lo] += (y.w_hi * x.w_lo) * gb;
                row_hi[x.hi] += (y.w_hi * x.w_hi) * gb;
              }
            }
          }
        }
      }
    }
  });
}

template <typename scalar_t, typename acc_t>
void backward_nhwc(const scalar_t* grad, const Plan<acc_t>& plan, int64_t K, const Shape& s, acc_t* grad_in) {
  const int64_t C = s.c;
  at::parallel_for(0, C, 16, [&](int64_t c_begin, int64_t c_end) {
    const int64_t nc = c_end - c_begin;
    std::vector<acc_t> gvec(nc);
    acc_t* gv = gvec.data();
    for (int64_t k = 0; k < K; ++k) {
      const RoiGeometry<acc_t>& g = plan.geom[k];
      acc_t* image = grad_in + plan.batch[k] * s.plane() * C + c_begin;
      for (int64_t ph = 0; ph < s.ph; ++ph) {
        for (int64_t pw = 0; pw < s.pw; ++pw) {
          const scalar_t* gb = grad + ((k * s.ph + ph) * s.pw + pw) * C + c_begin;
          for (int64_t c = 0; c < nc; ++c) gv[c] = static_cast<acc_t>(gb[c]) / g.count;
          const Interp1D<acc_t>* ys = plan.ys.data() + plan.y_begin[k] + ph * g.grid_h;
          const Interp1D<acc_t>* xs = plan.xs.data() + plan.x_begin[k] + pw * g.grid_w;
          for (int iy = 0; iy < g.grid_h; ++iy) {
            const Interp1D<acc_t>& y = ys[iy];
            for (int ix = 0; ix < g.grid_w; ++ix) {
              const Interp1D<acc_t>& x = xs[ix];
              acc_t* p00 = image + static_cast<int64_t>(y.lo + x.lo) * C;
              acc_t* p01 = image + static_cast<int64_t>(y.lo + x.hi) * C;
              acc_t* p10 = image + static_cast<int64_t>(y.hi + x.lo) * C;
              acc_t* p11 = image + static_cast<int64_t>(y.hi + x.hi) * C;
              const acc_t w00 = y.w_lo * x.w_lo, w01 = y.w_lo * x.w_hi, w10 = y.w_hi * x.w_lo,
                          w11 = y.w_hi * x.w_hi;
              // Separate loops: the four pointers may alias (clamped borders, exact pixel positions).
              for (int64_t c = 0; c < nc; ++c) p00[c] += w00 * gv[c];
              for (int64_t c = 0; c < nc; ++c) p01[c] += w01 * gv[c];
              for (int64_t c = 0; c < nc; ++c) p10[c] += w10 * gv[c];
              for (int64_t c = 0; c < nc; ++c) p11[c] += w11 * gv[c];
            }
          }
        }
      }
    }
  });
}

}  // namespace

at::Tensor roi_align_cpu(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                         int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio, bool aligned) {
  check_forward_args(input, rois, pooled_height, pooled_width);
  const bool nhwc = use_channels_last(input);
  const auto fmt = nhwc ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const at::Tensor x = input.contiguous(fmt);
  const at::Tensor r = rois_for_compute(rois, input.scalar_type());
  const int64_t K = rois.size(0);
  const Shape s{x.size(0), x.size(1), x.size(2), x.size(3), pooled_height, pooled_width};
  at::Tensor out = at::empty({K, s.c, s.ph, s.pw}, x.options().memory_format(fmt));
  if (K == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "mrseg_roi_align_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const Plan<acc_t> plan(r.const_data_ptr<acc_t>(), K, s, static_cast<acc_t>(spatial_scale),
                           static_cast<int>(sampling_ratio), aligned);
    if (s.c == 0) return;
    if (nhwc) {
      forward_nhwc<scalar_t>(x.const_data_ptr<scalar_t>(), plan, K, s, out.mutable_data_ptr<scalar_t>());
    } else {
      forward_nchw<scalar_t>(x.const_data_ptr<scalar_t>(), plan, K, s, out.mutable_data_ptr<scalar_t>());
    }
  });
  return out;
}

at::Tensor roi_align_backward_cpu(const at::Tensor& grad, const at::Tensor& rois, double spatial_scale,
                                  int64_t pooled_height, int64_t pooled_width, int64_t batch_size,
                                  int64_t channels, int64_t height, int64_t width, int64_t sampling_ratio,
                                  bool aligned, bool channels_last) {
  check_backward_args(grad, rois, pooled_height, pooled_width, batch_size, channels, height, width);
  const auto fmt = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const at::Tensor g = grad.contiguous(fmt);
  const at::Tensor r = rois_for_compute(rois, grad.scalar_type());
  const int64_t K = rois.size(0);
  const Shape s{batch_size, channels, height, width, pooled_height, pooled_width};
  const auto acc_type = at::toOpMathType(grad.scalar_type());
  // at::zeros ignores the memory format of its options; empty() honours it.
  at::Tensor grad_in =
      at::empty({batch_size, channels, height, width}, grad.options().dtype(acc_type).memory_format(fmt)).zero_();
  if (K > 0 && grad_in.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, g.scalar_type(), "mrseg_roi_align_backward_cpu", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const Plan<acc_t> plan(r.const_data_ptr<acc_t>(), K, s, static_cast<acc_t>(spatial_scale),
                             static_cast<int>(sampling_ratio), aligned);
      auto* gi = grad_in.mutable_data_ptr<acc_t>();
      if (channels_last) {
        backward_nhwc<scalar_t>(g.const_data_ptr<scalar_t>(), plan, K, s, gi);
      } else {
        backward_nchw<scalar_t>(g.const_data_ptr<scalar_t>(), plan, K, s, gi);
      }
    });
  }
  return acc_type == grad.scalar_type() ? grad_in : grad_in.to(grad.scalar_type());
}

TORCH_LIBRARY_IMPL(mrseg, CPU, m) {
  m.impl("roi_align", &roi_align_cpu);
  m.impl("_roi_align_backward", &roi_align_backward_cpu);
}

}  // namespace mrseg
