// Specs from C++: the lossless byte escapes, parameter rules (param_info::check), unique stage
// names, exact integer limits, zero deadlines and the depth limit of --set.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <random>
#include <string>

#include "../src/util/text.hpp"
#include "flowpool/graph.hpp"

namespace {
nlohmann::json spec() {
  return nlohmann::json::parse(R"({
    "name": "t",
    "source": {"type": "range", "count": 5},
    "stages": [{"name": "a", "kernel": "spin", "workers": 1, "params": {"iterations": 1}}],
    "sink": {"type": "count"}
  })");
}

std::string problems_of(const nlohmann::json& doc, const flowpool::registry& reg = flowpool::registry::global()) {
  try {
    (void)flowpool::validate_spec(doc, reg);
  } catch (const flowpool::spec_error& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST_CASE("escape_bytes keeps UTF-8 and round-trips any bytes", "[graph]") {
  using flowpool::detail::escape_bytes;
  using flowpool::detail::unescape_bytes;
  CHECK(escape_bytes("plain/caf\xc3\xa9") == "plain/caf\xc3\xa9");
  CHECK(escape_bytes("back\\slash") == "back\\slash");  // valid, no \x: as it is
  CHECK(escape_bytes("/tmp/x\xff") == "/tmp/x\\xff");
  CHECK(escape_bytes("a\\xff") == "a\\\\xff");               // the two characters \x: escaped
  CHECK(escape_bytes("\xed\xa0\x80") == "\\xed\\xa0\\x80");  // a surrogate is not UTF-8
  CHECK(escape_bytes("\xc0\xaf") == "\\xc0\\xaf");           // nor an overlong form
  const char* env = std::getenv("FLOWPOOL_TEST_SEED");
  const unsigned seed = env != nullptr ? static_cast<unsigned>(std::strtoul(env, nullptr, 10)) : std::random_device{}();
  INFO("FLOWPOOL_TEST_SEED=" << seed);
  std::mt19937 rng(seed);
  const std::string alphabet = "ab\\x\xc3\xa9\xff\xe9\xf0\x9f\x98\x80";
  for (int i = 0; i < 2000; ++i) {
    std::string s;
    const auto n = rng() % 12;
    for (unsigned k = 0; k < n; ++k) s += alphabet[rng() % alphabet.size()];
    const std::string e = escape_bytes(s);
    REQUIRE(flowpool::detail::is_valid_utf8(e));
    REQUIRE(unescape_bytes(e) == s);
    REQUIRE_NOTHROW(nlohmann::json(e).dump());
  }
}

TEST_CASE("parameter rules run at validation, with the parameter's path", "[graph]") {
  auto doc = spec();
  doc["stages"][0] = {{"name", "f"}, {"kernel", "fail"}, {"params", {{"ids", {"x", 3, "4", 0}}}}};
  const std::string p = problems_of(doc);
  CHECK_THAT(p, Catch::Contains("stages[0].params.ids[0]: must be an item id"));
  CHECK_THAT(p, Catch::Contains("stages[0].params.ids[3]: must be an item id"));
  CHECK_THAT(p, !Catch::Contains("ids[1]") && !Catch::Contains("ids[2]"));

  doc = spec();
  doc["sink"] = {{"type", "print"}, {"format", "{id} {idd}"}};
  CHECK_THAT(problems_of(doc), Catch::Contains("sink.format: unknown placeholder \"{idd}\""));

  doc = spec();
  doc["stages"][0] = {{"kernel", "exec"}, {"params", {{"argv", nlohmann::json::array()}}}};
  CHECK_THAT(problems_of(doc), Catch::Contains("stages[0].params.argv: must name a command"));
  doc["stages"][0]["params"] = {{"argv", {"echo", "x"}}, {"shell", true}};
  CHECK_THAT(problems_of(doc), Catch::Contains("stages[0].params.argv: with shell: true"));

  // A user's rule, with a sub-path.
  flowpool::registry reg = flowpool::registry::global();
  flowpool::param_info word;
  word.name = "word";
  word.type = flowpool::param_type::string;
  word.default_value = "ok";
  word.help = "a word";
  word.check = [](const nlohmann::json& v, const nlohmann::json& all, const auto& problem) {
    if (v.get<std::string>().find(' ') != std::string::npos) problem("", "must be one word");
    if (!all.contains("word")) problem("x", "not complete");
  };
  reg.add_kernel({"word", "a word", {word}, [](const nlohmann::json&) -> flowpool::kernel_fn { return {}; }});
  doc = spec();
  doc["stages"][0] = {{"kernel", "word"}, {"params", {{"word", "two words"}}}};
  CHECK(problems_of(doc, reg) == "stages[0].params.word: must be one word");
  doc["stages"][0]["params"]["word"] = "one";
  CHECK(problems_of(doc, reg).empty());
}

TEST_CASE("stage names are unique, limits exact, deadlines above zero", "[graph]") {
  auto doc = spec();
  doc["stages"].push_back(doc["stages"][0]);
  CHECK_THAT(problems_of(doc), Catch::Contains("stages[1].name: duplicate stage name \"a\" (stages[0] has it too)"));
  doc = spec();
  doc["stages"][0].erase("name");
  doc["stages"].push_back({{"name", "stage0"}, {"kernel", "spin"}});
  CHECK_THAT(problems_of(doc), Catch::Contains("stages[1].name: duplicate stage name \"stage0\""));

  doc = spec();
  doc["source"]["count"] = 4000000000000000001ULL;
  CHECK_THAT(problems_of(doc), Catch::Contains("source.count: must be an integer from 0 to 4000000000000000000"));
  doc["source"]["count"] = 4000000000000000000ULL;
  CHECK(problems_of(doc).empty());
  doc["source"]["count"] = 18446744073709551615ULL;
  CHECK_THAT(problems_of(doc), Catch::Contains("source.count: must be an integer"));

  doc = spec();
  doc["options"] = {{"timeout", "0s"}, {"job_timeout", "0ms"}};
  const std::string p = problems_of(doc);
  CHECK_THAT(p, Catch::Contains("options.timeout: must be greater than 0"));
  CHECK_THAT(p, Catch::Contains("options.job_timeout: must be greater than 0"));
}

TEST_CASE("overrides (--set) hold the document to the depth limit", "[graph]") {
  auto doc = spec();
  const std::string deep = std::string(60000, '[') + std::string(60000, ']');
  CHECK_THROWS_WITH(flowpool::apply_override(doc, "source.count=" + deep),
                    Catch::Contains("nested deeper than 64 levels"));
  CHECK_THROWS_AS(flowpool::apply_override(doc, "description" + std::string(200, '.') + "=1"), flowpool::spec_error);
  std::string path = "description";
  for (int i = 0; i < 70; ++i) path += ".a";
  CHECK_THROWS_WITH(flowpool::apply_override(doc, path + "=1"), Catch::Contains("nested deeper than 64 levels"));
  flowpool::apply_override(doc, "stages[0].params.iterations=[[[1]]]");
  CHECK(doc["stages"][0]["params"]["iterations"].dump() == "[[[1]]]");
}
