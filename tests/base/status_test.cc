#include "base/status.h"

#include <gtest/gtest.h>

namespace tetra {
namespace {

StatusOr<int> ParsePositive(int x) {
  if (x <= 0) return Status::Errorf("value {} is not positive", x);
  return x;
}

Status UseIt(int x, int* out) {
  TETRA_ASSIGN_OR_RETURN(*out, ParsePositive(x));
  return Status::Ok();
}

TEST(StatusTest, OkAndError) {
  EXPECT_TRUE(Status::Ok().ok());
  Status e = Status::Error("boom");
  EXPECT_FALSE(e.ok());
  EXPECT_EQ(e.message(), "boom");
  EXPECT_EQ(e.WithPrefix("f.gguf: ").message(), "f.gguf: boom");
}

TEST(StatusTest, CodesSurviveAPrefix) {
  EXPECT_EQ(Status::Ok().code(), StatusCode::kOk);
  EXPECT_EQ(Status::Error("bad").code(), StatusCode::kInvalid);
  const Status full = Status::WithCode(StatusCode::kResourceExhausted, "no blocks");
  EXPECT_FALSE(full.ok());
  EXPECT_TRUE(full.is_resource_exhausted());
  EXPECT_EQ(full.WithPrefix("kv: ").code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(full.WithPrefix("kv: ").message(), "kv: no blocks");
}

TEST(StatusTest, AssignOrReturnPropagates) {
  int v = 0;
  EXPECT_TRUE(UseIt(3, &v).ok());
  EXPECT_EQ(v, 3);
  Status s = UseIt(-2, &v);
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.message(), "value -2 is not positive");
}

}  // namespace
}  // namespace tetra
