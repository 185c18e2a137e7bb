#include "ioplane/core/budget.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

namespace ioplane {
namespace {

TEST(Budget, ChargesWithinTheLimitOnly) {
    Budget b(100);
    EXPECT_TRUE(b.try_charge(60, false));
    EXPECT_FALSE(b.try_charge(41, false));
    EXPECT_TRUE(b.try_charge(40, false));
    EXPECT_EQ(b.used(), 100u);
    EXPECT_TRUE(b.try_charge(500, true));  // a holder with nothing charged
    EXPECT_EQ(b.peak(), 600u);
    b.release(600);
    EXPECT_EQ(b.used(), 0u);
    EXPECT_EQ(b.peak(), 600u);
}

TEST(BudgetShare, CapAndBudgetBothBindButNeverWhileNothingIsHeld) {
    Budget b(100);
    BudgetShare greedy(b, 80);
    BudgetShare other(b, 80);
    EXPECT_TRUE(greedy.try_charge(50));
    EXPECT_TRUE(greedy.try_charge(30));
    EXPECT_FALSE(greedy.try_charge(1));   // its cap
    EXPECT_TRUE(other.try_charge(20));    // the budget's last 20
    EXPECT_FALSE(other.try_charge(1));    // the budget is spent
    greedy.release(30);
    EXPECT_TRUE(other.try_charge(30));
    EXPECT_EQ(b.used(), 100u);

    BudgetShare late(b, 80);
    EXPECT_TRUE(late.try_charge(64));  // holds nothing: always one request's worth
    EXPECT_FALSE(late.try_charge(1));
    EXPECT_EQ(b.used(), 164u);
    late.release(64);
    greedy.release(50);
    other.release(50);
    EXPECT_EQ(b.used(), 0u);
}

TEST(BudgetShare, ReleasesWhatItHoldsWhenDestroyed) {
    Budget b(100);
    {
        BudgetShare s(b, 100);
        ASSERT_TRUE(s.try_charge(70));
    }
    EXPECT_EQ(b.used(), 0u);
}

TEST(Budget, ChargeGivesItselfBackWhenDestroyed) {
    Budget b(2);
    auto first = b.charge(1);
    ASSERT_TRUE(first.has_value());
    {
        auto second = b.charge(1);
        ASSERT_TRUE(second.has_value());
        EXPECT_FALSE(b.charge(1).has_value());  // the limit
        std::optional<BudgetCharge> moved(std::move(*second));
        EXPECT_EQ(b.used(), 2u);  // moved, not released twice
    }
    EXPECT_EQ(b.used(), 1u);
    first.reset();
    EXPECT_EQ(b.used(), 0u);
}

TEST(Budget, ConcurrentChargesNeverPassTheLimit) {
    Budget b(1000);
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; t++)
        threads.emplace_back([&b] {
            for (int i = 0; i < 20000; i++)
                if (b.try_charge(7, false)) {
                    EXPECT_LE(b.used(), 1000u);
                    b.release(7);
                }
        });
    for (auto& t : threads) t.join();
    EXPECT_EQ(b.used(), 0u);
    EXPECT_LE(b.peak(), 1000u);
}

}  // namespace
}  // namespace ioplane
