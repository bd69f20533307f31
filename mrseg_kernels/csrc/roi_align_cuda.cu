// RoIAlign on CUDA, forward and backward, for NCHW (contiguous) and NHWC (channels_last) feature maps.
//
// One thread per output element. Threads are numbered in the output's memory order, so with NHWC consecutive
// threads read consecutive channels of the same pixels (coalesced). Backward scatters with atomicAdd into a
// float (or double) buffer; half types are converted at the end. Batch indices are checked before the launch
// (check_batch_indices: one device synchronisation; skipped while a CUDA graph is captured), since a kernel
// cannot raise; the kernels still skip a RoI whose index is outside [0, N) rather than read out of bounds.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGraphsC10Utils.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

#include "roi_align.h"
#include "roi_align_geometry.h"

namespace mrseg {
namespace {

constexpr int kThreads = 256;

struct Dims {
  int64_t n, c, h, w, ph, pw;
};

// Output element `idx` -> (k, c, ph, pw) in the output's memory order.
template <bool NHWC>
__device__ __forceinline__ void unravel(int64_t idx, const Dims& d, int64_t& k, int64_t& c, int& ph, int& pw) {
  if (NHWC) {
    c = idx % d.c;
    idx /= d.c;
    pw = static_cast<int>(idx % d.pw);
    idx /= d.pw;
    ph = static_cast<int>(idx % d.ph);
    k = idx / d.ph;
  } else {
    pw = static_cast<int>(idx % d.pw);
    idx /= d.pw;
    ph = static_cast<int>(idx % d.ph);
    idx /= d.ph;
    c = idx % d.c;
    k = idx / d.c;
  }
}

// Element offset of pixel (y, x) of channel c of image b.
template <bool NHWC>
__device__ __forceinline__ int64_t pixel(const Dims& d, int64_t b, int64_t c, int y, int x) {
  return NHWC ? ((b * d.h + y) * d.w + x) * d.c + c : ((b * d.c + c) * d.h + y) * d.w + x;
}

template <typename scalar_t, bool NHWC>
__global__ void roi_align_forward_kernel(int64_t total, const scalar_t* __restrict__ input,
                                         const at::opmath_type<scalar_t>* __restrict__ rois, Dims d,
                                         at::opmath_type<scalar_t> scale, int sampling_ratio, bool aligned,
                                         scalar_t* __restrict__ output) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    int64_t k, c;
    int ph, pw;
    unravel<NHWC>(idx, d, k, c, ph, pw);
    const acc_t* roi = rois + k * 5;
    acc_t sum = 0;
    const RoiGeometry<acc_t> g = roi_geometry<acc_t>(roi + 1, scale, d.ph, d.pw, sampling_ratio, aligned);
    // Compared as a float before the cast (inf or 1e19 would not fit int64_t).
    if (roi[0] >= acc_t(0) && roi[0] < static_cast<acc_t>(d.n)) {
      const int64_t b = static_cast<int64_t>(roi[0]);
      for (int iy = 0; iy < g.grid_h; ++iy) {
        const Interp1D<acc_t> y = interp_1d<acc_t>(sample_coord<acc_t>(g.start_h, g.bin_h, ph, iy, g.grid_h), d.h);
        for (int ix = 0; ix < g.grid_w; ++ix) {
          const Interp1D<acc_t> x =
              interp_1d<acc_t>(sample_coord<acc_t>(g.start_w, g.bin_w, pw, ix, g.grid_w), d.w);
          const acc_t v00 = static_cast<acc_t>(input[pixel<NHWC>(d, b, c, y.lo, x.lo)]);
          const acc_t v01 = static_cast<acc_t>(input[pixel<NHWC>(d, b, c, y.lo, x.hi)]);
          const acc_t v10 = static_cast<acc_t>(input[pixel<NHWC>(d, b, c, y.hi, x.lo)]);
          const acc_t v11 = static_cast<acc_t>(input[pixel<NHWC>(d, b, c, y.hi, x.hi)]);
          sum += y.w_lo * x.w_lo * v00 + y.w_lo * x.w_hi * v01 + y.w_hi * x.w_lo * v10 + y.w_hi * x.w_hi * v11;
        }
      }
    }
    output[idx] = static_cast<scalar_t>(sum / g.count);
  }
}

template <typename acc_t>
__device__ __forceinline__ void add_if_nonzero(acc_t* p, acc_t v) {
  if (v != acc_t(0)) atomicAdd(p, v);
}

template <typename scalar_t, bool NHWC>
__global__ void roi_align_backward_kernel(int64_t total, const scalar_t* __restrict__ grad,
                                          const at::opmath_type<scalar_t>* __restrict__ rois, Dims d,
                                          at::opmath_type<scalar_t> scale, int sampling_ratio, bool aligned,
                                          at::opmath_type<scalar_t>* __restrict__ grad_input) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    int64_t k, c;
    int ph, pw;
    unravel<NHWC>(idx, d, k, c, ph, pw);
    const acc_t* roi = rois + k * 5;
    if (!(roi[0] >= acc_t(0) && roi[0] < static_cast<acc_t>(d.n))) continue;
    const int64_t b = static_cast<int64_t>(roi[0]);
    const RoiGeometry<acc_t> g = roi_geometry<acc_t>(roi + 1, scale, d.ph, d.pw, sampling_ratio, aligned);
    const acc_t gb = static_cast<acc_t>(grad[idx]) / g.count;
    for (int iy = 0; iy < g.grid_h; ++iy) {
      const Interp1D<acc_t> y = interp_1d<acc_t>(sample_coord<acc_t>(g.start_h, g.bin_h, ph, iy, g.grid_h), d.h);
      for (int ix = 0; ix < g.grid_w; ++ix) {
        const Interp1D<acc_t> x = interp_1d<acc_t>(sample_coord<acc_t>(g.start_w, g.bin_w, pw, ix, g.grid_w), d.w);
        add_if_nonzero(grad_input + pixel<NHWC>(d, b, c, y.lo, x.lo), y.w_lo * x.w_lo * gb);
        add_if_nonzero(grad_input + pixel<NHWC>(d, b, c, y.lo, x.hi), y.w_lo * x.w_hi * gb);
        add_if_nonzero(grad_input + pixel<NHWC>(d, b, c, y.hi, x.lo), y.w_hi * x.w_lo * gb);
        add_if_nonzero(grad_input + pixel<NHWC>(d, b, c, y.hi, x.hi), y.w_hi * x.w_hi * gb);
      }
    }
  }
}

// check_batch_indices reads a bool back from the device, which a stream being captured into a CUDA graph does
// not allow: under capture the kernels' own guard (a RoI with a bad index gives zeros) is all there is.
void check_batch_indices_unless_capturing(const at::Tensor& rois, int64_t batch_size, const char* op) {
  if (c10::cuda::currentStreamCaptureStatusMayInitCtx() == c10::cuda::CaptureStatus::None) {
    check_batch_indices(rois, batch_size, op);
  }
}

// Grid-stride loops over at most 32 blocks per SM. (ATen/cuda/CUDAContext.h is avoided: it needs the cuSPARSE and
// cuBLAS headers, which a minimal toolkit lacks.)
int blocks_for(int64_t total) {
  int device = 0, sms = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  const int64_t max_blocks = static_cast<int64_t>(sms) * 32;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>((total + kThreads - 1) / kThreads, max_blocks)));
}

}  // namespace

at::Tensor roi_align_cuda(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                          int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio, bool aligned) {
  check_forward_args(input, rois, pooled_height, pooled_width);
  const c10::cuda::CUDAGuard guard(input.device());
  const bool nhwc = use_channels_last(input);
  const auto fmt = nhwc ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const at::Tensor x = input.contiguous(fmt);
  const at::Tensor r = rois_for_compute(rois, input.scalar_type());
  check_batch_indices_unless_capturing(r, x.size(0), "mrseg::roi_align");
  const Dims d{x.size(0), x.size(1), x.size(2), x.size(3), pooled_height, pooled_width};
  at::Tensor out = at::empty({rois.size(0), d.c, d.ph, d.pw}, x.options().memory_format(fmt));
  const int64_t total = out.numel();
  if (total == 0) return out;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "mrseg_roi_align_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto scale = static_cast<acc_t>(spatial_scale);
    const int sr = static_cast<int>(sampling_ratio);
    if (nhwc) {
      roi_align_forward_kernel<scalar_t, true><<<blocks_for(total), kThreads, 0, stream>>>(
          total, x.const_data_ptr<scalar_t>(), r.const_data_ptr<acc_t>(), d, scale, sr, aligned,
          out.mutable_data_ptr<scalar_t>());
    } else {
      roi_align_forward_kernel<scalar_t, false><<<blocks_for(total), kThreads, 0, stream>>>(
          total, x.const_data_ptr<scalar_t>(), r.const_data_ptr<acc_t>(), d, scale, sr, aligned,
          out.mutable_data_ptr<scalar_t>());
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

at::Tensor roi_align_backward_cuda(const at::Tensor& grad, const at::Tensor& rois, double spatial_scale,
                                   int64_t pooled_height, int64_t pooled_width, int64_t batch_size,
                                   int64_t channels, int64_t height, int64_t width, int64_t sampling_ratio,
                                   bool aligned, bool channels_last) {
  check_backward_args(grad, rois, pooled_height, pooled_width, batch_size, channels, height, width);
  const c10::cuda::CUDAGuard guard(grad.device());
  const auto fmt = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const at::Tensor g = grad.contiguous(fmt);
  const at::Tensor r = rois_for_compute(rois, grad.scalar_type());
  check_batch_indices_unless_capturing(r, batch_size, "mrseg::_roi_align_backward");
  const Dims d{batch_size, channels, height, width, pooled_height, pooled_width};
  const auto acc_type = at::toOpMathType(grad.scalar_type());
  // at::zeros ignores the memory format of its options; empty() honours it.
  at::Tensor grad_in =
      at::empty({batch_size, channels, height, width}, grad.options().dtype(acc_type).memory_format(fmt)).zero_();
  const int64_t total = g.numel();
  if (total > 0 && grad_in.numel() > 0) {
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, g.scalar_type(), "mrseg_roi_align_backward_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const auto scale = static_cast<acc_t>(spatial_scale);
      const int sr = static_cast<int>(sampling_ratio);
      if (channels_last) {
        roi_align_backward_kernel<scalar_t, true><<<blocks_for(total), kThreads, 0, stream>>>(
            total, g.const_data_ptr<scalar_t>(), r.const_data_ptr<acc_t>(), d, scale, sr, aligned,
            grad_in.mutable_data_ptr<acc_t>());
      } else {
        roi_align_backward_kernel<scalar_t, false><<<blocks_for(total), kThreads, 0, stream>>>(
            total, g.const_data_ptr<scalar_t>(), r.const_data_ptr<acc_t>(), d, scale, sr, aligned,
            grad_in.mutable_data_ptr<acc_t>());
      }
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return acc_type == grad.scalar_type() ? grad_in : grad_in.to(grad.scalar_type());
}

TORCH_LIBRARY_IMPL(mrseg, CUDA, m) {
  m.impl("roi_align", &roi_align_cuda);
  m.impl("_roi_align_backward", &roi_align_backward_cuda);
}

}  // namespace mrseg
