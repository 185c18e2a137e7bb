#include <gtest/gtest.h>
TEST(NbdProtocol, Placeholder) {}
