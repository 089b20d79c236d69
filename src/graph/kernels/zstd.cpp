// The `zstd` kernel (libzstd): compresses each input into one zstd frame, or
// decompresses a .zst file (any number of frames) back to its bytes.
#include <zstd.h>

#include <memory>

#include "../../util/quote.hpp"
#include "flowpool/error.hpp"
#include "kernels.hpp"

namespace flowpool::detail {
namespace {

struct cctx_deleter {
  void operator()(ZSTD_CCtx* c) const noexcept { ZSTD_freeCCtx(c); }
};
struct dctx_deleter {
  void operator()(ZSTD_DCtx* c) const noexcept { ZSTD_freeDCtx(c); }
};

// One compression context per worker thread, reused across jobs (contexts are
// expensive to create and hold their window buffers).
ZSTD_CCtx* thread_cctx() {
  thread_local std::unique_ptr<ZSTD_CCtx, cctx_deleter> c(ZSTD_createCCtx());
  if (!c) throw_error(errc::internal, "zstd: cannot create a compression context");
  return c.get();
}

ZSTD_DCtx* thread_dctx() {
  thread_local std::unique_ptr<ZSTD_DCtx, dctx_deleter> c(ZSTD_createDCtx());
  if (!c) throw_error(errc::internal, "zstd: cannot create a decompression context");
  return c.get();
}

// One frame with the content size and a checksum (as the zstd tool writes by default).
// The context keeps its parameters between jobs (set again only when the level
// changes), and the frame is built in a per-thread buffer, so the value is one
// exact-size copy rather than a zero-filled worst-case allocation.
void compress_frame(const std::string& in, std::string& out, int level) {
  ZSTD_CCtx* c = thread_cctx();
  thread_local int params_level = 0;
  thread_local std::unique_ptr<char[]> buf;
  thread_local std::size_t buf_size = 0;
  if (params_level != level) {
    ZSTD_CCtx_reset(c, ZSTD_reset_session_and_parameters);
    ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, level);
    ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 1);
    params_level = level;
  } else {
    ZSTD_CCtx_reset(c, ZSTD_reset_session_only);
  }
  const std::size_t bound = ZSTD_compressBound(in.size());
  if (buf_size < bound) {
    buf.reset(new char[bound]);
    buf_size = bound;
  }
  const std::size_t n = ZSTD_compress2(c, buf.get(), bound, in.data(), in.size());
  if (ZSTD_isError(n) != 0U) {
    params_level = 0;
    throw_error(errc::internal, std::string("zstd: compression failed: ") + ZSTD_getErrorName(n));
  }
  out.assign(buf.get(), n);
}

// Decompresses every frame in `in`; `name` names the input in errors.
void decompress_all(const std::string& in, std::string& out, const std::string& name, job_context& job) {
  ZSTD_DCtx* d = thread_dctx();
  ZSTD_DCtx_reset(d, ZSTD_reset_session_and_parameters);
  out.clear();
  ZSTD_inBuffer src{in.data(), in.size(), 0};
  std::size_t last = 0;
  const std::size_t step = ZSTD_DStreamOutSize();
  while (src.pos < src.size) {
    job.throw_if_stop_requested();
    const std::size_t at = out.size();
    out.resize(at + step);
    ZSTD_outBuffer dst{out.data() + at, step, 0};
    last = ZSTD_decompressStream(d, &dst, &src);
    out.resize(at + dst.pos);
    if (ZSTD_isError(last) != 0U) {
      throw permanent_error("zstd: " + quote_name(name) + ": corrupt zstd data: " + ZSTD_getErrorName(last));
    }
    if (dst.pos == 0 && src.pos == src.size) break;
  }
  // Flush what the decoder still holds once the input is consumed.
  while (last != 0) {
    const std::size_t at = out.size();
    out.resize(at + step);
    ZSTD_outBuffer dst{out.data() + at, step, 0};
    ZSTD_inBuffer none{in.data(), in.size(), in.size()};
    last = ZSTD_decompressStream(d, &dst, &none);
    out.resize(at + dst.pos);
    if (ZSTD_isError(last) != 0U) {
      throw permanent_error("zstd: " + quote_name(name) + ": corrupt zstd data: " + ZSTD_getErrorName(last));
    }
    if (dst.pos == 0) break;
  }
  if (in.empty()) throw permanent_error("zstd: " + quote_name(name) + ": empty input is not a zstd frame");
  if (last != 0) {
    throw permanent_error("zstd: " + quote_name(name) + ": truncated zstd data (the last frame is incomplete)");
  }
}

}  // namespace

void register_zstd_kernels(registry& r) {
  r.add_kernel(
      {"zstd",
       "libzstd: compress the input into one zstd frame (with checksum), or decompress a .zst; value = the result",
       {make_param("level", param_type::integer, 3, "compression level", 1, 22),
        make_param("mode", param_type::string, "compress", "\"compress\" or \"decompress\"", 0, 9.0e15,
                   {"compress", "decompress"}),
        make_param("input", param_type::string, "bytes",
                   "\"bytes\": the input is the data (a chunk); \"path\": the input names a file to read", 0, 9.0e15,
                   {"bytes", "path"})},
       [](const nlohmann::json& p) -> kernel_fn {
         const int level = p["level"].get<int>();
         const bool from_path = p["input"].get<std::string>() == "path";
         if (p["mode"].get<std::string>() == "decompress") {
           return [from_path](item& it, job_context& job) {
             if (from_path) {
               decompress_all(read_whole_file(it.input, "zstd"), it.value, it.input, job);
             } else {
               decompress_all(it.input, it.value, "item " + std::to_string(it.id), job);
             }
           };
         }
         return [level, from_path](item& it, job_context&) {
           if (from_path) {
             compress_frame(read_whole_file(it.input, "zstd"), it.value, level);
           } else {
             compress_frame(it.input, it.value, level);
           }
         };
       }});
}

}  // namespace flowpool::detail
