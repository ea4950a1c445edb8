// Compiled per-token kernels: the recurrent step (rnn.h, mingru.h), draws (draw.h), runs of the
// two (runs.h), a neural cache's sampled token (cache.h), a Kneser-Ney chain's rows (chain.h), a
// mixed run's tokens drawn ahead (mixed.h) and the int8 products of a step that runs in Python
// (products.h: a Transformer's). They make the ATen operations the Python path makes, in
// the same order on the same shapes, except where a plain loop or one operation gives the same
// numbers with fewer calls (an LSTM cell's products and sums, a draw's running sum and its uniform
// number, one buffer for an int8 product's input, a minGRU row's scaling around its int8 product,
// the chain's recursion in double precision as numpy computes it), so every number is the same bit
// for bit (tests/native/ compares them). What they save is the Python and the per-operation dispatch
// between the arithmetic, a large share of one stream's token (benchmarks/RESULTS.md).
#include <torch/csrc/utils/pybind.h>

#include "cache.h"
#include "chain.h"
#include "draw.h"
#include "helper.h"
#include "mixed.h"
#include "mingru.h"
#include "products.h"
#include "rnn.h"
#include "runs.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  py::class_<RnnStep>(m, "RnnStep")
      .def(py::init<const std::string&, at::Tensor, const py::list&, const py::object&>())
      .def("__call__", &RnnStep::operator(), py::call_guard<py::gil_scoped_release>());
  py::class_<MinGruStep>(m, "MinGruStep")
      .def(py::init<at::Tensor, const py::list&, const py::object&, const py::object&, const py::object&>())
      .def("__call__", &MinGruStep::operator(), py::call_guard<py::gil_scoped_release>());
  py::class_<ChainRows>(m, "ChainRows")
      .def(py::init<const py::list&, const at::Tensor&, int64_t>())
      .def("__call__", &ChainRows::operator(), py::call_guard<py::gil_scoped_release>());
  py::class_<MixSpec>(m, "MixSpec").def(py::init<py::object, double, double, const py::object&>());
  m.def("plain_draw", &plain_draw);
  m.def("draw_rows", &draw_rows, py::call_guard<py::gil_scoped_release>());
  m.def("uniforms", &uniforms);
  m.def("split_products", [] { return Helper::get().splits.load(); });
  m.def("product", [](const py::object& spec, const at::Tensor& x, bool split) {  // one product, for the tests
    return make_op(spec)({x}, split ? &Helper::get() : nullptr);
  });
  // one int8 product for a step that runs in Python (a Transformer's): Int8Matmul.__call__'s numbers
  py::class_<Op>(m, "Product")
      .def(py::init(&make_op))
      .def("__call__", [](const Op& op, const at::Tensor& x) { return op({x}); }, py::call_guard<py::gil_scoped_release>());
  m.def("run_plain", &run_plain<RnnStep>);
  m.def("run_plain", &run_plain<MinGruStep>);
  m.def("run_mixed", &run_mixed<RnnStep>);
  m.def("run_mixed", &run_mixed<MinGruStep>);
  m.def("read_mixed", &read_mixed<RnnStep>);
  m.def("read_mixed", &read_mixed<MinGruStep>);
  m.def("run_rows", &run_rows<RnnStep>);
  m.def("run_rows", &run_rows<MinGruStep>);
  m.def("read", &read_rnn);
  m.def("read", &read_mingru);
  m.def("cache_sample", &cache_sample);
}
