// The `wordcount` kernel and the `topk` sink.
//
// Word rules (docs/graph-spec.md): a word is a maximal run of word bytes. Word bytes
// are the ASCII letters and digits and every byte >= 0x80 (so UTF-8 text stays
// whole, and no decoding is done). Every other byte (space, tab, newline, ASCII
// punctuation including the apostrophe and hyphen, control bytes) separates words.
// ASCII letters are lowercased; other bytes are kept as they are.
#include <algorithm>
#include <array>
#include <charconv>
#include <deque>
#include <ostream>
#include <unordered_map>

#include "flowpool/error.hpp"
#include "kernels.hpp"

namespace flowpool::detail {
namespace {

// 0: separator; otherwise the byte the word keeps (lowercased for ASCII letters).
constexpr std::array<unsigned char, 256> make_word_table() {
  std::array<unsigned char, 256> t{};
  for (int c = 0; c < 256; ++c) {
    unsigned char v = 0;
    if (c >= 'a' && c <= 'z') v = static_cast<unsigned char>(c);
    if (c >= '0' && c <= '9') v = static_cast<unsigned char>(c);
    if (c >= 'A' && c <= 'Z') v = static_cast<unsigned char>(c - 'A' + 'a');
    if (c >= 0x80) v = static_cast<unsigned char>(c);
    t[static_cast<std::size_t>(c)] = v;
  }
  return t;
}
constexpr auto word_table = make_word_table();

// Counts the words of `text`, writing the lowercased words into `text` in place.
void count_words(std::string& text, std::unordered_map<std::string_view, std::uint64_t>& counts) {
  auto* p = reinterpret_cast<unsigned char*>(text.data());
  const std::size_t n = text.size();
  std::size_t i = 0;
  while (i < n) {
    while (i < n && word_table[p[i]] == 0) ++i;
    const std::size_t start = i;
    while (i < n) {
      const unsigned char v = word_table[p[i]];
      if (v == 0) break;
      p[i] = v;
      ++i;
    }
    if (i > start) ++counts[std::string_view(text.data() + start, i - start)];
  }
}

// "word\tcount\n" per word: words never contain a tab or a newline.
void serialize(const std::unordered_map<std::string_view, std::uint64_t>& counts, std::string& out) {
  out.clear();
  for (const auto& [w, c] : counts) {
    out.append(w);
    out += '\t';
    out += std::to_string(c);
    out += '\n';
  }
}

class topk_sink final : public sink {
 public:
  topk_sink(std::size_t k, std::ostream& out) : k_(k), out_(out) {}
  void consume(item&& it) override { merge(it.value, "item " + std::to_string(it.id)); }
  void finish() override {
    std::vector<std::pair<std::string_view, std::uint64_t>> all;
    all.reserve(counts_.size());
    for (const auto& [w, c] : counts_) all.emplace_back(w, c);
    const auto better = [](const auto& a, const auto& b) { return a.second != b.second ? a.second > b.second : a.first < b.first; };
    const std::size_t k = std::min(k_, all.size());
    std::partial_sort(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(k), all.end(), better);
    std::string text;
    for (std::size_t i = 0; i < k; ++i) {
      text += std::to_string(all[i].second);
      text += '\t';
      text.append(all[i].first);
      text += '\n';
    }
    write_output(out_, text, "topk");
  }
  void finish_failed() override {}  // a partial count is not the answer
  [[nodiscard]] nlohmann::json save_state() const override {
    // Words may be any bytes (not valid UTF-8, which JSON needs): saved hex-encoded.
    std::string table;
    for (const auto& [w, c] : counts_) {
      table += w;
      table += '\t';
      table += std::to_string(c);
      table += '\n';
    }
    static constexpr char digits[] = "0123456789abcdef";
    std::string hex;
    hex.reserve(table.size() * 2);
    for (const char c : table) {
      const auto ch = static_cast<unsigned char>(c);
      hex += digits[ch >> 4];
      hex += digits[ch & 15];
    }
    return {{"counts_hex", hex}};
  }
  void load_state(const nlohmann::json& s) override {
    const auto hex = s.at("counts_hex").get<std::string>();
    std::string table;
    table.reserve(hex.size() / 2);
    for (std::size_t i = 0; i + 1 < hex.size(); i += 2) {
      table += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
    }
    merge(table, "saved state");
  }

 private:
  void merge(const std::string& v, const std::string& what) {
    std::size_t i = 0;
    while (i < v.size()) {
      const auto tab = v.find('\t', i);
      const auto nl = v.find('\n', i);
      if (tab == std::string::npos || nl == std::string::npos || tab > nl) {
        throw error(errc::invalid_argument, "topk: " + what + " is not word counts (\"word<TAB>count\" lines)");
      }
      std::uint64_t c = 0;
      const auto [p, ec] = std::from_chars(v.data() + tab + 1, v.data() + nl, c);
      if (ec != std::errc{} || p != v.data() + nl) {
        throw error(errc::invalid_argument, "topk: " + what + " has a bad count");
      }
      const std::string_view w(v.data() + i, tab - i);
      auto it = counts_.find(w);
      if (it == counts_.end()) {
        it = counts_.emplace(std::string_view(words_.emplace_back(w)), 0).first;
      }
      it->second += c;
      i = nl + 1;
    }
  }

  std::size_t k_;
  std::ostream& out_;
  std::deque<std::string> words_;  // owns the keys (stable addresses)
  std::unordered_map<std::string_view, std::uint64_t> counts_;
};

}  // namespace

void register_wordcount(registry& r) {
  r.add_kernel({"wordcount",
                "splits the input into words (ASCII letters and digits and bytes >= 0x80; ASCII letters "
                "lowercased) and counts them; value = \"word<TAB>count\" lines",
                {make_param("input", param_type::string, "bytes",
                            "\"bytes\": count the input itself (a line or a chunk); \"path\": the input names a file",
                            0, 9.0e15, {"bytes", "path"})},
                [](const nlohmann::json& p) -> kernel_fn {
                  const bool from_path = p["input"].get<std::string>() == "path";
                  return [from_path](item& it, job_context&) {
                    std::string text = from_path ? read_whole_file(it.input, "wordcount") : it.input;
                    std::unordered_map<std::string_view, std::uint64_t> counts;
                    count_words(text, counts);
                    serialize(counts, it.value);
                  };
                }});
  r.add_sink({"topk",
              "merges word counts and prints the k most frequent words as \"count<TAB>word\" lines "
              "(ties: bytewise alphabetical)",
              {make_param("k", param_type::integer, 10, "how many words to print", 1, 1.0e9)},
              [](const nlohmann::json& p, const sink_env& env) -> std::unique_ptr<sink> {
                return std::make_unique<topk_sink>(p["k"].get<std::size_t>(), *env.out);
              },
              false});
}

}  // namespace flowpool::detail
