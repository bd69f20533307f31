// Op schemas (torch.ops.mrseg.*), argument checks and the Python module stub of mrseg_kernels._C.
//
// Importing mrseg_kernels._C runs the static registrations below and in the kernel files; autograd and the
// fake (meta) implementations are registered from Python in mrseg_kernels/ops.py.
#include <Python.h>

#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <climits>

#include "roi_align.h"

namespace mrseg {

void check_forward_args(const at::Tensor& input, const at::Tensor& rois, int64_t pooled_height,
                        int64_t pooled_width) {
  TORCH_CHECK(input.dim() == 4, "mrseg::roi_align: input must be a 4-D feature map [N, C, H, W], got shape ",
              input.sizes());
  TORCH_CHECK(rois.dim() == 2 && rois.size(1) == 5,
              "mrseg::roi_align: rois must be [K, 5] rows of (batch_index, x1, y1, x2, y2), got shape ",
              rois.sizes());
  TORCH_CHECK(at::isFloatingType(input.scalar_type()),
              "mrseg::roi_align: input must be float64, float32, float16 or bfloat16, got ", input.scalar_type());
  TORCH_CHECK(at::isFloatingType(rois.scalar_type()), "mrseg::roi_align: rois must be a floating tensor, got ",
              rois.scalar_type());
  TORCH_CHECK(input.device() == rois.device(), "mrseg::roi_align: input is on ", input.device(),
              " but rois are on ", rois.device(), "; move both to the same device");
  TORCH_CHECK(pooled_height > 0 && pooled_width > 0,
              "mrseg::roi_align: output_size must be positive, got (", pooled_height, ", ", pooled_width, ")");
  TORCH_CHECK(rois.size(0) == 0 || (input.size(2) > 0 && input.size(3) > 0),
              "mrseg::roi_align: the feature map is empty (H, W) = (", input.size(2), ", ", input.size(3),
              ") but ", rois.size(0), " RoIs were given");
  TORCH_CHECK(input.size(2) * input.size(3) < INT_MAX,
              "mrseg::roi_align: feature maps with H * W >= 2^31 are not supported");
}

void check_backward_args(const at::Tensor& grad, const at::Tensor& rois, int64_t pooled_height,
                         int64_t pooled_width, int64_t batch_size, int64_t channels, int64_t height,
                         int64_t width) {
  TORCH_CHECK(rois.dim() == 2 && rois.size(1) == 5,
              "mrseg::_roi_align_backward: rois must be [K, 5], got shape ", rois.sizes());
  TORCH_CHECK(grad.dim() == 4 && grad.size(0) == rois.size(0) && grad.size(1) == channels &&
                  grad.size(2) == pooled_height && grad.size(3) == pooled_width,
              "mrseg::_roi_align_backward: grad must be [K, C, pooled_height, pooled_width] = [", rois.size(0),
              ", ", channels, ", ", pooled_height, ", ", pooled_width, "], got ", grad.sizes());
  TORCH_CHECK(grad.device() == rois.device(), "mrseg::_roi_align_backward: grad is on ", grad.device(),
              " but rois are on ", rois.device());
  TORCH_CHECK(batch_size >= 0 && height >= 0 && width >= 0 && height * width < INT_MAX,
              "mrseg::_roi_align_backward: bad input shape [", batch_size, ", ", channels, ", ", height, ", ",
              width, "]");
  TORCH_CHECK(rois.size(0) == 0 || (height > 0 && width > 0),
              "mrseg::_roi_align_backward: the feature map is empty (H, W) = (", height, ", ", width, ") but ",
              rois.size(0), " RoIs were given");
}

void check_batch_indices(const at::Tensor& rois, int64_t batch_size, const char* op) {
  if (rois.size(0) == 0) return;
  const at::Tensor idx = rois.select(1, 0);
  // NaN fails both comparisons, so it is reported too.
  const at::Tensor ok = idx.ge(0).logical_and(idx.lt(static_cast<double>(batch_size)));
  if (ok.all().item<bool>()) return;
  const int64_t k = ok.logical_not().nonzero().select(1, 0)[0].item<int64_t>();
  TORCH_CHECK(false, op, ": rois[", k, ", 0] = ", idx[k].item<double>(),
              " is not a batch index of the input, which holds ", batch_size,
              " image(s); rois are [K, 5] rows of (batch_index, x1, y1, x2, y2) with 0 <= batch_index < N");
}

bool use_channels_last(const at::Tensor& input) {
  return input.is_contiguous(at::MemoryFormat::ChannelsLast) && !input.is_contiguous();
}

at::Tensor rois_for_compute(const at::Tensor& rois, at::ScalarType input_dtype) {
  return rois.to(at::toOpMathType(input_dtype)).contiguous();
}

TORCH_LIBRARY(mrseg, m) {
  m.def(
      "roi_align(Tensor input, Tensor rois, float spatial_scale, int pooled_height, int pooled_width, "
      "int sampling_ratio, bool aligned) -> Tensor");
  m.def(
      "_roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, int pooled_height, int pooled_width, "
      "int batch_size, int channels, int height, int width, int sampling_ratio, bool aligned, "
      "bool channels_last) -> Tensor");
}

}  // namespace mrseg

// mrseg_kernels._C is a plain module: the ops live in torch.ops.mrseg, and these functions report how it was built.
namespace {

PyObject* with_cuda(PyObject*, PyObject*) {
#ifdef MRSEG_WITH_CUDA
  Py_RETURN_TRUE;
#else
  Py_RETURN_FALSE;
#endif
}

PyObject* with_openmp(PyObject*, PyObject*) {
#ifdef _OPENMP
  Py_RETURN_TRUE;
#else
  Py_RETURN_FALSE;
#endif
}

PyMethodDef methods[] = {
    {"with_cuda", with_cuda, METH_NOARGS, "True when the CUDA kernels were compiled in."},
    {"with_openmp", with_openmp, METH_NOARGS, "True when the CPU kernels were compiled with OpenMP."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "mrseg compiled ops (registered in torch.ops.mrseg)", -1,
                      methods};

}  // namespace

PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&module); }
