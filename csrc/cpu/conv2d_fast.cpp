// Placeholder for the hand-written fp32 CPU convolution kernels (interface and contract in
// cpu/conv2d_fast.h): until they land, every case goes to the generic kernels.
#include "cpu/conv2d_fast.h"

namespace fastconv::cpu {

bool conv2d_forward_fast(const ConvGeometry&, const at::Tensor&, const at::Tensor&,
                         const at::Tensor&, at::Tensor&) {
  return false;
}
bool conv2d_input_grad_fast(const ConvGeometry&, const at::Tensor&, const at::Tensor&,
                            at::Tensor&) {
  return false;
}
bool conv2d_weight_grad_fast(const ConvGeometry&, const at::Tensor&, const at::Tensor&,
                             at::Tensor&) {
  return false;
}

}  // namespace fastconv::cpu
