// Graph specs from C++: validation, overrides, a user-registered kernel, multi-stage accounting.
#include <catch2/catch.hpp>

#include <atomic>
#include <cctype>
#include <chrono>
#include <sstream>
#include <thread>

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

// Validates and runs `doc` with `reg`; what the sink writes goes to `out`.
flowpool::graph_report run_capturing(const nlohmann::json& doc, const flowpool::registry& reg, std::string& out) {
  const auto spec = flowpool::validate_spec(doc, reg);
  std::ostringstream sink_out;
  flowpool::run_controls ctl;
  ctl.out = &sink_out;
  auto r = flowpool::run_graph(spec, ctl, reg);
  out = sink_out.str();
  return r;
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
  std::string out;
  const auto r = run_capturing(doc, reg, out);
  CHECK(r.status == "failed");
  CHECK(r.submitted == 50);
  CHECK(r.succeeded == 49);
  CHECK(r.failed == 1);
  REQUIRE(r.errors.size() == 1);
  CHECK(r.errors[0].job == 7);
  CHECK_THAT(r.errors[0].message, Catch::Contains("seven is unlucky"));
  std::istringstream lines(out);
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

TEST_CASE("a retried item comes back to its kernel as it came, and the last attempt moves it on", "[graph]") {
  // The kernel appends to the value, then fails the first attempt of every item:
  // only a kernel run on a copy (an attempt that may be retried) keeps the retry
  // from seeing the first attempt's append.
  flowpool::registry reg = flowpool::registry::global();
  reg.add_kernel(
      {"append-then-fail", "appends '+', fails attempt 1", {}, [](const nlohmann::json&) -> flowpool::kernel_fn {
         return [](flowpool::item& it, flowpool::job_context& ctx) {
           it.value += "+";
           if (ctx.attempt() == 1) throw std::runtime_error("first attempt");
         };
       }});
  for (const int stages : {1, 3}) {
    CAPTURE(stages);
    auto doc = base_spec();
    doc["stages"] = nlohmann::json::array();
    for (int k = 0; k < stages; ++k) {
      doc["stages"].push_back({{"name", "s" + std::to_string(k)}, {"kernel", "append-then-fail"}, {"workers", 2}});
    }
    doc["sink"] = {{"type", "print"}, {"format", "{id}={value}"}};
    doc["options"]["ordered"] = true;
    doc["options"]["retries"] = 1;
    doc["options"]["backoff"] = "1ms";
    std::string out;
    const auto r = run_capturing(doc, reg, out);
    CHECK(r.status == "ok");
    CHECK(r.succeeded == 50);
    CHECK(r.retried == static_cast<std::uint64_t>(50 * stages));
    std::istringstream lines(out);
    std::string line;
    int expect = 1;
    while (std::getline(lines, line)) {
      CHECK(line == std::to_string(expect) + "=" + std::string(static_cast<std::size_t>(stages), '+'));
      ++expect;
    }
    CHECK(expect == 51);
  }
}

namespace {
// A source that, like a pipe, has its next item only once the previous one came out
// of the sink: a runner that read ahead of it would wait forever (here: 5 s, then the
// source fails the run).
class lockstep_source final : public flowpool::source {
 public:
  lockstep_source(std::uint64_t count, std::atomic<std::uint64_t>& consumed) : count_(count), consumed_(consumed) {}
  std::optional<flowpool::item> next() override {
    if (n_ == count_) return std::nullopt;
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (consumed_.load() < n_) {
      if (std::chrono::steady_clock::now() > give_up) {
        throw flowpool::error(flowpool::errc::io, "item " + std::to_string(n_) + " never reached the sink");
      }
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
    flowpool::item it;
    it.id = ++n_;
    it.input = std::to_string(n_);
    return it;
  }

 private:
  std::uint64_t count_;
  std::uint64_t n_ = 0;
  std::atomic<std::uint64_t>& consumed_;
};

class counting_sink final : public flowpool::sink {
 public:
  explicit counting_sink(std::atomic<std::uint64_t>& consumed) : consumed_(consumed) {}
  void consume(flowpool::item&&) override { consumed_.fetch_add(1); }

 private:
  std::atomic<std::uint64_t>& consumed_;
};
}  // namespace

TEST_CASE("a source that does not read ahead has each item handed on before its next() is called", "[graph]") {
  std::atomic<std::uint64_t> consumed{0};
  flowpool::registry reg = flowpool::registry::global();
  reg.add_source(
      {"lockstep", "one item at a time", {}, [&](const nlohmann::json&) -> std::unique_ptr<flowpool::source> {
         return std::make_unique<lockstep_source>(200, consumed);
       }});
  reg.add_sink({"counting",
                "counts into an atomic",
                {},
                [&](const nlohmann::json&, const flowpool::sink_env&) -> std::unique_ptr<flowpool::sink> {
                  return std::make_unique<counting_sink>(consumed);
                }});
  const int stages = GENERATE(1, 2);
  CAPTURE(stages);
  auto doc = base_spec();
  doc["source"] = {{"type", "lockstep"}};
  doc["sink"] = {{"type", "counting"}};
  if (stages == 2) doc["stages"].push_back({{"name", "b"}, {"kernel", "spin"}, {"workers", 1}});
  const auto spec = flowpool::validate_spec(doc, reg);
  flowpool::run_controls ctl;
  const auto r = flowpool::run_graph(spec, ctl, reg);
  CHECK(r.status == "ok");
  CHECK(r.succeeded == 200);
  CHECK(consumed.load() == 200);
}

TEST_CASE("a failure in the last stage stops every stage and the source at once", "[graph]") {
  // fail-fast on item 300 of 100000: the run stops with items read ahead of stage 0
  // and items in every queue; each submitted item still ends in one state.
  flowpool::registry reg = flowpool::registry::global();
  reg.add_kernel({"fail-300", "fails item 300", {}, [](const nlohmann::json&) -> flowpool::kernel_fn {
                    return [](flowpool::item& it, flowpool::job_context&) {
                      if (it.id == 300) throw std::runtime_error("item 300");
                    };
                  }});
  const int stages = GENERATE(1, 3);
  CAPTURE(stages);
  auto doc = base_spec();
  doc["source"]["count"] = 100000;
  doc["stages"] = nlohmann::json::array();
  for (int k = 0; k < stages; ++k) {
    doc["stages"].push_back(
        {{"name", "s" + std::to_string(k)},
         {"kernel", k + 1 == stages ? "fail-300" : "spin"},
         {"workers", 2},
         {"params", k + 1 == stages ? nlohmann::json::object() : nlohmann::json{{"iterations", 1000}}}});
  }
  doc["options"]["on_error"] = "fail_fast";
  doc["options"]["capacity"] = 16;
  const auto spec = flowpool::validate_spec(doc, reg);
  flowpool::run_controls ctl;
  const auto r = flowpool::run_graph(spec, ctl, reg);
  CHECK(r.status == "failed");
  CHECK(r.failed == 1);
  REQUIRE(r.errors.size() == 1);
  CHECK(r.errors[0].job == 300);  // the item's own id, from every stage's engine
  CHECK(r.submitted == r.succeeded + r.failed + r.cancelled);
  // The failure stops every stage at once, the source included: before, a stage
  // that stopped itself told the others only in wait(), so stage 0 ran all 100000.
  CHECK(r.submitted < 100000);
}
