// Extending the registry: register your own kernel, then run a graph spec that
// names it, from C++. The same spec could come from a file (read_spec_file).
// Shown in docs/guide.md, "Extending the registry".
#include <iostream>
#include <string>

#include "flowpool/flowpool.hpp"

int main() {
  // A kernel with one parameter; it runs on up to N threads, so it keeps no shared state.
  flowpool::param_info times;
  times.name = "times";
  times.type = flowpool::param_type::integer;
  times.default_value = 2;
  times.help = "how many copies of the input";
  times.min = 1;
  times.max = 100;
  flowpool::registry::global().add_kernel(
      {"repeat", "repeats the input", {times}, [](const nlohmann::json& params) -> flowpool::kernel_fn {
         const int n = params["times"].get<int>();  // validated and defaulted already
         return [n](flowpool::item& it, flowpool::job_context&) {
           it.value.clear();
           for (int i = 0; i < n; ++i) it.value += it.input;
         };
       }});

  const nlohmann::json doc = nlohmann::json::parse(R"({
    "name": "repeat-demo",
    "source": {"type": "range", "count": 4},
    "stages": [{"name": "rep", "kernel": "repeat", "workers": 2, "params": {"times": 3}}],
    "sink": {"type": "print", "format": "{id}: {value}"},
    "options": {"ordered": true}
  })");

  try {
    const flowpool::graph_spec spec = flowpool::validate_spec(doc);
    flowpool::run_controls controls;
    controls.out = &std::cout;
    const flowpool::graph_report r = flowpool::run_graph(spec, controls);
    std::cout << "status: " << r.status << '\n';

    nlohmann::json bad = doc;
    bad["stages"][0]["params"]["times"] = 0;  // below the parameter's min
    (void)flowpool::validate_spec(bad);
  } catch (const flowpool::spec_error& e) {
    std::cout << "invalid spec: " << e.problems().at(0).path << '\n';
  }
  return 0;
}
