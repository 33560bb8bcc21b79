// fastdecode._C: build information only. Loading this library runs the static
// TORCH_LIBRARY registrations in the other translation units; the ops themselves are reached
// through torch.ops.fastdecode.*. `import torch` must come first (it loads libtorch).
#include <pybind11/pybind11.h>

#include <iterator>
#include <stdexcept>
#include <string>

#include "cpu/linear_kind.h"
#include "cpu/parallel.h"
#include "kernels/gguf_blocks.h"
#include "kernels/int4_layout.h"
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
        "The ISA path the kernels use in this process (FASTDECODE_ISA or the CPU's best)");
  m.def("supported_isas", &fastdecode::kernels::supported_isas,
        "The ISA paths this CPU and build can run, best first, comma separated");
  m.def("isa_override_error", &fastdecode::kernels::isa_override_error,
        "Why FASTDECODE_ISA was refused, or an empty string");
  m.attr("quantized_gemv_max_rows") = fastdecode::kernels::kQuantizedGemvMaxRows;
  m.attr("int4_tile_rows") = fastdecode::kernels::kInt4TileRows;
  py::tuple groupsizes(std::size(fastdecode::kernels::kInt4GroupSizes));
  for (size_t i = 0; i < groupsizes.size(); ++i) {
    groupsizes[i] = fastdecode::kernels::kInt4GroupSizes[i];
  }
  m.attr("int4_groupsizes") = groupsizes;
  py::dict block_bytes;  // GGUF type name -> bytes per 32-value block (gguf_file.py reads it)
  block_bytes["Q4_0"] = fastdecode::kernels::gguf_block_bytes(fastdecode::kernels::kGgufQ4_0);
  block_bytes["Q4_1"] = fastdecode::kernels::gguf_block_bytes(fastdecode::kernels::kGgufQ4_1);
  block_bytes["Q8_0"] = fastdecode::kernels::gguf_block_bytes(fastdecode::kernels::kGgufQ8_0);
  m.attr("gguf_block_bytes") = block_bytes;
  py::dict kinds;
  kinds["FLOAT32"] = static_cast<int64_t>(fastdecode::cpu::kFloat32);
  kinds["INT8"] = static_cast<int64_t>(fastdecode::cpu::kInt8);
  kinds["INT4"] = static_cast<int64_t>(fastdecode::cpu::kInt4);
  m.attr("linear_kinds") = kinds;
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
