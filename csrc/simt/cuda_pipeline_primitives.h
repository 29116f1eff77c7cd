// Shadows the toolkit's <cuda_pipeline_primitives.h> in the emulated build (csrc/simt comes
// first on its include path): the same three primitives, emulated by async_copy.h.
#pragma once
#include "simt.h"
