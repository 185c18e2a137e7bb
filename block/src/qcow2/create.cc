// blockdev-create for qcow2 (QEMU's BlockdevCreateOptionsQcow2): an empty
// image is written to the file node (header, refcount table, one refcount
// block), then opened and grown to its size, as QEMU does.
#include <nlohmann/json.hpp>

#include "../graph_internal.h"
#include "ioplane/block/backend.h"
#include "ioplane/block/graph.h"
#include "ioplane/core/coroutine.h"
#include "ioplane/core/main_loop.h"
#include "qcow2.h"

namespace ioplane::block::qcow2 {
namespace {

struct CreateOptions {
    uint64_t size = 0;
    uint32_t version = 3;
    std::string backing_file, backing_format;
    uint64_t cluster_size = 64 * 1024;
    std::string preallocation = "off";
    bool lazy_refcounts = false;
    uint64_t refcount_bits = 16;
    Compression compression = Compression::zlib;
    bool extended_l2 = false;
};

bool power_of_two(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

// QEMU's checks and messages (qcow2_co_create).
Result<CreateOptions> read_create_options(OptionReader& opts) {
    CreateOptions c;
    for (const char* key : {"data-file", "data-file-raw", "encrypt"})
        if (opts.get_raw(key) != nullptr) return fail(ENOTSUP, std::string("qcow2: '") + key + "' is not supported");
    auto size = opts.get_size("size");
    if (!size) return std::unexpected(size.error());
    if (!*size) return fail(EINVAL, "Parameter 'size' is missing");
    c.size = **size;
    auto version = opts.get_string("version");
    if (!version) return std::unexpected(version.error());
    if (*version && **version != "v2" && **version != "v3")
        return fail(EINVAL, "Parameter 'version' does not accept value '" + **version + "'");
    if (*version && **version == "v2") c.version = 2;
    auto backing = opts.get_string("backing-file");
    if (!backing) return std::unexpected(backing.error());
    c.backing_file = backing->value_or("");
    auto backing_fmt = opts.get_string("backing-fmt");
    if (!backing_fmt) return std::unexpected(backing_fmt.error());
    c.backing_format = backing_fmt->value_or("");
    if (!c.backing_format.empty() && c.backing_file.empty())
        return fail(EINVAL, "Backing format cannot be used without backing file");
    if (c.backing_file.size() > kMaxBackingFileName) return fail(EINVAL, "Backing file name too long");
    auto cluster = opts.get_size("cluster-size");
    if (!cluster) return std::unexpected(cluster.error());
    c.cluster_size = cluster->value_or(c.cluster_size);
    if (!power_of_two(c.cluster_size) || c.cluster_size < 512 || c.cluster_size > (2u << 20))
        return fail(EINVAL, "Cluster size must be a power of two between 512 and 2048k");
    auto prealloc = opts.get_string("preallocation");
    if (!prealloc) return std::unexpected(prealloc.error());
    c.preallocation = prealloc->value_or("off");
    if (c.preallocation != "off" && c.preallocation != "metadata" && c.preallocation != "falloc" &&
        c.preallocation != "full")
        return fail(EINVAL, "Parameter 'preallocation' does not accept value '" + c.preallocation + "'");
    auto lazy = opts.get_bool("lazy-refcounts");
    if (!lazy) return std::unexpected(lazy.error());
    c.lazy_refcounts = lazy->value_or(false);
    auto bits = opts.get_uint64("refcount-bits");
    if (!bits) return std::unexpected(bits.error());
    c.refcount_bits = bits->value_or(16);
    if (!power_of_two(c.refcount_bits) || c.refcount_bits > 64)
        return fail(EINVAL, "Refcount width must be a power of two and may not exceed 64 bits");
    auto compression = opts.get_string("compression-type");
    if (!compression) return std::unexpected(compression.error());
    if (*compression && **compression == "zstd") c.compression = Compression::zstd;
    else if (*compression && **compression != "zlib")
        return fail(EINVAL, "Parameter 'compression-type' does not accept value '" + **compression + "'");
    auto extended = opts.get_bool("extended-l2");
    if (!extended) return std::unexpected(extended.error());
    c.extended_l2 = extended->value_or(false);
    const std::string v3 = " only supported with compatibility level 1.1 and above (use version=v3 or greater)";
    if (c.version < 3) {
        if (c.refcount_bits != 16)
            return fail(EINVAL, "Different refcount widths than 16 bits require compatibility level 1.1 or above "
                                "(use version=v3 or greater)");
        if (c.lazy_refcounts) return fail(EINVAL, "Lazy refcounts" + v3);
        if (c.extended_l2) return fail(EINVAL, "Extended L2 entries are" + v3);
        if (c.compression != Compression::zlib) return fail(EINVAL, "Non-zlib compression type is" + v3);
    }
    if (c.extended_l2 && c.cluster_size < 16 * 1024)
        return fail(EINVAL, "Extended L2 entries are only supported with cluster sizes of at least 16 KiB");
    if (!c.backing_file.empty() && c.preallocation != "off" && !c.extended_l2)
        return fail(EINVAL, "Backing file and preallocation can only be used at the same time if extended_l2 is on");
    return c;
}

// Clusters 0-2: the header, a refcount table of one cluster, and the
// refcount block that counts these three.
std::vector<uint8_t> empty_image(const CreateOptions& c, const std::vector<uint8_t>& header_cluster) {
    const uint64_t cs = c.cluster_size;
    std::vector<uint8_t> out(3 * cs, 0);
    std::copy(header_cluster.begin(), header_cluster.end(), out.begin());
    store_be64(&out[cs], 2 * cs);
    const uint32_t order = uint32_t(__builtin_ctzll(c.refcount_bits));
    for (uint64_t i = 0; i < 3; i++) set_refcount(&out[2 * cs], i, order, 1);
    return out;
}

// The nodes the creation opens; they outlive its I/O (see co_create_qcow2).
struct CreateNodes {
    std::shared_ptr<BlockNode> file, image;
};

Task<Result<void>> co_write_image(BlockGraph& graph, OptionReader& opts, CreateNodes& nodes);

}  // namespace

// The nodes go only after a trip through the loop: the last I/O completes
// inside the file node's own completion handler, which must not see its
// node destroyed under it.
Task<Result<void>> co_create_qcow2(BlockGraph& graph, OptionReader& opts) {
    assert_in_main_thread();
    CreateNodes nodes;
    auto r = co_await co_write_image(graph, opts, nodes);
    co_await yield_now();
    co_return r;
}

namespace {

Task<Result<void>> co_write_image(BlockGraph& graph, OptionReader& opts, CreateNodes& nodes) {
    const nlohmann::json* file_spec = opts.get_raw("file");
    if (file_spec == nullptr) co_return fail(EINVAL, "Parameter 'file' is missing");
    auto options = read_create_options(opts);
    if (!options) co_return std::unexpected(options.error());
    if (auto r = opts.check_all_used(); !r) co_return r;
    const CreateOptions& c = *options;

    const OpenContext oc{graph, *main_context(), "blockdev-create", NodeFlags{}, opts.syntax()};
    auto file = open_child(graph, *file_spec, oc);
    if (!file) co_return std::unexpected(file.error());
    nodes.file = *file;
    if (&(*file)->ctx() != main_context()) co_return fail(EINVAL, "node '" + (*file)->node_name() + "' is in an iothread");
    if (auto r = BlockBackend::can_attach(**file, true, "blockdev-create", true); !r) co_return r;

    Header h;
    h.version = c.version;
    h.cluster_bits = uint32_t(__builtin_ctzll(c.cluster_size));
    h.refcount_table_offset = c.cluster_size;
    h.refcount_table_clusters = 1;
    h.refcount_order = uint32_t(__builtin_ctzll(c.refcount_bits));
    h.compression = c.compression;
    if (c.version >= 3) {
        if (c.extended_l2) h.incompatible_features |= kIncompatExtendedL2;
        if (c.compression != Compression::zlib) h.incompatible_features |= kIncompatCompression;
        if (c.lazy_refcounts) h.compatible_features |= kCompatLazyRefcounts;
    }
    h.backing_file = c.backing_file;
    h.backing_format = c.backing_format;
    auto header_cluster = encode_header(h);
    if (!header_cluster) co_return std::unexpected(header_cluster.error());
    {
        BlockBackend blk(*file, true, "blockdev-create", true);
        const std::vector<uint8_t> image = empty_image(c, *header_cluster);
        if ((*file)->driver().caps().can_truncate) {
            if (auto r = co_await blk.co_truncate(0); !r) co_return r;
            if (auto r = co_await blk.co_truncate(image.size()); !r) co_return r;
        }
        iovec iov{const_cast<uint8_t*>(image.data()), image.size()};
        if (auto r = co_await blk.co_pwritev(0, image.size(), std::span(&iov, 1), 0); !r) co_return r;
        if (auto r = co_await blk.co_flush(); !r) co_return r;
    }

    // Grown to its size through the driver, which allocates the L1 table.
    const nlohmann::json spec = {{"driver", "qcow2"}, {"file", (*file)->node_name()}, {"backing", nullptr}};
    auto image = open_child(graph, spec, OpenContext{graph, *main_context(), "blockdev-create", NodeFlags{},
                                                     OptionSyntax::json});
    if (!image) co_return std::unexpected(image.error());
    nodes.image = *image;
    BlockBackend blk(*image, true, "blockdev-create", true);
    if (auto r = co_await blk.co_truncate(c.size); !r) co_return r;
    if (c.preallocation != "off") {
        // falloc and full: the clusters' space in the file is reserved too
        // (zeroes the file node allocates).
        auto& driver = static_cast<Qcow2Driver&>((*image)->driver());
        if (auto r = co_await driver.co_preallocate(0, c.size, c.preallocation != "metadata"); !r) co_return r;
    }
    co_return co_await blk.co_flush();
}

}  // namespace
}  // namespace ioplane::block::qcow2
