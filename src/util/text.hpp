// Internal: arbitrary bytes as valid UTF-8, losslessly, for JSON output (file names are bytes).
//
// The scheme (documented in docs/cli.md, "Names are bytes"):
// - a string that is valid UTF-8 and does not contain the two characters `\x` is kept as is;
// - any other string is escaped: each byte that is not part of a valid UTF-8 character becomes
//   `\xHH` (two lowercase hex digits) and each backslash becomes `\\`.
// Every escaped string contains `\x` and no kept string does, so the bytes are recovered by
// undoing the two escapes in the strings that contain `\x` (`unescape_bytes`; in Python,
// `codecs.escape_decode(s.encode())[0]`).
//
// Header-only so that both the library and the CLI can use it without exporting it.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace flowpool::detail {

/// The length of the valid UTF-8 character that starts at s[i] (1 to 4), or 0 if the bytes
/// there are not one (a stray continuation byte, an overlong form, a surrogate, above U+10FFFF,
/// or a truncated sequence).
inline std::size_t utf8_char_length(std::string_view s, std::size_t i) {
  const auto b = [&](std::size_t k) { return static_cast<unsigned char>(s[i + k]); };
  const unsigned char c = b(0);
  if (c < 0x80) return 1;
  std::size_t n = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // the allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;  // no overlong forms
    if (c == 0xED) hi = 0x9F;  // no surrogates
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;  // no overlong forms
    if (c == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  if (b(1) < lo || b(1) > hi) return 0;
  for (std::size_t k = 2; k < n; ++k) {
    if (b(k) < 0x80 || b(k) > 0xBF) return 0;
  }
  return n;
}

/// Whether `s` is valid UTF-8 (what JSON text must be).
inline bool is_valid_utf8(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t n = utf8_char_length(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

/// `bytes` as valid UTF-8, losslessly (the scheme above). Never throws but std::bad_alloc.
inline std::string escape_bytes(std::string_view bytes) {
  if (is_valid_utf8(bytes) && bytes.find("\\x") == std::string_view::npos) return std::string(bytes);
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() + 8);
  for (std::size_t i = 0; i < bytes.size();) {
    const std::size_t n = utf8_char_length(bytes, i);
    if (n == 0) {
      const auto c = static_cast<unsigned char>(bytes[i]);
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
      ++i;
    } else if (bytes[i] == '\\') {
      out += "\\\\";
      ++i;
    } else {
      out.append(bytes.substr(i, n));
      i += n;
    }
  }
  return out;
}

/// The bytes that `escape_bytes` encoded as `text`; nullopt when `text` is not one of its results.
inline std::optional<std::string> unescape_bytes(std::string_view text) {
  if (text.find("\\x") == std::string_view::npos) return std::string(text);
  const auto digit = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '\\') {
      out += text[i];
    } else if (i + 1 < text.size() && text[i + 1] == '\\') {
      out += '\\';
      ++i;
    } else if (i + 3 < text.size() && text[i + 1] == 'x' && digit(text[i + 2]) >= 0 && digit(text[i + 3]) >= 0) {
      out += static_cast<char>(digit(text[i + 2]) * 16 + digit(text[i + 3]));
      i += 3;
    } else {
      return std::nullopt;
    }
  }
  return out;
}

/// A copy of `v` with every string and object key passed through `escape_bytes`: it can be
/// dumped without throwing. Recursive: for JSON whose depth is bounded (every JSON flowpool
/// reads is; reports and traces are shallow).
inline nlohmann::json escape_json(const nlohmann::json& v) {
  if (v.is_string()) return escape_bytes(std::string_view(v.get_ref<const std::string&>()));
  if (v.is_array()) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& e : v) out.push_back(escape_json(e));
    return out;
  }
  if (v.is_object()) {
    nlohmann::json out = nlohmann::json::object();
    for (const auto& [key, value] : v.items()) out[escape_bytes(std::string_view(key))] = escape_json(value);
    return out;
  }
  return v;
}

/// `v.dump(indent)` that never throws for invalid UTF-8: strings are written with `escape_bytes`.
inline std::string dump_escaped(const nlohmann::json& v, int indent = -1) {
  return escape_json(v).dump(indent);
}

}  // namespace flowpool::detail
