// Metadata context selection (meta_context.h) and block status extent
// gathering (extent_list.h): QEMU's rules, case by case.
#include "nbd/extent_list.h"
#include "nbd/meta_context.h"

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

namespace ioplane::nbd {
namespace {

const MetaContextOffer kOffer{.allocation_depth = true, .bitmaps = {"b0", "b1"}};

MetaContextSelection pick(std::vector<std::string> queries, bool list, const MetaContextOffer& offer = kOffer) {
    return select_meta_contexts(offer, queries, list);
}

MetaContextSelection sel(bool base, bool depth, std::vector<bool> bitmaps) {
    return MetaContextSelection{.base_allocation = base, .allocation_depth = depth, .bitmaps = std::move(bitmaps)};
}

TEST(NbdMetaContexts, NoQueryListsEverythingAndSetsNothing) {
    EXPECT_EQ(pick({}, true), sel(true, true, {true, true}));
    EXPECT_EQ(pick({}, false), sel(false, false, {false, false}));
    EXPECT_EQ(pick({}, true, MetaContextOffer{}), sel(true, false, {}));
    EXPECT_EQ(pick({}, true).count(), 4u);
}

TEST(NbdMetaContexts, ExactNames) {
    for (bool list : {true, false}) {
        EXPECT_EQ(pick({"base:allocation"}, list), sel(true, false, {false, false}));
        EXPECT_EQ(pick({"qemu:allocation-depth"}, list), sel(false, true, {false, false}));
        EXPECT_EQ(pick({"qemu:dirty-bitmap:b1"}, list), sel(false, false, {false, true}));
        EXPECT_EQ(pick({"qemu:dirty-bitmap:b1", "base:allocation", "qemu:dirty-bitmap:b0"}, list),
                  sel(true, false, {true, true}));
    }
    // What the export does not offer is not selected.
    EXPECT_EQ(pick({"qemu:allocation-depth", "qemu:dirty-bitmap:b0"}, false, MetaContextOffer{}), sel(false, false, {}));
}

TEST(NbdMetaContexts, PrefixesListOnly) {
    EXPECT_EQ(pick({"base:"}, true), sel(true, false, {false, false}));
    EXPECT_EQ(pick({"qemu:"}, true), sel(false, true, {true, true}));
    EXPECT_EQ(pick({"qemu:dirty-bitmap:"}, true), sel(false, false, {true, true}));
    for (const char* q : {"base:", "qemu:", "qemu:dirty-bitmap:"})
        EXPECT_EQ(pick({q}, false), sel(false, false, {false, false})) << q;
}

TEST(NbdMetaContexts, UnknownQueriesSelectNothing) {
    for (bool list : {true, false}) {
        for (const char* q : {"", "base", "base:alloc", "base:allocation2", "qemu", "qemu:dirty-bitmap",
                              "qemu:dirty-bitmap:b", "qemu:dirty-bitmap:b0 ", "qemu:other", "x-foo:bar", "BASE:allocation"})
            EXPECT_EQ(pick({q}, list), sel(false, false, {false, false})) << q;
    }
}

TEST(NbdMetaContexts, FirstOfTwoBitmapsWithOneName) {
    const MetaContextOffer twice{.bitmaps = {"b", "b"}};
    EXPECT_EQ(pick({"qemu:dirty-bitmap:b"}, false, twice), sel(false, false, {true, false}));
}

TEST(NbdMetaContexts, ContextName) {
    EXPECT_EQ(dirty_bitmap_context("b0"), "qemu:dirty-bitmap:b0");
    EXPECT_EQ(dirty_bitmap_context(""), "qemu:dirty-bitmap:");
}

using Pairs = std::vector<std::pair<uint32_t, uint32_t>>;  // (length, flags)

Pairs as_vector(const ExtentList& l) {
    Pairs out;
    for (const Extent& e : l.extents()) out.emplace_back(e.length, e.flags);
    return out;
}

TEST(NbdExtentList, MergesEqualFlagsDropsEmpty) {
    ExtentList l(8);
    EXPECT_TRUE(l.add(0, 1));
    EXPECT_TRUE(l.add(4096, 1));
    EXPECT_TRUE(l.add(4096, 1));
    EXPECT_TRUE(l.add(512, 0));
    EXPECT_TRUE(l.add(0, 1));
    EXPECT_TRUE(l.add(512, 1));
    EXPECT_EQ(as_vector(l), (Pairs{{8192, 1}, {512, 0}, {512, 1}}));
    EXPECT_EQ(l.total(), 9216u);
    EXPECT_FALSE(l.full());
}

TEST(NbdExtentList, MergesOnlyWithin32Bits) {
    ExtentList l(8);
    EXPECT_TRUE(l.add(UINT32_MAX - 10, 0));
    EXPECT_TRUE(l.add(10, 0));
    EXPECT_TRUE(l.add(1, 0));
    EXPECT_EQ(as_vector(l), (Pairs{{UINT32_MAX, 0}, {1, 0}}));
}

TEST(NbdExtentList, FullStaysFull) {
    ExtentList one(1);  // NBD_CMD_FLAG_REQ_ONE
    EXPECT_TRUE(one.add(100, 1));
    EXPECT_TRUE(one.add(100, 1));  // merges: still one extent
    EXPECT_FALSE(one.add(100, 0));
    EXPECT_TRUE(one.full());
    EXPECT_FALSE(one.add(100, 1));  // not merged after a refusal: the range would have a gap
    EXPECT_EQ(as_vector(one), (Pairs{{200, 1}}));
    EXPECT_EQ(one.total(), 200u);
}

}  // namespace
}  // namespace ioplane::nbd
