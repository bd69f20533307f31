// The mrseg RoIAlign op: declarations shared by the schema (ops.cpp) and the CPU / CUDA kernels.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace mrseg {

// Forward: input [N, C, H, W] (contiguous or channels_last), rois [K, 5] = (batch_index, x1, y1, x2, y2)
// in input-image pixels -> [K, C, pooled_height, pooled_width], channels_last when the input is.
at::Tensor roi_align_cpu(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                         int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio, bool aligned);

// Backward w.r.t. the input: grad [K, C, pooled_height, pooled_width] -> [batch_size, channels, height, width],
// channels_last when `channels_last` (the layout the forward read).
at::Tensor roi_align_backward_cpu(const at::Tensor& grad, const at::Tensor& rois, double spatial_scale,
                                  int64_t pooled_height, int64_t pooled_width, int64_t batch_size,
                                  int64_t channels, int64_t height, int64_t width, int64_t sampling_ratio,
                                  bool aligned, bool channels_last);

at::Tensor roi_align_cuda(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                          int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio, bool aligned);

at::Tensor roi_align_backward_cuda(const at::Tensor& grad, const at::Tensor& rois, double spatial_scale,
                                   int64_t pooled_height, int64_t pooled_width, int64_t batch_size,
                                   int64_t channels, int64_t height, int64_t width, int64_t sampling_ratio,
                                   bool aligned, bool channels_last);

// Argument checks common to both devices; messages name the argument, the problem and the expected form.
void check_forward_args(const at::Tensor& input, const at::Tensor& rois, int64_t pooled_height,
                        int64_t pooled_width);
void check_backward_args(const at::Tensor& grad, const at::Tensor& rois, int64_t pooled_height,
                         int64_t pooled_width, int64_t batch_size, int64_t channels, int64_t height,
                         int64_t width);

// Raises unless every rois[:, 0] is in [0, batch_size) (NaN and inf included). On a GPU this costs one device
// synchronisation (reading back one bool); the CPU kernels check while planning instead.
void check_batch_indices(const at::Tensor& rois, int64_t batch_size, const char* op);

// The kernels read/write NHWC memory when the input is channels_last and not also plain contiguous
// (a tensor with C == 1 or H == W == 1 is both; it is then treated as NCHW). The fake implementation in
// mrseg_kernels/ops.py applies the same rule.
bool use_channels_last(const at::Tensor& input);

// rois in the accumulation type of `input_dtype` (float for half types), contiguous.
at::Tensor rois_for_compute(const at::Tensor& rois, at::ScalarType input_dtype);

}  // namespace mrseg
