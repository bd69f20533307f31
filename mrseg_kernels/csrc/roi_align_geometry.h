// RoIAlign geometry shared by the CPU and CUDA kernels, so both sample exactly the same points.
//
// Definition (He et al. 2017; the same arithmetic as torchvision.ops.roi_align): a RoI (x1, y1, x2, y2) in image
// pixels is scaled by spatial_scale (and shifted by -0.5 when aligned), split into pooled_h x pooled_w bins, each
// bin is sampled at grid_h x grid_w regularly spaced points, each point is read by bilinear interpolation and the
// bin's value is the mean of its points.
#pragma once

#include <cmath>

#if defined(__CUDACC__)
#define MRSEG_HD __host__ __device__ __forceinline__
#else
#define MRSEG_HD inline
#endif

namespace mrseg {

template <typename acc_t>
struct RoiGeometry {
  acc_t start_h, start_w;  // top-left corner of the RoI in feature-map coordinates
  acc_t bin_h, bin_w;      // bin size in feature-map pixels
  int grid_h, grid_w;      // sample points per bin along y and x (>= 0)
  acc_t count;             // divisor of the bin sum: max(grid_h * grid_w, 1)
};

// v is neither NaN nor infinite (written without std::isfinite so that host and device code share it).
template <typename acc_t>
MRSEG_HD bool is_finite(acc_t v) {
  return v - v == acc_t(0);
}

// roi: 4 coordinates x1, y1, x2, y2 (the batch index is read by the caller).
// A RoI with a NaN or infinite coordinate (before or after scaling) samples no point: it pools to zeros and
// receives no gradient. (torchvision casts the NaN-derived grid size to int, which is undefined behaviour,
// and reads outside the map.)
template <typename acc_t>
MRSEG_HD RoiGeometry<acc_t> roi_geometry(const acc_t* box, acc_t spatial_scale, int pooled_h, int pooled_w,
                                         int sampling_ratio, bool aligned) {
  const acc_t offset = aligned ? acc_t(0.5) : acc_t(0);
  RoiGeometry<acc_t> g;
  g.start_w = box[0] * spatial_scale - offset;
  g.start_h = box[1] * spatial_scale - offset;
  acc_t roi_w = box[2] * spatial_scale - offset - g.start_w;
  acc_t roi_h = box[3] * spatial_scale - offset - g.start_h;
  if (!(is_finite(g.start_w) && is_finite(g.start_h) && is_finite(roi_w) && is_finite(roi_h))) {
    g.start_w = g.start_h = g.bin_h = g.bin_w = acc_t(0);
    g.grid_h = g.grid_w = 0;
    g.count = acc_t(1);
    return g;
  }
  if (!aligned) {
    // Legacy (Detectron) behaviour: malformed RoIs are forced to be at least 1x1.
    roi_w = roi_w > acc_t(1) ? roi_w : acc_t(1);
    roi_h = roi_h > acc_t(1) ? roi_h : acc_t(1);
  }
  g.bin_h = roi_h / static_cast<acc_t>(pooled_h);
  g.bin_w = roi_w / static_cast<acc_t>(pooled_w);
  int gh = sampling_ratio > 0 ? sampling_ratio : static_cast<int>(ceil(roi_h / static_cast<acc_t>(pooled_h)));
  int gw = sampling_ratio > 0 ? sampling_ratio : static_cast<int>(ceil(roi_w / static_cast<acc_t>(pooled_w)));
  // torchvision divides by max(gh * gw, 1) with the raw (possibly non-positive) grid; a non-positive grid
  // samples nothing, so the bin is 0 whatever the divisor.
  const int n = gh * gw;
  g.count = static_cast<acc_t>(n > 1 ? n : 1);
  g.grid_h = gh > 0 ? gh : 0;
  g.grid_w = gw > 0 ? gw : 0;
  return g;
}

// Coordinate of sample point i (0 <= i < grid) of bin p along one axis.
template <typename acc_t>
MRSEG_HD acc_t sample_coord(acc_t start, acc_t bin, int p, int i, int grid) {
  return start + static_cast<acc_t>(p) * bin + (static_cast<acc_t>(i) + acc_t(0.5)) * bin / static_cast<acc_t>(grid);
}

// One axis of bilinear interpolation: the two neighbouring pixel indices and their weights.
// A point further than one pixel outside the map contributes nothing (both weights 0); points in [-1, 0] are
// clamped to 0 and points past the last pixel read the last pixel, as in torchvision. A NaN point contributes
// nothing too (the test is written so that NaN fails it; cast to int, NaN would give an arbitrary index).
template <typename acc_t>
struct Interp1D {
  int lo, hi;
  acc_t w_lo, w_hi;
};

template <typename acc_t>
MRSEG_HD Interp1D<acc_t> interp_1d(acc_t v, int size) {
  Interp1D<acc_t> r;
  if (!(v >= acc_t(-1) && v <= static_cast<acc_t>(size))) {
    r.lo = r.hi = 0;
    r.w_lo = r.w_hi = acc_t(0);
    return r;
  }
  if (v <= acc_t(0)) v = acc_t(0);
  r.lo = static_cast<int>(v);
  if (r.lo >= size - 1) {
    r.lo = r.hi = size - 1;
    v = static_cast<acc_t>(r.lo);
  } else {
    r.hi = r.lo + 1;
  }
  const acc_t l = v - static_cast<acc_t>(r.lo);
  r.w_lo = acc_t(1) - l;
  r.w_hi = l;
  return r;
}

}  // namespace mrseg
