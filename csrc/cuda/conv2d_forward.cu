// The nvcc kernels of the convolution's forward pass (conv2d) for every storage type, in a
// translation unit of their own (see cuda/launch/conv2d_passes.h). ATen-free.
#include "cuda/launch/conv2d_passes.h"

namespace fastconv {
namespace FC_KERNEL_NS {

FC_CONV_STORAGE_TYPES(FC_CONV2D_FORWARD_INSTANCE)

}  // namespace FC_KERNEL_NS
}  // namespace fastconv
