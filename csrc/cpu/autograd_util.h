// Helpers of the C++ autograd kernels (cpu/batch_norm_autograd.cpp, cpu/conv2d_autograd.cpp),
// registered for every device under the Autograd key.
#pragma once
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/Tensor.h>
#include <c10/core/GradMode.h>

#include <initializer_list>
#include <optional>

namespace fastconv::autograd {

using OptTensor = std::optional<at::Tensor>;

inline bool given(const OptTensor& t) { return t.has_value() && t->defined(); }

// The op `name` ("fastconv::...") with its C++ signature, for calls through the dispatcher.
template <typename Sig>
c10::TypedOperatorHandle<Sig> typed_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Sig>();
}

// Whether a call records a graph: grad mode on and a differentiable input that requires grad.
// Otherwise the op runs directly below autograd, as Function::apply would run it, without the
// graph node, saved tensors and saved_data it builds even when nothing requires grad (a fixed
// cost that small layers feel in inference and no_grad evaluation).
inline bool records_graph(std::initializer_list<const at::Tensor*> tensors,
                          std::initializer_list<const OptTensor*> optional = {}) {
  if (!at::GradMode::is_enabled()) return false;
  for (const at::Tensor* t : tensors) {
    if (t->requires_grad()) return true;
  }
  for (const OptTensor* t : optional) {
    if (given(*t) && (*t)->requires_grad()) return true;
  }
  return false;
}

}  // namespace fastconv::autograd
