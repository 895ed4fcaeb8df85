// The router's choice of instance (serving/router.h): load first, KV room,
// then prefix affinity among the least loaded.
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "serving/router.h"

namespace tetra::serving {
namespace {

std::vector<InstanceLoad> Equal(int n) {
  std::vector<InstanceLoad> loads(n);
  for (int i = 0; i < n; ++i) loads[i].url_hash = std::hash<std::string>{}("http://10.0.0." + std::to_string(i));
  return loads;
}

TEST(RouterChoice, TheLeastLoadedHealthyInstance) {
  auto loads = Equal(3);
  loads[0].in_flight = 2;
  loads[1].in_flight = 1;
  loads[2].in_flight = 0;
  loads[2].healthy = false;
  EXPECT_EQ(ChooseInstance(loads, 0), 1);
  loads[1].waiting = 5;  // what it reported: a queue the router did not send
  EXPECT_EQ(ChooseInstance(loads, 0), 0);
  loads[0].pending_tokens = 8 * 512;  // a prefill queue of 8 requests' worth of tokens
  EXPECT_EQ(ChooseInstance(loads, 0), 1);
  for (auto& l : loads) l.healthy = false;
  EXPECT_EQ(ChooseInstance(loads, 0), -1);
  EXPECT_EQ(ChooseInstance({}, 0), -1);
}

TEST(RouterChoice, AFullKvCacheIsAvoidedWhileAnotherHasRoom) {
  auto loads = Equal(2);
  loads[0].kv_usage = 0.99;
  loads[1].in_flight = 3;
  EXPECT_EQ(ChooseInstance(loads, 0), 1);
  loads[1].kv_usage = 1.0;  // both full: the least loaded still
  EXPECT_EQ(ChooseInstance(loads, 0), 0);
}

TEST(RouterChoice, APrefixGoesToOneInstanceAndPrefixesSpreadOverAll) {
  auto loads = Equal(4);
  std::map<int, int> counts;
  for (uint64_t key = 1; key <= 400; ++key) {
    const int chosen = ChooseInstance(loads, key * 0x9e3779b97f4a7c15ULL);
    ASSERT_GE(chosen, 0);
    EXPECT_EQ(ChooseInstance(loads, key * 0x9e3779b97f4a7c15ULL), chosen);  // stable
    ++counts[chosen];
  }
  ASSERT_EQ(counts.size(), 4u);
  for (const auto& [instance, n] : counts) EXPECT_GT(n, 50) << "instance " << instance;
}

TEST(RouterChoice, AffinityGivesWayToALoadGap) {
  auto loads = Equal(2);
  const uint64_t key = 12345;
  const int preferred = ChooseInstance(loads, key);
  loads[preferred].in_flight = 1;  // within one request: still preferred
  EXPECT_EQ(ChooseInstance(loads, key), preferred);
  loads[preferred].in_flight = 3;  // beyond: the other one
  EXPECT_EQ(ChooseInstance(loads, key), 1 - preferred);
}

TEST(RouterChoice, AffinityKeysFollowThePromptsStart) {
  const std::string system(300, 's');
  auto completion = [](const std::string& prompt) { return R"({"prompt": ")" + prompt + R"(", "max_tokens": 4})"; };
  EXPECT_EQ(AffinityKey(false, completion(system + "one")), AffinityKey(false, completion(system + "two")));
  EXPECT_NE(AffinityKey(false, completion("a" + system)), AffinityKey(false, completion("b" + system)));
  auto chat = [](const std::string& system, const std::string& user) {
    return R"({"messages": [{"role": "system", "content": ")" + system + R"("}, {"role": "user", "content": ")" +
           user + R"("}]})";
  };
  EXPECT_EQ(AffinityKey(true, chat(system, "hi")), AffinityKey(true, chat(system, "bye")));
  EXPECT_NE(AffinityKey(true, chat("short", "hi")), AffinityKey(true, chat("short", "bye")));
  EXPECT_NE(AffinityKey(false, R"({"prompt": [1, 2, 3]})"), 0u);
  EXPECT_EQ(AffinityKey(false, R"({"prompt": [1, 2, 3]})"), AffinityKey(false, R"({"prompt": [[1, 2, 3]]})"));
  EXPECT_EQ(AffinityKey(false, "not json"), 0u);
  EXPECT_EQ(AffinityKey(true, R"({"messages": 7})"), 0u);
  EXPECT_EQ(AffinityKey(false, R"({"max_tokens": 4})"), 0u);
}

}  // namespace
}  // namespace tetra::serving

#include "serving/discovery.h"

namespace tetra::serving {
namespace {

TEST(Discovery, Base64RoundTripsAndRefusesJunk) {
  // RFC 4648's test vectors.
  const std::pair<std::string, std::string> vectors[] = {
      {"", ""}, {"f", "Zg=="}, {"fo", "Zm8="}, {"foo", "Zm9v"}, {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="},
      {"foobar", "Zm9vYmFy"}};
  for (const auto& [plain, encoded] : vectors) {
    EXPECT_EQ(Base64Encode(plain), encoded);
    EXPECT_EQ(Base64Decode(encoded).value(), plain);
  }
  const std::string key = std::string(kEtcdPrefix) + "prefill/http://10.0.0.7:8001";
  EXPECT_EQ(Base64Decode(Base64Encode(key)).value(), key);
  EXPECT_FALSE(Base64Decode("abc").ok());
  EXPECT_FALSE(Base64Decode("ab!d").ok());
}

}  // namespace
}  // namespace tetra::serving
