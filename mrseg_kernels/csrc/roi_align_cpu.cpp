// RoIAlign on the CPU, forward and backward, for NCHW (contiguous) and NHWC (channels_last) feature maps.
//
// The bilinear sampling of a RoI is separable: each sample point (y, x) reads rows y.lo/y.hi and columns
// x.lo/x.hi with weights y.w * x.w. A plan computes, once per RoI, the row and column taps of every sample
// coordinate, and every channel reuses it.
//
// Memory order decides the loops:
// - NHWC (channels_last): the channel loop is innermost and contiguous, so it vectorises.
// - NCHW with many taps per pixel (the FPN case): blocks of channels are transposed into NHWC tiles that stay in
//   cache while every RoI of the image reads (or, backward, accumulates into) them.
// - NCHW with few taps per pixel: channel-outer scalar loops, so one channel plane stays in cache while all RoIs
//   read it (RoI-outer would fetch a fresh plane region from memory for every (RoI, channel)).
// Backward work items own disjoint channels, so no two threads ever add into the same grad_input element.
// Half types accumulate in float.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
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

// Runs worker(claim) on each intra-op thread; claim(i) hands out the items 0..n-1 one at a time and returns false
// when none is left. Unlike a static split, a thread that the OS deschedules (the cores are often shared) does
// not hold the others up at the end. The worker sets up its scratch once, then loops over its claims.
template <typename Worker>
void parallel_items(int64_t n, const Worker& worker) {
  std::atomic<int64_t> next{0};
  const auto claim = [&](int64_t& i) {
    i = next.fetch_add(1, std::memory_order_relaxed);
    return i < n;
  };
  const int64_t workers = std::min<int64_t>(at::get_num_threads(), n);
  at::parallel_for(0, workers, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) worker(claim);
  });
}

// Row and column taps of every RoI. For RoI k: ys[y_begin[k] + ph * grid_h + iy] (lo/hi are row offsets
// y * W) and xs[x_begin[k] + pw * grid_w + ix] (lo/hi are column indices).
template <typename acc_t>
struct Plan {
  std::vector<int64_t> batch, y_begin, x_begin;
  std::vector<int64_t> by_image, image_begin;  // RoIs of image n: by_image[image_begin[n] .. image_begin[n + 1])
  std::vector<RoiGeometry<acc_t>> geom;
  std::vector<Interp1D<acc_t>> ys, xs;
  int64_t taps = 0;  // bilinear taps per channel, all RoIs

  Plan(const acc_t* rois, int64_t K, const Shape& s, acc_t scale, int sampling_ratio, bool aligned)
      : batch(K), y_begin(K + 1), x_begin(K + 1), by_image(K), image_begin(s.n + 1), geom(K) {
    for (int64_t k = 0; k < K; ++k) {
      const acc_t* roi = rois + k * 5;
      // Compared as a float before the cast: NaN fails both tests, and inf or 1e19 would not fit int64_t.
      TORCH_CHECK(roi[0] >= acc_t(0) && roi[0] < static_cast<acc_t>(s.n), "mrseg::roi_align: rois[", k,
                  ", 0] = ", roi[0], " is not a batch index of the input, which holds ", s.n,
                  " image(s); rois are [K, 5] rows of (batch_index, x1, y1, x2, y2) with 0 <= batch_index < N");
      batch[k] = static_cast<int64_t>(roi[0]);
      geom[k] = roi_geometry<acc_t>(roi + 1, scale, s.ph, s.pw, sampling_ratio, aligned);
      y_begin[k + 1] = y_begin[k] + s.ph * geom[k].grid_h;
      x_begin[k + 1] = x_begin[k] + s.pw * geom[k].grid_w;
      taps += 4 * s.bins() * geom[k].grid_h * geom[k].grid_w;
    }
    for (int64_t k = 0; k < K; ++k) ++image_begin[batch[k] + 1];
    for (int64_t n = 0; n < s.n; ++n) image_begin[n + 1] += image_begin[n];
    std::vector<int64_t> fill(image_begin.begin(), image_begin.end() - 1);
    for (int64_t k = 0; k < K; ++k) by_image[fill[batch[k]]++] = k;
    ys.resize(y_begin[K]);
    xs.resize(x_begin[K]);
    // Serial: it is cheap (two short arrays per RoI), and each parallel region costs a thread hand-off.
    for (int64_t k = 0; k < K; ++k) {
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
  }

  // NCHW input goes through channel blocks transposed to NHWC tiles (vectorised over the block) once the RoIs
  // read each pixel about once or more; fewer taps do not pay for the transposition.
  bool worth_tiles(const Shape& s) const { return s.c > 1 && taps >= s.n * s.plane(); }
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
  const int64_t C = s.c, bins = s.bins();
  parallel_items(K, [&](const auto& claim) {
    std::vector<acc_t> acc(bins * C);  // one RoI: [bins, C]
    for (int64_t k; claim(k);) {
      const RoiGeometry<acc_t>& g = plan.geom[k];
      const scalar_t* image = in + plan.batch[k] * s.plane() * C;
      std::fill(acc.begin(), acc.end(), acc_t(0));
      for (int64_t b = 0; b < bins; ++b) {
        acc_t* a = acc.data() + b * C;
        const Interp1D<acc_t>* ys = plan.ys.data() + plan.y_begin[k] + (b / s.pw) * g.grid_h;
        const Interp1D<acc_t>* xs = plan.xs.data() + plan.x_begin[k] + (b % s.pw) * g.grid_w;
        for (int iy = 0; iy < g.grid_h; ++iy) {
          const Interp1D<acc_t>& y = ys[iy];
          for (int ix = 0; ix < g.grid_w; ++ix) {
            const Interp1D<acc_t>& x = xs[ix];
            const scalar_t* p00 = image + static_cast<int64_t>(y.lo + x.lo) * C;
            const scalar_t* p01 = image + static_cast<int64_t>(y.lo + x.hi) * C;
            const scalar_t* p10 = image + static_cast<int64_t>(y.hi + x.lo) * C;
            const scalar_t* p11 = image + static_cast<int64_t>(y.hi + x.hi) * C;
            const acc_t w00 = y.w_lo * x.w_lo, w01 = y.w_lo * x.w_hi, w10 = y.w_hi * x.w_lo,
                        w11 = y.w_hi * x.w_hi;
            for (int64_t c = 0; c < C; ++c) {
              a[c] += w00 * static_cast<acc_t>(p00[c]) + w01 * static_cast<acc_t>(p01[c]) +
                      w10 * static_cast<acc_t>(p10[c]) + w11 * static_cast<acc_t>(p11[c]);
            }
          }
        }
      }
      const acc_t count = g.count;
      scalar_t* o = out + k * bins * C;
      for (int64_t i = 0; i < bins * C; ++i) o[i] = static_cast<scalar_t>(acc[i] / count);
    }
  });
}

// Channel blocks of NCHW maps, transposed into NHWC tiles [H * W, B] of the accumulation type: every bilinear
// tap then reads or writes B contiguous channels (one cache line), and one work item ((block, image)) keeps its
// tile in cache for all the image's RoIs. B channels of acc_t fill 64 bytes.
template <typename acc_t>
constexpr int64_t kBlock = 64 / sizeof(acc_t);
constexpr int64_t kChunk = 64;  // pixels per transposition step

// A thread's tile. Up to 32 MB it is kept between calls (a fresh multi-megabyte allocation per call costs page
// faults); larger ones are allocated for the call only.
template <typename acc_t>
class Tile {
 public:
  explicit Tile(int64_t size) {
    thread_local std::vector<acc_t> cached;
    std::vector<acc_t>& buffer = size * static_cast<int64_t>(sizeof(acc_t)) <= (int64_t{32} << 20) ? cached : own_;
    if (static_cast<int64_t>(buffer.size()) < size) buffer.resize(size);
    data_ = buffer.data();
  }
  acc_t* data() const { return data_; }

 private:
  std::vector<acc_t> own_;
  acc_t* data_;
};

// y[0, n) += a * x[0, n); __restrict__ lets the compiler vectorise it.
template <typename acc_t, int64_t n>
inline void axpy(acc_t* __restrict__ y, acc_t a, const acc_t* __restrict__ x) {
  for (int64_t j = 0; j < n; ++j) y[j] += a * x[j];
}

template <typename acc_t>
inline void axpy_n(acc_t* __restrict__ y, acc_t a, const acc_t* __restrict__ x, int64_t n) {
  for (int64_t j = 0; j < n; ++j) y[j] += a * x[j];
}

template <typename scalar_t, typename acc_t>
void forward_nchw_tiled(const scalar_t* in, const Plan<acc_t>& plan, const Shape& s, scalar_t* out) {
  constexpr int64_t B = kBlock<acc_t>;
  const int64_t blocks = (s.c + B - 1) / B, hw = s.plane(), bins = s.bins();
  parallel_items(blocks * s.n, [&](const auto& claim) {
    const Tile<acc_t> buffer(hw * B);
    acc_t* tile = buffer.data();
    for (int64_t item; claim(item);) {
      const int64_t n = item % s.n, c0 = (item / s.n) * B, nc = std::min(B, s.c - c0);
      const int64_t k_begin = plan.image_begin[n], k_end = plan.image_begin[n + 1];
      if (k_begin == k_end) continue;
      if (nc < B) std::fill(tile, tile + hw * B, acc_t(0));
      // Transpose in chunks of pixels so that the written part of the tile stays in L1.
      const scalar_t* planes = in + (n * s.c + c0) * hw;
      for (int64_t p0 = 0; p0 < hw; p0 += kChunk) {
        const int64_t p1 = std::min(hw, p0 + kChunk);
        for (int64_t j = 0; j < nc; ++j)
          for (int64_t p = p0; p < p1; ++p) tile[p * B + j] = static_cast<acc_t>(planes[j * hw + p]);
      }
      for (int64_t kk = k_begin; kk < k_end; ++kk) {
        const int64_t k = plan.by_image[kk];
        const RoiGeometry<acc_t>& g = plan.geom[k];
        for (int64_t b = 0; b < bins; ++b) {
          const Interp1D<acc_t>* ys = plan.ys.data() + plan.y_begin[k] + (b / s.pw) * g.grid_h;
          const Interp1D<acc_t>* xs = plan.xs.data() + plan.x_begin[k] + (b % s.pw) * g.grid_w;
          acc_t a[B] = {};
          for (int iy = 0; iy < g.grid_h; ++iy) {
            const Interp1D<acc_t>& y = ys[iy];
            for (int ix = 0; ix < g.grid_w; ++ix) {
              const Interp1D<acc_t>& x = xs[ix];
              const acc_t* t00 = tile + static_cast<int64_t>(y.lo + x.lo) * B;
              const acc_t* t01 = tile + static_cast<int64_t>(y.lo + x.hi) * B;
              const acc_t* t10 = tile + static_cast<int64_t>(y.hi + x.lo) * B;
              const acc_t* t11 = tile + static_cast<int64_t>(y.hi + x.hi) * B;
              const acc_t w00 = y.w_lo * x.w_lo, w01 = y.w_lo * x.w_hi, w10 = y.w_hi * x.w_lo,
                          w11 = y.w_hi * x.w_hi;
              for (int64_t j = 0; j < B; ++j) a[j] += w00 * t00[j] + w01 * t01[j] + w10 * t10[j] + w11 * t11[j];
            }
          }
          scalar_t* o = out + (k * s.c + c0) * bins + b;
          for (int64_t j = 0; j < nc; ++j) o[j * bins] = static_cast<scalar_t>(a[j] / g.count);
        }
      }
    }
  });
}

// Writes every element of grad_in (no zero-fill needed).
template <typename scalar_t, typename acc_t>
void backward_nchw_tiled(const scalar_t* grad, const Plan<acc_t>& plan, const Shape& s, scalar_t* grad_in) {
  constexpr int64_t B = kBlock<acc_t>;
  const int64_t blocks = (s.c + B - 1) / B, hw = s.plane(), bins = s.bins();
  parallel_items(blocks * s.n, [&](const auto& claim) {
    const Tile<acc_t> buffer(hw * B);
    acc_t* tile = buffer.data();
    for (int64_t item; claim(item);) {
      const int64_t n = item % s.n, c0 = (item / s.n) * B, nc = std::min(B, s.c - c0);
      std::fill(tile, tile + hw * B, acc_t(0));
      for (int64_t kk = plan.image_begin[n]; kk < plan.image_begin[n + 1]; ++kk) {
        const int64_t k = plan.by_image[kk];
        const RoiGeometry<acc_t>& g = plan.geom[k];
        for (int64_t b = 0; b < bins; ++b) {
          acc_t gv[B] = {};
          const scalar_t* gb = grad + (k * s.c + c0) * bins + b;
          for (int64_t j = 0; j < nc; ++j) gv[j] = static_cast<acc_t>(gb[j * bins]) / g.count;
          const Interp1D<acc_t>* ys = plan.ys.data() + plan.y_begin[k] + (b / s.pw) * g.grid_h;
          const Interp1D<acc_t>* xs = plan.xs.data() + plan.x_begin[k] + (b % s.pw) * g.grid_w;
          for (int iy = 0; iy < g.grid_h; ++iy) {
            const Interp1D<acc_t>& y = ys[iy];
            for (int ix = 0; ix < g.grid_w; ++ix) {
              const Interp1D<acc_t>& x = xs[ix];
              acc_t* t00 = tile + static_cast<int64_t>(y.lo + x.lo) * B;
              acc_t* t01 = tile + static_cast<int64_t>(y.lo + x.hi) * B;
              acc_t* t10 = tile + static_cast<int64_t>(y.hi + x.lo) * B;
              acc_t* t11 = tile + static_cast<int64_t>(y.hi + x.hi) * B;
              const acc_t w00 = y.w_lo * x.w_lo, w01 = y.w_lo * x.w_hi, w10 = y.w_hi * x.w_lo,
                          w11 = y.w_hi * x.w_hi;
              // One call per tap: the four taps may be the same pixel (clamped borders, exact positions).
              axpy<acc_t, B>(t00, w00, gv);
              axpy<acc_t, B>(t01, w01, gv);
              axpy<acc_t, B>(t10, w10, gv);
              axpy<acc_t, B>(t11, w11, gv);
            }
          }
        }
      }
      scalar_t* planes = grad_in + (n * s.c + c0) * hw;
      for (int64_t p0 = 0; p0 < hw; p0 += kChunk) {
        const int64_t p1 = std::min(hw, p0 + kChunk);
        for (int64_t j = 0; j < nc; ++j)
          for (int64_t p = p0; p < p1; ++p) planes[j * hw + p] = static_cast<scalar_t>(tile[p * B + j]);
      }
    }
  });
}

// grad_in has the accumulation type and is zero on entry.
template <typename scalar_t, typename acc_t>
void backward_nchw(const scalar_t* grad, const Plan<acc_t>& plan, int64_t K, const Shape& s, acc_t* grad_in) {
  parallel_items(s.c, [&](const auto& claim) {
    for (int64_t c; claim(c);) {
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
  constexpr int64_t kChannels = 32;  // channels per work item
  const int64_t C = s.c, bins = s.bins();
  parallel_items((C + kChannels - 1) / kChannels, [&](const auto& claim) {
    acc_t gv[kChannels];
    for (int64_t item; claim(item);) {
      const int64_t c0 = item * kChannels, nc = std::min(kChannels, C - c0);
      for (int64_t k = 0; k < K; ++k) {
        const RoiGeometry<acc_t>& g = plan.geom[k];
        acc_t* image = grad_in + plan.batch[k] * s.plane() * C + c0;
        for (int64_t b = 0; b < bins; ++b) {
          const scalar_t* gb = grad + (k * bins + b) * C + c0;
          for (int64_t j = 0; j < nc; ++j) gv[j] = static_cast<acc_t>(gb[j]) / g.count;
          const Interp1D<acc_t>* ys = plan.ys.data() + plan.y_begin[k] + (b / s.pw) * g.grid_h;
          const Interp1D<acc_t>* xs = plan.xs.data() + plan.x_begin[k] + (b % s.pw) * g.grid_w;
          for (int iy = 0; iy < g.grid_h; ++iy) {
            const Interp1D<acc_t>& y = ys[iy];
            for (int ix = 0; ix < g.grid_w; ++ix) {
              const Interp1D<acc_t>& x = xs[ix];
              const acc_t w00 = y.w_lo * x.w_lo, w01 = y.w_lo * x.w_hi, w10 = y.w_hi * x.w_lo,
                          w11 = y.w_hi * x.w_hi;
              // One call per tap: the four taps may be the same pixel (clamped borders, exact positions).
              axpy_n(image + static_cast<int64_t>(y.lo + x.lo) * C, w00, gv, nc);
              axpy_n(image + static_cast<int64_t>(y.lo + x.hi) * C, w01, gv, nc);
              axpy_n(image + static_cast<int64_t>(y.hi + x.lo) * C, w10, gv, nc);
              axpy_n(image + static_cast<int64_t>(y.hi + x.hi) * C, w11, gv, nc);
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
  const at::Tensor r = rois_for_compute(rois, input.scalar_type());
  const int64_t K = rois.size(0);
  const Shape s{input.size(0), input.size(1), input.size(2), input.size(3), pooled_height, pooled_width};
  at::Tensor out = at::empty({K, s.c, s.ph, s.pw}, input.options().memory_format(fmt));
  if (K == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "mrseg_roi_align_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const Plan<acc_t> plan(r.const_data_ptr<acc_t>(), K, s, static_cast<acc_t>(spatial_scale),
                           static_cast<int>(sampling_ratio), aligned);
    if (s.c == 0) return;
    auto* o = out.mutable_data_ptr<scalar_t>();
    const at::Tensor x = input.contiguous(fmt);
    if (nhwc) {
      forward_nhwc<scalar_t>(x.const_data_ptr<scalar_t>(), plan, K, s, o);
    } else if (plan.worth_tiles(s)) {
      forward_nchw_tiled<scalar_t>(x.const_data_ptr<scalar_t>(), plan, s, o);
    } else {
      forward_nchw<scalar_t>(x.const_data_ptr<scalar_t>(), plan, K, s, o);
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
  const auto dtype = grad.scalar_type();
  const at::Tensor g = grad.contiguous(fmt);
  const at::Tensor r = rois_for_compute(rois, dtype);
  const int64_t K = rois.size(0);
  const Shape s{batch_size, channels, height, width, pooled_height, pooled_width};
  const auto acc_type = at::toOpMathType(dtype);
  at::Tensor grad_in;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "mrseg_roi_align_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const Plan<acc_t> plan(r.const_data_ptr<acc_t>(), K, s, static_cast<acc_t>(spatial_scale),
                           static_cast<int>(sampling_ratio), aligned);
    if (!channels_last && plan.worth_tiles(s)) {
      grad_in = at::empty({batch_size, channels, height, width}, grad.options());
      backward_nchw_tiled<scalar_t>(g.const_data_ptr<scalar_t>(), plan, s, grad_in.mutable_data_ptr<scalar_t>());
      return;
    }
    // at::zeros ignores the memory format of its options; empty() honours it.
    grad_in = at::empty({batch_size, channels, height, width}, grad.options().dtype(acc_type).memory_format(fmt))
                  .zero_();
    if (K == 0 || grad_in.numel() == 0) return;
    auto* gi = grad_in.mutable_data_ptr<acc_t>();
    if (channels_last) {
      backward_nhwc<scalar_t>(g.const_data_ptr<scalar_t>(), plan, K, s, gi);
    } else {
      backward_nchw<scalar_t>(g.const_data_ptr<scalar_t>(), plan, K, s, gi);
    }
  });
  // Back to the input's dtype (no copy when it already matches).
  return grad_in.to(dtype, /*non_blocking=*/false, /*copy=*/false, fmt);
}

TORCH_LIBRARY_IMPL(mrseg, CPU, m) {
  m.impl("roi_align", &roi_align_cpu);
  m.impl("_roi_align_backward", &roi_align_backward_cpu);
}

}  // namespace mrseg
