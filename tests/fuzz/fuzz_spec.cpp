// libFuzzer target: the spec reader, the --set parser and the validator must
// never crash, hang or throw anything but flowpool::spec_error on any input.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>

#include "flowpool/graph.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const std::string path = "/tmp/flowpool-fuzz-" + std::to_string(getpid()) + ".json";
  {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  try {
    nlohmann::json doc = flowpool::read_spec_file(path);
    // Exercise --set on the same input: its first line, if it looks like an assignment.
    const std::string text(reinterpret_cast<const char*>(data), size);
    const auto nl = text.find('\n');
    const std::string first = text.substr(0, nl == std::string::npos ? std::min<std::size_t>(text.size(), 64) : nl);
    if (first.find('=') != std::string::npos) {
      try {
        flowpool::apply_override(doc, first);
      } catch (const flowpool::spec_error&) {
      }
    }
    (void)flowpool::validate_spec(doc);
    (void)flowpool::parse_duration(first);
  } catch (const flowpool::spec_error&) {
    // the expected outcome for bad input
  }
  return 0;
}
