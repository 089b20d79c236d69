// Internal: quoting of file and command names in human-readable messages.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace flowpool::detail {

// A name (file, directory or command: any bytes) as one shell word that is safe to print
// on a terminal and never spans two lines:
//
// - a name of printable characters (ASCII or valid UTF-8) without any of  " \ $ ` !  is
//   printed in double quotes, as is:  "/data/file name.txt";
// - any other name is printed in bash's ANSI-C quoting:  $'new\nline', $'esc\x1b[2J',
//   $'say "hi"', $'bad\xff'. Control bytes (C0, DEL, C1), invalid UTF-8 and the Unicode
//   bidirectional and line-separator controls are escaped as \n \t \r or \xHH (per byte);
//   \ and ' as \\ and \'.
//
// Either form, pasted into bash, gives back exactly the name's bytes.
// Header-only so that both the library and the CLI can use it without exporting it.
namespace quote_impl {

// Length of the valid UTF-8 sequence at s[i] that encodes a printable code point, or 0.
inline std::size_t printable_utf8(std::string_view s, std::size_t i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  std::size_t len = 0;
  std::uint32_t cp = 0;
  if (b0 >= 0xc2 && b0 <= 0xdf) {
    len = 2;
    cp = b0 & 0x1fU;
  } else if (b0 >= 0xe0 && b0 <= 0xef) {
    len = 3;
    cp = b0 & 0x0fU;
  } else if (b0 >= 0xf0 && b0 <= 0xf4) {
    len = 4;
    cp = b0 & 0x07U;
  } else {
    return 0;
  }
  if (i + len > s.size()) return 0;
  for (std::size_t k = 1; k < len; ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if ((b & 0xc0U) != 0x80U) return 0;
    cp = (cp << 6) | (b & 0x3fU);
  }
  const bool overlong = (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000);
  if (overlong || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  if (cp >= 0x80 && cp <= 0x9f) return 0;                                        // C1 controls (CSI is 0x9b)
  if (cp == 0x200e || cp == 0x200f || (cp >= 0x202a && cp <= 0x202e)) return 0;  // bidi marks, embeddings
  if (cp >= 0x2066 && cp <= 0x2069) return 0;                                    // bidi isolates
  if (cp == 0x2028 || cp == 0x2029) return 0;                                    // line, paragraph separators
  return len;
}

inline bool plain_ascii(unsigned char c) {
  return c >= 0x20 && c < 0x7f && c != '"' && c != '\\' && c != '$' && c != '`' && c != '!';
}

}  // namespace quote_impl

inline std::string quote_name(std::string_view name) {
  bool plain = true;
  for (std::size_t i = 0; i < name.size() && plain;) {
    const auto c = static_cast<unsigned char>(name[i]);
    if (c < 0x80) {
      plain = quote_impl::plain_ascii(c);
      ++i;
    } else if (const std::size_t n = quote_impl::printable_utf8(name, i)) {
      i += n;
    } else {
      plain = false;
    }
  }
  std::string out;
  if (plain) {
    out.reserve(name.size() + 2);
    out += '"';
    out.append(name);
    out += '"';
    return out;
  }
  static constexpr char hex[] = "0123456789abcdef";
  out.reserve(name.size() + 8);
  out += "$'";
  for (std::size_t i = 0; i < name.size();) {
    const auto c = static_cast<unsigned char>(name[i]);
    if (c >= 0x80) {
      if (const std::size_t n = quote_impl::printable_utf8(name, i)) {
        out.append(name, i, n);
        i += n;
        continue;
      }
    }
    ++i;
    switch (c) {
      case '\n':
        out += "\\n";
        continue;
      case '\t':
        out += "\\t";
        continue;
      case '\r':
        out += "\\r";
        continue;
      case '\\':
        out += "\\\\";
        continue;
      case '\'':
        out += "\\'";
        continue;
      default:
        break;
    }
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 0xfU];
    }
  }
  out += '\'';
  return out;
}

}  // namespace flowpool::detail
