// Graph specs from C++: validation, overrides, a user-registered kernel, multi-stage accounting.
#include <catch2/catch.hpp>

#include <cctype>
#include <sstream>

#include "flowpool/graph.hpp"

namespace {
nlohmann::json base_spec() {
  return nlohmann::json::parse(R"({
    "name": "t",
    "source": {"type": "range", "count": 50},
    "stages": [{"name": "a", "kernel": "spin", "workers": 2, "params": {"iterations": 100}}],
    "sink": {"type": "count"},
    "options": {"capacity": 4}
  })");
}
}  // namespace

TEST_CASE("validation fills defaults and reports every problem with its path", "[graph]") {
  auto g = flowpool::validate_spec(base_spec());
  CHECK(g.source_params["start"] == 1);
  CHECK(g.stages[0].workers == 2);
  CHECK(g.capacity == 4);

  auto doc = base_spec();
  doc["stages"][0]["workers"] = "two";
  doc["options"]["capactiy"] = 3;
  doc["sink"]["type"] = "prnt";
  try {
    (void)flowpool::validate_spec(doc);
    FAIL("expected spec_error");
  } catch (const flowpool::spec_error& e) {
    CHECK(e.code() == flowpool::errc::invalid_spec);
    REQUIRE(e.problems().size() == 3);
    CHECK(e.problems()[0].to_string() == "options.capactiy: unknown key (did you mean \"capacity\"?)");
    CHECK(e.problems()[1].to_string() == "stages[0].workers: must be a positive integer (at most 4096), got \"two\"");
    CHECK_THAT(e.problems()[2].to_string(), Catch::StartsWith("sink.type: unknown sink \"prnt\" (did you mean \"print\"?)"));
  }
}

TEST_CASE("durations and --set overrides", "[graph]") {
  using namespace std::chrono_literals;
  CHECK(flowpool::parse_duration("250ms") == 250ms);
  CHECK(flowpool::parse_duration("30s") == 30s);
  CHECK(flowpool::parse_duration("2m") == 120s);
  CHECK(flowpool::parse_duration("1.5s") == 1500ms);
  CHECK_FALSE(flowpool::parse_duration("30 s"));
  CHECK_FALSE(flowpool::parse_duration("-1s"));
  CHECK_FALSE(flowpool::parse_duration("s"));
  auto doc = base_spec();
  flowpool::apply_override(doc, "stages[0].workers=7");
  flowpool::apply_override(doc, "sink.format=x {id}");
  CHECK(doc["stages"][0]["workers"] == 7);
  CHECK(doc["sink"]["format"] == "x {id}");
  CHECK_THROWS_AS(flowpool::apply_override(doc, "stages[3].workers=1"), flowpool::spec_error);
  CHECK_THROWS_AS(flowpool::apply_override(doc, "novalue"), flowpool::spec_error);
}

TEST_CASE("a kernel registered from C++ runs in a multi-stage graph, and items are accounted", "[graph]") {
  flowpool::registry reg = flowpool::registry::global();  // a private copy with the built-ins
  reg.add_kernel({"upper", "upper-cases the value", {}, [](const nlohmann::json&) -> flowpool::kernel_fn {
                    return [](flowpool::item& it, flowpool::job_context&) {
                      it.value = "v" + it.input;
                      for (auto& c : it.value) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
                      if (it.id == 7) throw std::runtime_error("seven is unlucky");
                    };
                  }});
  CHECK_THROWS_AS(reg.add_kernel({"upper", "dup", {}, [](const nlohmann::json&) -> flowpool::kernel_fn { return {}; }}),
                  flowpool::error);
  auto doc = base_spec();
  doc["stages"].push_back({{"name", "b"}, {"kernel", "upper"}, {"workers", 3}});
  doc["sink"] = {{"type", "print"}, {"format", "{id}={value}"}};
  doc["options"]["ordered"] = true;
  const auto spec = flowpool::validate_spec(doc, reg);
  std::ostringstream out;
  flowpool::run_controls ctl;
  ctl.out = &out;
  const auto r = flowpool::run_graph(spec, ctl, reg);
  CHECK(r.status == "failed");
  CHECK(r.submitted == 50);
  CHECK(r.succeeded == 49);
  CHECK(r.failed == 1);
  REQUIRE(r.errors.size() == 1);
  CHECK(r.errors[0].job == 7);
  CHECK_THAT(r.errors[0].message, Catch::Contains("seven is unlucky"));
  std::istringstream lines(out.str());
  std::string line;
  int expect = 1;
  while (std::getline(lines, line)) {
    if (expect == 7) ++expect;  // the failed item leaves a gap; order holds around it
    CHECK(line == std::to_string(expect) + "=V" + std::to_string(expect));
    ++expect;
  }
  CHECK(expect == 51);
  CHECK(r.to_json()["stages"].size() == 2);
}
