// Compressed clusters (read only): raw deflate (QEMU's zlib type, window
// 2^12) or zstd. The descriptor gives where the data starts and how many
// sectors it may take; decompression must produce exactly one cluster.
#include <zlib.h>
#include <zstd.h>

#include <vector>

#include "ioplane/block/node.h"
#include "qcow2.h"

namespace ioplane::block::qcow2 {
namespace {

bool inflate_cluster(const uint8_t* in, size_t in_len, uint8_t* out, size_t out_len) {
    z_stream z{};
    if (inflateInit2(&z, -12) != Z_OK) return false;
    z.next_in = const_cast<Bytef*>(in);
    z.avail_in = uInt(in_len);
    z.next_out = out;
    z.avail_out = uInt(out_len);
    const int ret = inflate(&z, Z_FINISH);
    inflateEnd(&z);
    // Trailing bytes of the last sector are not part of the stream: a full
    // output is success whether or not the stream said it ended.
    return (ret == Z_STREAM_END || ret == Z_BUF_ERROR || ret == Z_OK) && z.avail_out == 0;
}

bool zstd_cluster(const uint8_t* in, size_t in_len, uint8_t* out, size_t out_len) {
    ZSTD_DStream* d = ZSTD_createDStream();
    if (d == nullptr) return false;
    ZSTD_inBuffer input{in, in_len, 0};
    ZSTD_outBuffer output{out, out_len, 0};
    bool ok = true;
    while (output.pos < output.size && input.pos < input.size) {
        const size_t ret = ZSTD_decompressStream(d, &output, &input);
        if (ZSTD_isError(ret)) {
            ok = false;
            break;
        }
        if (ret == 0 && output.pos < output.size) break;  // frame ended early
    }
    ZSTD_freeDStream(d);
    return ok && output.pos == output.size;
}

}  // namespace

Task<Result<void>> Qcow2Driver::co_read_compressed(uint64_t l2_entry, uint8_t* cluster_buf) {
    const CompressedRef ref = decode_compressed(l2_entry, header_.cluster_bits);
    const uint64_t file_size = file().child().length();
    if (ref.host_offset >= file_size) {
        co_await co_signal_corruption("compressed cluster at " + std::to_string(ref.host_offset) +
                                      " is past the end of the image file");
        co_return fail(EIO, "qcow2: compressed cluster past the end of the image file");
    }
    // The last sector may reach past the end of the file.
    const uint64_t len = std::min(ref.bytes, file_size - ref.host_offset);
    std::vector<uint8_t> in(len);
    if (auto r = co_await co_read_file(ref.host_offset, in.data(), len); !r) co_return r;
    const bool ok = header_.compression == Compression::zstd ? zstd_cluster(in.data(), len, cluster_buf, cluster_size())
                                                             : inflate_cluster(in.data(), len, cluster_buf, cluster_size());
    if (!ok) co_return fail(EIO, "qcow2: compressed cluster at " + std::to_string(ref.host_offset) + " does not decompress");
    co_return Result<void>{};
}

}  // namespace ioplane::block::qcow2
