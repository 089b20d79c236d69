// Internal: quoting of file and command names in human-readable messages.
#pragma once

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
std::string quote_name(std::string_view name);

}  // namespace flowpool::detail
