// Internal: the data-processing built-ins (files/chunks sources, sha256, zstd,
// wordcount and exec kernels, checksums/file/topk/concat sinks). Each file in this
// directory registers its own; builtins.cpp calls them.
#pragma once

#include <ostream>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "flowpool/registry.hpp"

namespace flowpool::detail {

void register_fs_sources(registry& r);    // sources_fs.cpp: files, chunks
void register_hash_kernels(registry& r);  // hash.cpp: sha256
void register_zstd_kernels(registry& r);  // zstd.cpp: zstd
void register_wordcount(registry& r);     // wordcount.cpp: wordcount kernel, topk sink
void register_exec_kernel(registry& r);   // exec.cpp: exec
void register_io_sinks(registry& r);      // sinks_io.cpp: checksums, file, concat

/// A parameter description (shared helper for the registrations above).
inline param_info make_param(std::string name, param_type type, nlohmann::json def, std::string help, double lo = 0,
                             double hi = 9.0e15, std::vector<std::string> choices = {}) {
  param_info p;
  p.name = std::move(name);
  p.type = type;
  p.default_value = std::move(def);
  p.help = std::move(help);
  p.min = lo;
  p.max = hi;
  p.choices = std::move(choices);
  return p;
}

/// `p` with its validation rule (param_info::check) set.
inline param_info with_check(param_info p, decltype(param_info::check) check) {
  p.check = std::move(check);
  return p;
}

/// exec's `argv` rules, checked at validation (builtins.cpp): a command is named, and
/// `shell: true` takes exactly one string.
void check_exec_argv(const nlohmann::json& argv, const nlohmann::json& params,
                     const std::function<void(const std::string&, const std::string&)>& problem);

/// Reads a whole regular file. Throws permanent_error naming the file when it
/// cannot be opened, is a directory or is not a regular file, or a read fails.
/// `what` prefixes the message ("sha256", "zstd", ...).
std::string read_whole_file(const std::string& path, std::string_view what);

/// Writes `data` to a sink's output stream and flushes it. Throws flowpool::error
/// (errc::io) naming the cause ("print: cannot write the output: No space left on
/// device") when the stream fails: an item counts as succeeded only once written.
void write_output(std::ostream& out, std::string_view data, std::string_view who);

/// "No such file or directory" etc. for errno.
std::string errno_text(int err);

}  // namespace flowpool::detail
