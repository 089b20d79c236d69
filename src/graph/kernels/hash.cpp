// The `sha256` kernel: OpenSSL's EVP SHA-256 of a file (input = a path) or of the
// input bytes themselves (a chunk).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include <cerrno>
#include <memory>

#include "../../util/quote.hpp"
#include "flowpool/error.hpp"
#include "kernels.hpp"

namespace flowpool::detail {
namespace {

struct md_ctx_deleter {
  void operator()(EVP_MD_CTX* c) const noexcept { EVP_MD_CTX_free(c); }
};
using md_ctx_ptr = std::unique_ptr<EVP_MD_CTX, md_ctx_deleter>;

struct fd_closer {
  int fd;
  explicit fd_closer(int f) : fd(f) {}
  fd_closer(const fd_closer&) = delete;
  fd_closer& operator=(const fd_closer&) = delete;
  ~fd_closer() {
    if (fd >= 0) ::close(fd);
  }
};

// One fetched algorithm for the whole process (OpenSSL 3: avoids a fetch per digest).
const EVP_MD* sha256_md() {
  static const EVP_MD* md = [] {
    const EVP_MD* m = EVP_MD_fetch(nullptr, "SHA256", nullptr);
    return m != nullptr ? m : EVP_sha256();
  }();
  return md;
}

std::string to_hex(const unsigned char* d, unsigned n) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string s(static_cast<std::size_t>(n) * 2, '0');
  for (unsigned i = 0; i < n; ++i) {
    s[2 * i] = digits[d[i] >> 4];
    s[2 * i + 1] = digits[d[i] & 15];
  }
  return s;
}

EVP_MD_CTX* begin_digest(md_ctx_ptr& ctx) {
  ctx.reset(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestInit_ex(ctx.get(), sha256_md(), nullptr) != 1) {
    throw_error(errc::internal, "sha256: cannot initialise OpenSSL's SHA-256");
  }
  return ctx.get();
}

std::string end_digest(EVP_MD_CTX* c) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned n = 0;
  if (EVP_DigestFinal_ex(c, md, &n) != 1) throw_error(errc::internal, "sha256: EVP_DigestFinal_ex failed");
  return to_hex(md, n);
}

std::string sha256_bytes(const std::string& data) {
  md_ctx_ptr ctx;
  EVP_MD_CTX* c = begin_digest(ctx);
  if (EVP_DigestUpdate(c, data.data(), data.size()) != 1) throw_error(errc::internal, "sha256: update failed");
  return end_digest(c);
}

// Streams the file through the digest in 128 KiB reads, polling for cancellation.
std::string sha256_file(const std::string& path, job_context& job) {
  const fd_closer f(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (f.fd < 0) {
    const int e = errno;
    throw permanent_error("sha256: cannot open " + quote_name(path) + ": " + errno_text(e));
  }
  struct stat st {};
  if (::fstat(f.fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    throw permanent_error("sha256: " + quote_name(path) + " is " +
                          (S_ISDIR(st.st_mode) ? std::string("a directory") : std::string("not a regular file")) +
                          ", expected a file");
  }
  ::posix_fadvise(f.fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  constexpr std::size_t block = std::size_t{128} << 10;  // stays in L2 between read() and hashing
  thread_local std::unique_ptr<unsigned char[]> buf(new unsigned char[block]);
  md_ctx_ptr ctx;
  EVP_MD_CTX* c = begin_digest(ctx);
  for (;;) {
    job.throw_if_stop_requested();
    const ssize_t n = ::read(f.fd, buf.get(), block);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int e = errno;
      throw permanent_error("sha256: read error in " + quote_name(path) + ": " + errno_text(e));
    }
    if (n == 0) break;
    if (EVP_DigestUpdate(c, buf.get(), static_cast<std::size_t>(n)) != 1) {
      throw_error(errc::internal, "sha256: update failed");
    }
  }
  return end_digest(c);
}

}  // namespace

void register_hash_kernels(registry& r) {
  r.add_kernel({"sha256",
                "the SHA-256 (OpenSSL EVP) of a file or of the input bytes; value = lowercase hex digest",
                {make_param("input", param_type::string, "path",
                            "\"path\": the input names a file to hash; \"bytes\": hash the input itself (a chunk)",
                            0, 9.0e15, {"path", "bytes"})},
                [](const nlohmann::json& p) -> kernel_fn {
                  if (p["input"].get<std::string>() == "bytes") {
                    return [](item& it, job_context&) { it.value = sha256_bytes(it.input); };
                  }
                  return [](item& it, job_context& job) { it.value = sha256_file(it.input, job); };
                }});
}

}  // namespace flowpool::detail
