// The model-free proposers of speculative decoding against brute-force
// oracles over random token strings (small alphabets: many repeats).
#include <gtest/gtest.h>

#include <random>

#include "engine/speculative/ngram.h"
#include "engine/speculative/suffix.h"

namespace tetra::speculative {
namespace {

// The longest L (< size) such that the last L tokens also end at an earlier
// position; the earliest such end. (0, -1) when none.
std::pair<int64_t, int64_t> LongestEarlierSuffix(const std::vector<int32_t>& text) {
  const int64_t n = static_cast<int64_t>(text.size());
  for (int64_t len = n - 1; len >= 1; --len) {
    for (int64_t end = len - 1; end < n - 1; ++end) {
      if (std::equal(text.end() - len, text.end(), text.begin() + (end - len + 1))) return {len, end};
    }
  }
  return {0, -1};
}

std::vector<int32_t> RandomText(std::mt19937& rng, int length, int alphabet) {
  std::uniform_int_distribution<int32_t> token(0, alphabet - 1);
  std::vector<int32_t> text(length);
  for (auto& t : text) t = token(rng);
  return text;
}

TEST(SuffixProposer, FindsTheLongestEarlierSuffixAfterEveryToken) {
  std::mt19937 rng(7);
  for (int alphabet : {2, 3, 8, 1000}) {
    for (int trial = 0; trial < 4; ++trial) {
      const std::vector<int32_t> text = RandomText(rng, 120, alphabet);
      SuffixProposer proposer;
      std::vector<int32_t> prefix;
      for (int32_t t : text) {
        proposer.Extend({&t, 1});
        prefix.push_back(t);
        const auto [len, end] = LongestEarlierSuffix(prefix);
        const Proposal p = proposer.Propose(5);
        ASSERT_EQ(p.match_length, len) << "alphabet " << alphabet << " at " << prefix.size();
        const int64_t from = end + 1;
        const int64_t count = len == 0 ? 0 : std::min<int64_t>(5, static_cast<int64_t>(prefix.size()) - from);
        ASSERT_EQ(p.tokens, std::vector<int32_t>(prefix.begin() + (len == 0 ? 0 : from),
                                                 prefix.begin() + (len == 0 ? 0 : from + count)))
            << "alphabet " << alphabet << " at " << prefix.size();
      }
      EXPECT_EQ(proposer.size(), 120);
    }
  }
}

TEST(SuffixProposer, ProposesTheRestOfAQuotedPassage) {
  // A "file" in the prompt, then the model starts writing it back: after a
  // few tokens the whole rest is proposed, as far as asked.
  std::mt19937 rng(3);
  const std::vector<int32_t> file = RandomText(rng, 200, 5000);
  SuffixProposer proposer;
  proposer.Extend(file);
  const int32_t separator = 7777;
  proposer.Extend({&separator, 1});
  proposer.Extend({file.data(), 3});
  const Proposal p = proposer.Propose(64);
  EXPECT_EQ(p.match_length, 3);
  EXPECT_EQ(p.tokens, std::vector<int32_t>(file.begin() + 3, file.begin() + 67));
  EXPECT_TRUE(proposer.Propose(0).tokens.empty());
  EXPECT_TRUE(SuffixProposer().Propose(8).tokens.empty());
}

TEST(NgramProposer, ProposesWhatFollowedTheLatestEarlierNgram) {
  std::mt19937 rng(11);
  for (int alphabet : {2, 4, 50}) {
    const std::vector<int32_t> text = RandomText(rng, 150, alphabet);
    NgramProposer proposer(2, 4);
    std::vector<int32_t> prefix;
    for (int32_t t : text) {
      proposer.Extend({&t, 1});
      prefix.push_back(t);
      // Oracle: the largest n in [2, 4] whose last n tokens occur earlier; the latest such start.
      std::vector<int32_t> want;
      int64_t want_n = 0;
      const int64_t len = static_cast<int64_t>(prefix.size());
      for (int64_t n = std::min<int64_t>(4, len - 1); n >= 2 && want_n == 0; --n) {
        for (int64_t i = len - n - 1; i >= 0; --i) {
          if (std::equal(prefix.end() - n, prefix.end(), prefix.begin() + i)) {
            want.assign(prefix.begin() + i + n, prefix.begin() + std::min<int64_t>(i + n + 3, len));
            want_n = n;
            break;
          }
        }
      }
      const Proposal p = proposer.Propose(3);
      ASSERT_EQ(p.match_length, want_n) << "at " << len;
      ASSERT_EQ(p.tokens, want) << "at " << len;
    }
  }
}

}  // namespace
}  // namespace tetra::speculative
