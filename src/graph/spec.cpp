// Graph specs: reading, overrides, validation with JSON paths, durations, DOT.
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>
#include <system_error>

#include "../util/text.hpp"
#include "flowpool/graph.hpp"

namespace flowpool {
namespace {

constexpr int kMaxDepth = 64;
constexpr std::uintmax_t kMaxSpecBytes = 4U * 1024U * 1024U;

std::string join_problems(const std::vector<spec_problem>& problems) {
  std::string s;
  for (const auto& p : problems) {
    if (!s.empty()) s += '\n';
    s += p.to_string();
  }
  return s;
}

[[noreturn]] void fail(std::string path, std::string message) {
  throw spec_error({spec_problem{std::move(path), std::move(message)}});
}

// A compact, bounded rendering of a JSON value for messages: got "two", got -3. Bytes that
// are not UTF-8 are shown with the lossless escapes of detail::escape_bytes.
std::string shown(const nlohmann::json& v) {
  std::string s = detail::dump_escaped(v);
  if (s.size() > 40) s = s.substr(0, 37) + "...";
  return s;
}

std::size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t sub = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string did_you_mean(const std::string& word, const std::vector<std::string>& candidates) {
  std::string best;
  std::size_t best_d = 3;  // suggest only close matches
  for (const auto& c : candidates) {
    const std::size_t d = edit_distance(word, c);
    if (d < best_d) {
      best_d = d;
      best = c;
    }
  }
  return best.empty() ? "" : " (did you mean \"" + best + "\"?)";
}

std::string join_path(const std::string& base, const std::string& key) { return base.empty() ? key : base + "." + key; }

// Parses JSON text whose nesting must stay within `max_depth` levels: the callback stops
// the parser before a hostile document can exhaust the stack of the code that walks it.
nlohmann::json parse_bounded(const std::string& text, int max_depth) {
  return nlohmann::json::parse(text, [max_depth](int depth, nlohmann::json::parse_event_t, nlohmann::json&) {
    if (depth > max_depth) {
      throw spec_error({spec_problem{"", "JSON nested deeper than " + std::to_string(kMaxDepth) + " levels"}});
    }
    return true;
  });
}

// A double bound of a param_info, as the integer range it allows (exact comparisons:
// 4000000000000000001 is above 4.0e18 even though it rounds to it as a double).
std::int64_t integer_bound(double d, bool lower) {
  constexpr double two63 = 9223372036854775808.0;
  if (std::isnan(d)) return lower ? std::numeric_limits<std::int64_t>::max() : std::numeric_limits<std::int64_t>::min();
  if (d >= two63) return std::numeric_limits<std::int64_t>::max();
  if (d < -two63) return std::numeric_limits<std::int64_t>::min();
  return static_cast<std::int64_t>(lower ? std::ceil(d) : std::floor(d));
}

class validator {
 public:
  explicit validator(const registry& reg) : reg_(reg) {}

  graph_spec run(const nlohmann::json& doc) {
    graph_spec g;
    if (!doc.is_object()) {
      add("", "the spec must be a JSON object, got " + std::string(doc.type_name()));
      finish();
    }
    check_keys(doc, "", {"name", "description", "source", "stages", "sink", "options"});
    if (auto it = doc.find("name"); it != doc.end()) {
      if (!it->is_string() || it->get<std::string>().empty()) {
        add("name", "must be a non-empty string, got " + shown(*it));
      } else if (!detail::is_valid_utf8(it->get<std::string>())) {
        add("name", "must be valid UTF-8 text (it names the graph in reports and metrics), got " + shown(*it));
      } else {
        g.name = it->get<std::string>();
      }
    } else {
      g.name = "graph";
    }
    if (auto it = doc.find("description"); it != doc.end() && !it->is_string()) {
      add("description", "must be a string, got " + shown(*it));
    }
    if (auto it = doc.find("options"); it != doc.end()) options(*it, g);
    source(doc, g);
    stages(doc, g);
    sink(doc, g);
    finish();
    return g;
  }

 private:
  void add(std::string path, std::string message) { problems_.push_back({std::move(path), std::move(message)}); }
  void finish() {
    if (!problems_.empty()) throw spec_error(problems_);
  }

  void check_keys(const nlohmann::json& obj, const std::string& path, const std::vector<std::string>& allowed) {
    for (const auto& [key, value] : obj.items()) {
      if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
        add(join_path(path, key), "unknown key" + did_you_mean(key, allowed));
      }
    }
  }

  std::optional<std::int64_t> integer(const nlohmann::json& v, const std::string& path, std::int64_t min,
                                      std::int64_t max, const char* what) {
    if (!v.is_number_integer() || v.get<std::int64_t>() < min || v.get<std::int64_t>() > max ||
        (v.is_number_unsigned() && v.get<std::uint64_t>() > static_cast<std::uint64_t>(max))) {
      add(path, std::string("must be ") + what + ", got " + shown(v));
      return std::nullopt;
    }
    return v.get<std::int64_t>();
  }

  std::optional<std::chrono::nanoseconds> duration(const nlohmann::json& v, const std::string& path) {
    if (v.is_string()) {
      if (auto d = parse_duration(v.get<std::string>())) return d;
    }
    add(path, "must be a duration such as \"250ms\", \"30s\" or \"2m\", got " + shown(v));
    return std::nullopt;
  }

  // A deadline: a duration above zero ("0s" would silently mean no deadline at all).
  std::optional<std::chrono::nanoseconds> deadline(const nlohmann::json& v, const std::string& path) {
    auto d = duration(v, path);
    if (d && d->count() <= 0) {
      add(path, "must be greater than 0 (leave it out for no deadline), got " + shown(v));
      return std::nullopt;
    }
    return d;
  }

  void options(const nlohmann::json& o, graph_spec& g) {
    if (!o.is_object()) {
      add("options", "must be an object, got " + shown(o));
      return;
    }
    check_keys(o, "options",
               {"capacity", "ordered", "retries", "backoff", "on_error", "max_failures", "timeout", "job_timeout"});
    if (auto it = o.find("capacity"); it != o.end()) {
      if (auto v = integer(*it, "options.capacity", 1, 100'000'000, "a positive integer up to 100000000")) {
        g.capacity = static_cast<std::ptrdiff_t>(*v);
      }
    }
    if (auto it = o.find("ordered"); it != o.end()) {
      if (!it->is_boolean()) {
        add("options.ordered", "must be true or false, got " + shown(*it));
      } else {
        g.ordered = it->get<bool>();
      }
    }
    if (auto it = o.find("retries"); it != o.end()) {
      if (auto v = integer(*it, "options.retries", 0, 1000, "an integer from 0 to 1000")) {
        g.retries = static_cast<std::uint32_t>(*v);
      }
    }
    if (auto it = o.find("backoff"); it != o.end()) {
      if (auto d = duration(*it, "options.backoff")) g.backoff = *d;
    }
    if (auto it = o.find("on_error"); it != o.end()) {
      if (*it == "collect") {
        g.on_error = error_policy::collect;
      } else if (*it == "fail_fast") {
        g.on_error = error_policy::fail_fast;
      } else {
        add("options.on_error", "must be \"collect\" or \"fail_fast\", got " + shown(*it));
      }
    }
    if (auto it = o.find("max_failures"); it != o.end()) {
      if (auto v = integer(*it, "options.max_failures", 0, std::int64_t{1} << 53, "a non-negative integer")) {
        g.max_failures = static_cast<std::uint64_t>(*v);
      }
    }
    if (auto it = o.find("timeout"); it != o.end()) {
      if (auto d = deadline(*it, "options.timeout")) g.timeout = *d;
    }
    if (auto it = o.find("job_timeout"); it != o.end()) {
      if (auto d = deadline(*it, "options.job_timeout")) g.job_timeout = *d;
    }
  }

  // Validates `params` (an object) against a parameter table and fills defaults.
  nlohmann::json params(const nlohmann::json& obj, const std::string& path, const std::vector<param_info>& table,
                        const std::vector<std::string>& reserved) {
    nlohmann::json out = nlohmann::json::object();
    const std::size_t problems_before = problems_.size();
    std::vector<std::string> names;
    for (const auto& p : table) names.push_back(p.name);
    for (const auto& [key, value] : obj.items()) {
      if (std::find(reserved.begin(), reserved.end(), key) != reserved.end()) continue;
      if (std::find(names.begin(), names.end(), key) == names.end()) {
        std::vector<std::string> all = names;
        all.insert(all.end(), reserved.begin(), reserved.end());
        add(join_path(path, key), "unknown parameter" + did_you_mean(key, all));
      }
    }
    for (const auto& p : table) {
      const std::string at = join_path(path, p.name);
      auto it = obj.find(p.name);
      if (it == obj.end()) {
        if (p.default_value.is_null()) {
          add(at, "is required (" + to_string(p.type) + ": " + p.help + ")");
        } else {
          out[p.name] = p.default_value;
        }
        continue;
      }
      const nlohmann::json& v = *it;
      switch (p.type) {
        case param_type::integer: {
          const std::int64_t lo = integer_bound(p.min, true), hi = integer_bound(p.max, false);
          bool ok = v.is_number_integer();
          if (ok && v.is_number_unsigned()) {
            const auto u = v.get<std::uint64_t>();
            ok = u <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) &&
                 static_cast<std::int64_t>(u) >= lo && static_cast<std::int64_t>(u) <= hi;
          } else if (ok) {
            ok = v.get<std::int64_t>() >= lo && v.get<std::int64_t>() <= hi;
          }
          if (!ok) {
            std::ostringstream m;
            m << "must be an integer from " << lo << " to " << hi << ", got " << shown(v);
            add(at, m.str());
          } else {
            out[p.name] = v;
          }
          break;
        }
        case param_type::number: {
          const bool ok = v.is_number() && std::isfinite(v.get<double>()) && v.get<double>() >= p.min &&
                          v.get<double>() <= p.max;
          if (!ok) {
            std::ostringstream m;
            m << "must be a number from " << p.min << " to " << p.max << ", got " << shown(v);
            add(at, m.str());
          } else {
            out[p.name] = v;
          }
          break;
        }
        case param_type::boolean:
          if (!v.is_boolean()) {
            add(at, "must be true or false, got " + shown(v));
          } else {
            out[p.name] = v;
          }
          break;
        case param_type::duration:
          if (auto d = duration(v, at)) out[p.name] = v;
          break;
        case param_type::string:
          if (!v.is_string()) {
            add(at, "must be a string, got " + shown(v));
          } else if (!p.choices.empty() &&
                     std::find(p.choices.begin(), p.choices.end(), v.get<std::string>()) == p.choices.end()) {
            std::string list;
            for (const auto& c : p.choices) list += (list.empty() ? "\"" : ", \"") + c + "\"";
            add(at, "must be one of " + list + ", got " + shown(v) + did_you_mean(v.get<std::string>(), p.choices));
          } else {
            out[p.name] = v;
          }
          break;
        case param_type::string_list: {
          bool ok = v.is_array() && v.size() <= 4096;
          if (ok) {
            for (const auto& e : v) ok = ok && (e.is_string() || e.is_number_integer());
          }
          if (!ok) {
            add(at, "must be an array of strings or integers (at most 4096), got " + shown(v));
          } else {
            out[p.name] = v;
          }
          break;
        }
      }
    }
    // The parameters' own rules (param_info::check), once every type is right, so that
    // `validate` finds everything the `make` functions would refuse.
    if (problems_.size() == problems_before) {
      for (const auto& p : table) {
        if (!p.check || !out.contains(p.name)) continue;
        const std::string at = join_path(path, p.name);
        const auto problem = [&](const std::string& where, const std::string& message) {
          add(where.empty() || where.front() == '[' ? at + where : join_path(at, where), message);
        };
        try {
          p.check(out[p.name], out, problem);
        } catch (const std::exception& e) {
          add(at, std::string("cannot be checked: ") + e.what());
        }
      }
    }
    return out;
  }

  template <class Info>
  const Info* lookup(const nlohmann::json& obj, const std::string& path, const char* key, const char* what,
                     const std::map<std::string, Info>& table) {
    auto it = obj.find(key);
    if (it == obj.end()) {
      add(join_path(path, key), std::string("is required: the ") + what + " to use");
      return nullptr;
    }
    if (!it->is_string()) {
      add(join_path(path, key), std::string("must be a string naming a ") + what + ", got " + shown(*it));
      return nullptr;
    }
    const std::string name = it->get<std::string>();
    auto found = table.find(name);
    if (found == table.end()) {
      std::vector<std::string> names;
      for (const auto& [n, info] : table) names.push_back(n);
      add(join_path(path, key), std::string("unknown ") + what + " \"" + name + "\"" + did_you_mean(name, names) +
                                    " (see `flowpool kernels`)");
      return nullptr;
    }
    return &found->second;
  }

  // The source or the sink: an object with a registered `type` plus that type's parameters.
  template <class Info>
  const Info* endpoint(const nlohmann::json& doc, const char* key, const char* example,
                       const std::map<std::string, Info>& table, std::string& type, nlohmann::json& params_out) {
    auto it = doc.find(key);
    if (it == doc.end()) {
      add(key, std::string("is required: an object such as ") + example);
      return nullptr;
    }
    if (!it->is_object()) {
      add(key, "must be an object, got " + shown(*it));
      return nullptr;
    }
    const Info* info = lookup(*it, key, "type", key, table);
    if (info != nullptr) {
      type = info->name;
      params_out = params(*it, key, info->params, {"type"});
    }
    return info;
  }

  void source(const nlohmann::json& doc, graph_spec& g) {
    (void)endpoint(doc, "source", "{\"type\": \"range\", \"count\": 8}", reg_.sources(), g.source_type,
                   g.source_params);
  }

  void sink(const nlohmann::json& doc, graph_spec& g) {
    const auto* info = endpoint(doc, "sink", "{\"type\": \"print\"}", reg_.sinks(), g.sink_type, g.sink_params);
    if (info != nullptr && info->forces_order) g.ordered = true;
  }

  void stages(const nlohmann::json& doc, graph_spec& g) {
    auto it = doc.find("stages");
    if (it == doc.end()) {
      add("stages", "is required: an array of one or more stages");
      return;
    }
    if (!it->is_array() || it->empty()) {
      add("stages", "must be a non-empty array of stages, got " + shown(*it));
      return;
    }
    if (it->size() > 64) {
      add("stages", "has " + std::to_string(it->size()) + " stages; at most 64 are allowed");
      return;
    }
    std::map<std::string, std::string> seen;  // stage name -> the path of the stage that has it
    std::size_t i = 0;
    for (const auto& st : *it) {
      const std::string path = "stages[" + std::to_string(i) + "]";
      ++i;
      if (!st.is_object()) {
        add(path, "must be an object, got " + shown(st));
        continue;
      }
      check_keys(st, path, {"name", "kernel", "workers", "params", "retries", "timeout"});
      stage_spec s;
      s.name = "stage" + std::to_string(i - 1);
      if (auto n = st.find("name"); n != st.end()) {
        if (!n->is_string() || n->get<std::string>().empty()) {
          add(path + ".name", "must be a non-empty string, got " + shown(*n));
        } else if (!detail::is_valid_utf8(n->get<std::string>())) {
          add(path + ".name", "must be valid UTF-8 text (it names the stage in reports and metrics), got " + shown(*n));
        } else {
          s.name = n->get<std::string>();
        }
      }
      // Names identify stages in reports, metrics, traces and `dot --report`: they must be unique.
      if (auto [at, fresh] = seen.emplace(s.name, path); !fresh) {
        if (st.contains("name")) {
          add(path + ".name", "duplicate stage name \"" + s.name + "\" (" + at->second + " has it too)");
        } else {
          add(path, "its default name \"" + s.name + "\" is taken by " + at->second + "; give it a \"name\"");
        }
      }
      s.workers = hardware_workers();
      if (auto w = st.find("workers"); w != st.end()) {
        if (auto v = integer(*w, path + ".workers", 1, 4096, "a positive integer (at most 4096)")) {
          s.workers = static_cast<int>(*v);
        }
      }
      if (auto r = st.find("retries"); r != st.end()) {
        if (auto v = integer(*r, path + ".retries", 0, 1000, "an integer from 0 to 1000")) {
          s.retries = static_cast<std::uint32_t>(*v);
        }
      }
      if (auto t = st.find("timeout"); t != st.end()) {
        if (auto d = deadline(*t, path + ".timeout")) s.job_timeout = *d;
      }
      if (const auto* info = lookup(st, path, "kernel", "kernel", reg_.kernels())) {
        s.kernel = info->name;
        auto p = st.find("params");
        if (p != st.end() && !p->is_object()) {
          add(path + ".params", "must be an object, got " + shown(*p));
        } else {
          s.params = params(p == st.end() ? nlohmann::json::object() : *p, path + ".params", info->params, {});
        }
      }
      g.stages.push_back(std::move(s));
    }
  }

  const registry& reg_;
  std::vector<spec_problem> problems_;
};

}  // namespace

spec_error::spec_error(std::vector<spec_problem> problems)
    : error(errc::invalid_spec, join_problems(problems)), problems_(std::move(problems)) {}

std::optional<std::chrono::nanoseconds> parse_duration(const std::string& text) {
  if (text.empty() || text.size() > 32) return std::nullopt;
  std::size_t i = 0;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) != 0 || text[i] == '.')) ++i;
  if (i == 0) return std::nullopt;
  const std::string number = text.substr(0, i);
  const std::string unit = text.substr(i);
  if (std::count(number.begin(), number.end(), '.') > 1 || number.front() == '.' || number.back() == '.') {
    return std::nullopt;
  }
  double scale = 0;
  if (unit == "ms") {
    scale = 1e6;
  } else if (unit == "s") {
    scale = 1e9;
  } else if (unit == "m") {
    scale = 60e9;
  } else if (unit == "h") {
    scale = 3600e9;
  } else if (unit == "us") {
    scale = 1e3;
  } else {
    return std::nullopt;
  }
  const double ns = std::strtod(number.c_str(), nullptr) * scale;
  if (!std::isfinite(ns) || ns > 1e18) return std::nullopt;  // ~31 years
  return std::chrono::nanoseconds(static_cast<std::int64_t>(ns));
}

nlohmann::json read_spec_file(const std::filesystem::path& path) {
  const std::string name = path.string();
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(status)) fail(name, "no such file");
  if (std::filesystem::is_directory(status)) fail(name, "is a directory, not a spec file");
  const char* too_large = "is larger than 4 MiB; a graph spec is a small JSON file";
  if (std::filesystem::is_regular_file(status)) {
    const auto size = std::filesystem::file_size(path, ec);
    if (!ec && size > kMaxSpecBytes) fail(name, too_large);
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(name, std::string("cannot be read: ") + std::strerror(errno));
  // At most the limit plus one byte, whatever the input is: a pipe or a device has no size
  // to check first, and must not be read whole.
  std::string text;
  std::vector<char> buf(64 * 1024);
  while (in) {
    errno = 0;
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    text.append(buf.data(), static_cast<std::size_t>(in.gcount()));
    if (text.size() > kMaxSpecBytes) fail(name, too_large);
  }
  if (in.bad()) fail(name, std::string("cannot be read: ") + std::strerror(errno != 0 ? errno : EIO));
  if (text.find_first_not_of(" \t\r\n") == std::string::npos) fail(name, "is empty; expected a JSON object");
  try {
    return parse_bounded(text, kMaxDepth);
  } catch (const spec_error& e) {
    fail(name, e.problems().front().message);
  } catch (const nlohmann::json::parse_error& e) {
    std::string what = e.what();
    if (auto pos = what.find("parse error"); pos != std::string::npos) what = what.substr(pos);
    fail(name, "is not valid JSON: " + what);
  }
}

void apply_override(nlohmann::json& doc, const std::string& assignment) {
  const auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0) {
    fail("--set", "expected PATH=VALUE such as stages[0].workers=4, got \"" + detail::escape_bytes(assignment) + "\"");
  }
  const std::string path = assignment.substr(0, eq);
  const std::string raw = assignment.substr(eq + 1);
  // The path's steps: an object key, or an array index (npos key marks an index).
  struct step {
    std::string key;
    std::size_t index = 0;
    bool is_index = false;
  };
  std::vector<step> steps;
  std::size_t i = 0;
  while (i < path.size()) {
    std::size_t end = path.find_first_of(".[", i);
    const std::string key = path.substr(i, end == std::string::npos ? std::string::npos : end - i);
    if (key.empty()) fail("--set " + path, "malformed path");
    steps.push_back({key, 0, false});
    i = end == std::string::npos ? path.size() : end;
    while (i < path.size() && path[i] == '[') {
      const auto close = path.find(']', i);
      if (close == std::string::npos) fail("--set " + path, "missing ']'");
      const std::string idx = path.substr(i + 1, close - i - 1);
      if (idx.empty() || idx.find_first_not_of("0123456789") != std::string::npos || idx.size() > 4) {
        fail("--set " + path, "array index must be a number, got \"" + idx + "\"");
      }
      steps.push_back({idx, std::stoul(idx), true});
      i = close + 1;
    }
    if (i < path.size() && path[i] == '.') ++i;
  }
  // The spec's depth limit holds for the document as a whole: the path's levels plus the value's.
  if (steps.size() > static_cast<std::size_t>(kMaxDepth)) {
    fail("--set " + path, "JSON nested deeper than " + std::to_string(kMaxDepth) + " levels");
  }
  nlohmann::json value;
  try {
    value = parse_bounded(raw, kMaxDepth - static_cast<int>(steps.size()));
  } catch (const spec_error& e) {
    fail("--set " + path, e.problems().front().message);
  } catch (const nlohmann::json::parse_error&) {
    value = raw;  // not JSON: a plain string
  }
  if (!doc.is_object()) fail("--set", "the spec is not a JSON object");
  nlohmann::json* cur = &doc;
  for (const auto& s : steps) {
    if (s.is_index) {
      if (!cur->is_array() || s.index >= cur->size()) fail("--set " + path, "index " + s.key + " is out of range");
      cur = &(*cur)[s.index];
    } else {
      if (!cur->is_object()) fail("--set " + path, "\"" + s.key + "\" is not inside an object");
      cur = &(*cur)[s.key];
    }
  }
  *cur = std::move(value);
}

graph_spec validate_spec(const nlohmann::json& doc, const registry& reg) { return validator(reg).run(doc); }

std::string describe(const graph_spec& g) {
  std::ostringstream s;
  s << "graph " << g.name << "\n";
  s << "  source  " << g.source_type << ' ' << detail::dump_escaped(g.source_params) << "\n";
  for (const auto& st : g.stages) {
    s << "  stage   " << st.name << ": kernel " << st.kernel << ", " << st.workers << " worker"
      << (st.workers == 1 ? "" : "s") << ", params " << detail::dump_escaped(st.params);
    if (st.retries) s << ", retries " << *st.retries;
    if (st.job_timeout) s << ", timeout " << std::chrono::duration_cast<std::chrono::milliseconds>(*st.job_timeout).count() << "ms";
    s << "\n";
  }
  s << "  sink    " << g.sink_type << ' ' << detail::dump_escaped(g.sink_params) << "\n";
  s << "  options capacity " << g.capacity << ", " << (g.ordered ? "ordered" : "unordered") << ", retries "
    << g.retries << ", on_error " << (g.on_error == error_policy::fail_fast ? "fail_fast" : "collect");
  if (g.max_failures > 0) s << ", max_failures " << g.max_failures;
  if (g.timeout.count() > 0) s << ", timeout " << std::chrono::duration_cast<std::chrono::milliseconds>(g.timeout).count() << "ms";
  if (g.job_timeout.count() > 0) {
    s << ", job_timeout " << std::chrono::duration_cast<std::chrono::milliseconds>(g.job_timeout).count() << "ms";
  }
  s << "\n";
  return s.str();
}

namespace {
std::string dot_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

// The report's stages must be this graph's, in order: figures are matched by
// position, so a report of another graph would label the wrong stages.
void check_report_matches(const graph_spec& g, const nlohmann::json& report) {
  if (!report.is_object() || !report.contains("stages") || !report["stages"].is_array()) {
    detail::throw_error(errc::invalid_argument, "not a run report: no \"stages\" list");
  }
  const auto name_of = [](const nlohmann::json& j, const char* key) {
    return j.is_object() && j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : std::string("?");
  };
  const auto& stages = report["stages"];
  const bool other_graph = report.contains("graph") && report["graph"].is_string() && report["graph"] != g.name;
  bool same = !other_graph && stages.size() == g.stages.size();
  std::string report_names;
  for (std::size_t i = 0; i < stages.size(); ++i) {
    const std::string name = name_of(stages[i], "name");
    report_names += (i == 0 ? "" : ", ") + name;
    same = same && name == g.stages[i].name;
  }
  if (same) return;
  std::string graph_names;
  for (const auto& st : g.stages) graph_names += (graph_names.empty() ? "" : ", ") + st.name;
  detail::throw_error(errc::invalid_argument, "the report is of graph \"" + name_of(report, "graph") + "\" with stages [" +
                                                  report_names + "], not of \"" + g.name + "\" with stages [" +
                                                  graph_names + "]");
}
}  // namespace

std::string to_dot(const graph_spec& g, const nlohmann::json* report) {
  if (report != nullptr) check_report_matches(g, *report);
  std::ostringstream s;
  s << "digraph \"" << dot_escape(g.name) << "\" {\n  rankdir=LR;\n  node [shape=box, fontname=\"Helvetica\"];\n";
  s << "  source [shape=oval, label=\"source\\n" << dot_escape(g.source_type) << "\"];\n";
  for (std::size_t i = 0; i < g.stages.size(); ++i) {
    const auto& st = g.stages[i];
    s << "  stage" << i << " [label=\"" << dot_escape(st.name) << "\\nkernel " << dot_escape(st.kernel) << "\\n"
      << st.workers << " worker" << (st.workers == 1 ? "" : "s");
    if (report != nullptr) {
      const auto& rs = (*report)["stages"][i];
      if (rs.contains("max_queue_depth")) s << "\\nmax queue " << rs["max_queue_depth"].dump();
      if (rs.contains("saturation")) s << "\\nsaturation " << rs["saturation"].dump();
      if (rs.contains("p99_ms")) s << "\\np99 " << rs["p99_ms"].dump() << " ms";
    }
    s << "\"];\n";
  }
  s << "  sink [shape=oval, label=\"sink\\n" << dot_escape(g.sink_type) << "\"];\n";
  s << "  source -> stage0 [label=\"capacity " << g.capacity << "\"];\n";
  for (std::size_t i = 1; i < g.stages.size(); ++i) {
    s << "  stage" << i - 1 << " -> stage" << i << " [label=\"capacity " << g.capacity << "\"];\n";
  }
  s << "  stage" << g.stages.size() - 1 << " -> sink [label=\"serial\"];\n}\n";
  return s.str();
}

std::string to_string(param_type t) {
  switch (t) {
    case param_type::integer: return "integer";
    case param_type::number: return "number";
    case param_type::string: return "string";
    case param_type::boolean: return "boolean";
    case param_type::duration: return "duration";
    case param_type::string_list: return "list";
  }
  return "unknown";
}

}  // namespace flowpool
