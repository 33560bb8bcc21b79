// fastdecode._C: build information only. Loading this library runs the static
// TORCH_LIBRARY registrations in the other translation units; the ops themselves are reached
// through torch.ops.fastdecode.*. `import torch` must come first (it loads libtorch).
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>

#include "cpu/parallel.h"
#include "kernels/qgemv.h"
#include "kernels/simd.h"

#ifndef FASTDECODE_VERSION
#define FASTDECODE_VERSION "0.0.0"
#endif

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastdecode native library (custom ops live in torch.ops.fastdecode)";
  m.attr("__version__") = FASTDECODE_VERSION;
#ifdef FASTDECODE_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
  m.def("compiled_isas", &fastdecode::kernels::compiled_isas,
        "Vector ISA paths compiled into the kernels, comma separated");
  m.def("active_isa", &fastdecode::kernels::active_isa,
        "The ISA path the kernels use on this CPU");
  m.attr("quantized_gemv_max_rows") = fastdecode::kernels::kQuantizedGemvMaxRows;
  m.def(
      "set_parallel_loop",
      [](const std::string& kind) {
        if (kind != "dynamic" && kind != "openmp") {
          throw std::invalid_argument("parallel loop must be 'dynamic' or 'openmp', got '" +
                                      kind + "'");
        }
        fastdecode::cpu::use_openmp_loop().store(kind == "openmp");
      },
      "The decode path's parallel loop: 'dynamic' (default: chunks claimed by whichever "
      "thread runs) or 'openmp' (at::parallel_for), for side-by-side measurements");
}
