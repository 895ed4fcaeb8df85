// The serving sampler against independent oracles and at its edges:
// - OracleTest: tests/fixtures/sampler/sampler_cases.json, recorded with
//   transformers' repetition-penalty / temperature / top-k / top-p / min-p
//   processors, numpy's presence / frequency penalty and logit_bias, and
//   torch.log_softmax (tools/fixtures/make_sampler_fixtures.py). The tokens
//   Sample can return are exactly those the oracle gives p > 0, with its p;
//   logprobs match torch's.
// - StatisticsTest: draws follow the distribution (5-sigma binomial bounds).
// - RobustnessTest: NaN, +-inf, all invalid, all equal, vocab 1, extreme
//   parameters: defined results, never a filtered, NaN or out-of-range token.
// - DeterminismTest: seeds, streams, interleaving (no shared state).
// - ValidateTest: a message naming the field and the value for each bad parameter.
#include "engine/sampler.h"

#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>
#include <vector>

namespace tetra {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

SamplingParams Params(float temperature, int top_k = 0, float top_p = 1.0f, float min_p = 0.0f,
                      uint64_t seed = 1) {
  SamplingParams p;
  p.temperature = temperature;
  p.top_k = top_k;
  p.top_p = top_p;
  p.min_p = min_p;
  p.seed = seed;
  return p;
}

std::map<int32_t, double> AsMap(const std::vector<TokenProb>& d) {
  std::map<int32_t, double> m;
  for (const TokenProb& t : d) m[t.token] = t.prob;
  return m;
}

// ----------------------------------------------------------------------------
// Oracle fixture
// ----------------------------------------------------------------------------

struct Fixture {
  std::vector<std::vector<float>> rows;
  std::vector<double> logsumexp;
  std::vector<std::vector<std::pair<int32_t, double>>> top20;
  nlohmann::json cases;
};

const Fixture& LoadFixture() {
  static const Fixture fixture = [] {
    Fixture f;
    std::ifstream in(std::string(TETRA_FIXTURES_DIR) + "/sampler/sampler_cases.json");
    EXPECT_TRUE(in.good()) << "missing tests/fixtures/sampler/sampler_cases.json";
    nlohmann::json j = nlohmann::json::parse(in);
    for (const auto& row : j["rows"]) {
      f.rows.push_back(row["logits"].get<std::vector<float>>());
      f.logsumexp.push_back(row["logsumexp"].get<double>());
      std::vector<std::pair<int32_t, double>> top;
      for (const auto& e : row["top20"]) top.emplace_back(e[0].get<int32_t>(), e[1].get<double>());
      f.top20.push_back(top);
    }
    f.cases = j["cases"];
    return f;
  }();
  return fixture;
}

SamplingParams FromJson(const nlohmann::json& q) {
  SamplingParams p;
  p.temperature = q["temperature"].get<float>();
  p.top_k = q["top_k"].get<int>();
  p.top_p = q["top_p"].get<float>();
  p.min_p = q["min_p"].get<float>();
  p.repetition_penalty = q["repetition_penalty"].get<float>();
  p.presence_penalty = q["presence_penalty"].get<float>();
  p.frequency_penalty = q["frequency_penalty"].get<float>();
  for (const auto& e : q["logit_bias"]) p.logit_bias.emplace_back(e[0].get<int32_t>(), e[1].get<float>());
  p.seed = 5;
  return p;
}

// A sampler in the state the case describes: its prompt, then its generated tokens accepted.
SequenceSampler SamplerFor(const nlohmann::json& q, const SamplingParams& p) {
  const std::vector<int32_t> prompt = q["prompt"].get<std::vector<int32_t>>();
  SequenceSampler s(p, 0, prompt);
  for (int32_t t : q["generated"].get<std::vector<int32_t>>()) s.Accept(t);
  return s;
}

TEST(OracleTest, FixtureHasTheCases) {
  const Fixture& f = LoadFixture();
  EXPECT_EQ(f.rows.size(), 8u);
  EXPECT_GE(f.cases.size(), 150u);
}

TEST(OracleTest, DistributionMatchesTransformersWarpers) {
  const Fixture& f = LoadFixture();
  SamplerScratch scratch;
  double worst = 0.0;
  for (size_t c = 0; c < f.cases.size(); ++c) {
    const nlohmann::json& kase = f.cases[c];
    const std::vector<float>& row = f.rows[kase["row"].get<size_t>()];
    const int64_t vocab = static_cast<int64_t>(row.size());
    const SamplingParams p = FromJson(kase["params"]);
    ASSERT_TRUE(ValidateSamplingParams(p, vocab).ok()) << kase["params"].dump();
    SequenceSampler sampler = SamplerFor(kase["params"], p);
    const std::string what = "case " + std::to_string(c) + " row " + kase["row"].dump() + " " + kase["params"].dump();
    const std::vector<TokenProb> ours = sampler.Distribution(row.data(), vocab, scratch);

    std::vector<int32_t> tokens;
    std::vector<double> probs;
    if (kase.contains("greedy_token")) {
      tokens = {kase["greedy_token"].get<int32_t>()};
      probs = {1.0};
    } else {
      probs = kase["probs"].get<std::vector<double>>();
      if (kase.contains("tokens")) {
        tokens = kase["tokens"].get<std::vector<int32_t>>();
      } else {
        for (int32_t i = 0; i < vocab; ++i) tokens.push_back(i);
      }
    }
    // The same set: every token we can return has oracle p > 0, and every
    // token with oracle p >= 1e-30 is ours (below that, float's exp is 0 or
    // subnormal: a weight e^-87 under the maximum's counts as none).
    std::map<int32_t, double> oracle;
    for (size_t i = 0; i < tokens.size(); ++i) oracle[tokens[i]] = probs[i];
    const std::map<int32_t, double> mine = AsMap(ours);
    for (const auto& [token, prob] : mine) {
      auto it = oracle.find(token);
      ASSERT_TRUE(it != oracle.end()) << what << ": token " << token << " is filtered by the oracle";
      EXPECT_NEAR(prob, it->second, 1e-5 * it->second + 1e-9) << what << " token " << token;
      worst = std::max(worst, std::abs(prob - it->second) / it->second);
    }
    for (const auto& [token, prob] : oracle) {
      if (prob >= 1e-30) {
        ASSERT_TRUE(mine.count(token)) << what << ": token " << token << " missing, p " << prob;
      }
    }
    // Sample draws from that distribution: only from the oracle's set.
    const std::set<int32_t> allowed(tokens.begin(), tokens.end());
    for (int draw = 0; draw < 50; ++draw) {
      SamplingParams seeded = p;
      seeded.seed = static_cast<uint64_t>(draw);
      SequenceSampler s = SamplerFor(kase["params"], seeded);
      const SampleResult r = s.Sample(row.data(), vocab, scratch);
      ASSERT_FALSE(r.logits_were_all_invalid) << what;
      ASSERT_TRUE(allowed.count(r.token)) << what << " drew " << r.token;
    }
  }
  std::printf("largest relative probability difference from transformers: %.3g\n", worst);
}

TEST(OracleTest, LogprobsMatchTorchLogSoftmax) {
  const Fixture& f = LoadFixture();
  SamplerScratch scratch;
  for (size_t r = 0; r < f.rows.size(); ++r) {
    const std::vector<float>& row = f.rows[r];
    const int64_t vocab = static_cast<int64_t>(row.size());
    // Logprobs come from the raw row whatever the processing does.
    // 0: the unfiltered draw's mass is the raw row's; 3: so is top-p's at
    // temperature 1; 1 and 2 recompute it.
    for (int variant = 0; variant < 4; ++variant) {
      SamplingParams p = Params(variant == 0 || variant == 3 ? 1.0f : 0.7f, variant == 1 ? 40 : 0,
                                variant >= 2 ? 0.9f : 1.0f);
      p.top_logprobs = 20;
      if (variant == 2) {
        p.logit_bias = {{7, 30.0f}};
        p.repetition_penalty = 1.5f;
      }
      const std::vector<int32_t> prompt = {1, 2, 3};
      SequenceSampler s(p, 0, prompt);
      for (int step = 0; step < 5; ++step) {
        const SampleResult res = s.Sample(row.data(), vocab, scratch);
        EXPECT_NEAR(res.logprob, row[res.token] - f.logsumexp[r], 1e-5) << r;
        ASSERT_EQ(res.top().size(), 20u);
        for (size_t i = 0; i < 20; ++i) {
          EXPECT_EQ(res.top()[i].token, f.top20[r][i].first) << "row " << r << " rank " << i;
          EXPECT_NEAR(res.top()[i].logprob, f.top20[r][i].second, 1e-5) << "row " << r << " rank " << i;
        }
      }
    }
    // Fewer alternatives, and none.
    for (int k : {0, 1, 5}) {
      SamplingParams p = Params(1.0f);
      p.top_logprobs = k;
      SequenceSampler s(p, 0, {});
      const SampleResult res = s.Sample(row.data(), vocab, scratch);
      ASSERT_EQ(res.top().size(), static_cast<size_t>(k));
      for (int i = 0; i < k; ++i) EXPECT_EQ(res.top()[i].token, f.top20[r][i].first);
      EXPECT_NEAR(res.logprob, row[res.token] - f.logsumexp[r], 1e-5);
    }
  }
}

// ----------------------------------------------------------------------------
// Statistics
// ----------------------------------------------------------------------------

// Draws n tokens (one sampler, reused scratch) and checks every token's
// frequency against its probability within 5 binomial standard deviations;
// tokens outside the distribution must never appear.
void ExpectFrequenciesFollow(const SamplingParams& p, const std::vector<float>& row, int n) {
  SamplerScratch scratch;
  SequenceSampler sampler(p, 0, {});
  const std::map<int32_t, double> dist = AsMap(sampler.Distribution(row.data(), static_cast<int64_t>(row.size()), scratch));
  ASSERT_FALSE(dist.empty());
  double total = 0.0;
  for (const auto& [token, prob] : dist) total += prob;
  EXPECT_NEAR(total, 1.0, 1e-6);
  std::map<int32_t, int> counts;
  for (int i = 0; i < n; ++i) {
    const SampleResult r = sampler.Sample(row.data(), static_cast<int64_t>(row.size()), scratch);
    ASSERT_TRUE(dist.count(r.token)) << "drew " << r.token << " outside the distribution";
    ++counts[r.token];
  }
  for (const auto& [token, prob] : dist) {
    const double sigma = std::sqrt(prob * (1 - prob) / n);
    EXPECT_NEAR(counts[token] / static_cast<double>(n), prob, 5 * sigma + 1e-12) << "token " << token;
  }
}

TEST(StatisticsTest, SmallSoftmax) {
  ExpectFrequenciesFollow(Params(1.0f, 0, 1.0f, 0.0f, 123), {std::log(0.6f), std::log(0.3f), std::log(0.1f)}, 20000);
}

// Several blocks of the unfiltered path (blocks of 256 tokens), likely
// tokens in each and in the tail.
std::vector<float> SpreadRow() {
  std::vector<float> row(700);
  std::mt19937 gen(3);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (float& x : row) x = normal(gen) - 4.0f;
  for (int id : {3, 255, 256, 300, 511, 512, 699}) row[id] = 1.0f + 0.1f * static_cast<float>(id % 7);
  return row;
}

TEST(StatisticsTest, UnfilteredAcrossBlocks) { ExpectFrequenciesFollow(Params(1.0f, 0, 1.0f, 0.0f, 9), SpreadRow(), 40000); }
TEST(StatisticsTest, TopK) { ExpectFrequenciesFollow(Params(0.8f, 5, 1.0f, 0.0f, 10), SpreadRow(), 30000); }
TEST(StatisticsTest, TopP) { ExpectFrequenciesFollow(Params(1.2f, 0, 0.8f, 0.0f, 11), SpreadRow(), 30000); }
TEST(StatisticsTest, MinP) { ExpectFrequenciesFollow(Params(1.0f, 0, 1.0f, 0.2f, 12), SpreadRow(), 30000); }
TEST(StatisticsTest, Combined) { ExpectFrequenciesFollow(Params(0.9f, 6, 0.9f, 0.1f, 13), SpreadRow(), 30000); }

TEST(StatisticsTest, TopPKeepsTheSmallestSetReachingP) {
  // Probabilities 0.5, 0.25, 0.125, 0.125: 0.7 needs the first two.
  const std::vector<float> row = {std::log(4.0f), std::log(2.0f), 0.0f, 0.0f};
  SamplerScratch scratch;
  SequenceSampler s(Params(1.0f, 0, 0.7f), 0, {});
  const auto d = AsMap(s.Distribution(row.data(), 4, scratch));
  ASSERT_EQ(d.size(), 2u);
  EXPECT_NEAR(d.at(0), 2.0 / 3.0, 1e-6);
  EXPECT_NEAR(d.at(1), 1.0 / 3.0, 1e-6);
}

// ----------------------------------------------------------------------------
// Robustness
// ----------------------------------------------------------------------------

// Every way of sampling that row (greedy, each filter, combined, with and
// without logprobs): never a token outside `allowed`, and `allowed` is what
// Distribution reports.
void ExpectOnly(const std::vector<float>& row, const std::set<int32_t>& allowed, const std::string& what) {
  const int64_t vocab = static_cast<int64_t>(row.size());
  SamplerScratch scratch;
  const std::vector<SamplingParams> all = {
      Params(0.0f), Params(1.0f), Params(0.7f, 3), Params(1.0f, 0, 0.9f), Params(1.0f, 0, 1.0f, 0.1f),
      Params(1.5f, 2, 0.5f, 0.5f), Params(1e-30f), Params(100.0f), Params(1.0f, 1 << 30), Params(1.0f, 0, 1e-9f),
      Params(1.0f, 0, 1.0f, 1.0f)};
  for (size_t i = 0; i < all.size(); ++i) {
    SamplingParams p = all[i];
    p.top_logprobs = static_cast<int>(i % 3) * 10 - 1;
    SequenceSampler s(p, i, {});
    for (const TokenProb& t : s.Distribution(row.data(), vocab, scratch)) {
      EXPECT_TRUE(allowed.count(t.token)) << what << " params " << i << ": distribution has " << t.token;
      EXPECT_TRUE(t.prob > 0.0 && t.prob <= 1.0) << what;
    }
    for (int draw = 0; draw < 40; ++draw) {
      const SampleResult r = s.Sample(row.data(), vocab, scratch);
      ASSERT_FALSE(r.logits_were_all_invalid) << what << " params " << i;
      ASSERT_TRUE(allowed.count(r.token)) << what << " params " << i << ": drew " << r.token;
      ASSERT_FALSE(std::isnan(r.logprob)) << what;
      for (const TokenLogprob& t : r.top()) {
        ASSERT_TRUE(t.token >= 0 && t.token < vocab);
        ASSERT_FALSE(std::isnan(t.logprob));
      }
    }
  }
}

TEST(RobustnessTest, NaNIsNeverChosen) {
  std::vector<float> row = {1.0f, kNaN, 0.5f, kNaN, -1.0f};
  ExpectOnly(row, {0, 2, 4}, "NaN");
  // NaN everywhere but one token; NaN in every lane of a vector block.
  std::vector<float> mostly(300, kNaN);
  mostly[217] = -5.0f;
  ExpectOnly(mostly, {217}, "mostly NaN");
}

TEST(RobustnessTest, MinusInfinityIsNeverChosen) {
  std::vector<float> row(100, -kInf);
  row[10] = 3.0f;
  row[90] = 2.0f;
  row[50] = kNaN;
  ExpectOnly(row, {10, 90}, "-inf");
}

TEST(RobustnessTest, PlusInfinityTakesAllTheMass) {
  std::vector<float> row(200, 0.0f);
  row[150] = kInf;
  ExpectOnly(row, {150}, "one +inf");
  row[40] = kInf;
  ExpectOnly(row, {40, 150}, "two +inf");
  SamplerScratch scratch;
  SequenceSampler uniform(Params(1.0f), 0, {});
  const auto d = AsMap(uniform.Distribution(row.data(), 200, scratch));
  ASSERT_EQ(d.size(), 2u);
  EXPECT_DOUBLE_EQ(d.at(40), 0.5);
  EXPECT_DOUBLE_EQ(d.at(150), 0.5);
  // Greedy and a top-p that keeps one of the two: the lower id.
  SequenceSampler greedy(Params(0.0f), 0, {});
  EXPECT_EQ(greedy.Sample(row.data(), 200, scratch).token, 40);
  SequenceSampler nucleus(Params(1.0f, 0, 0.5f), 0, {});
  EXPECT_EQ(AsMap(nucleus.Distribution(row.data(), 200, scratch)).size(), 1u);
  EXPECT_EQ(nucleus.Sample(row.data(), 200, scratch).token, 40);
  // Raw logprobs: -log 2 for each +inf token, the rest left out.
  SamplingParams lp = Params(1.0f);
  lp.top_logprobs = 5;
  SequenceSampler with_logprobs(lp, 0, {});
  const SampleResult r = with_logprobs.Sample(row.data(), 200, scratch);
  EXPECT_NEAR(r.logprob, -std::log(2.0f), 1e-6);
  ASSERT_EQ(r.top().size(), 2u);
  EXPECT_EQ(r.top()[0].token, 40);
  EXPECT_EQ(r.top()[1].token, 150);
}

TEST(RobustnessTest, AllInvalidIsFlagged) {
  for (const std::vector<float>& row :
       {std::vector<float>(50, -kInf), std::vector<float>(50, kNaN), std::vector<float>{kNaN, -kInf, kNaN}}) {
    const int64_t vocab = static_cast<int64_t>(row.size());
    SamplerScratch scratch;
    for (const SamplingParams& base : {Params(0.0f), Params(1.0f), Params(1.0f, 5), Params(1.0f, 0, 0.9f),
                                       Params(1.0f, 0, 1.0f, 0.2f)}) {
      SamplingParams p = base;
      p.top_logprobs = 3;
      SequenceSampler s(p, 0, {});
      EXPECT_TRUE(s.Distribution(row.data(), vocab, scratch).empty());
      const SampleResult r = s.Sample(row.data(), vocab, scratch);
      EXPECT_TRUE(r.logits_were_all_invalid);
      EXPECT_EQ(r.token, 0);
      EXPECT_EQ(r.logprob, -kInf);
      EXPECT_TRUE(r.top().empty());
    }
  }
  // Vocabulary 0: flagged too, nothing read.
  SamplerScratch scratch;
  SequenceSampler s(Params(1.0f), 0, {});
  EXPECT_TRUE(s.Sample(nullptr, 0, scratch).logits_were_all_invalid);
}

TEST(RobustnessTest, AllEqualIsUniform) {
  const std::vector<float> row(1000, 2.5f);
  SamplerScratch scratch;
  SequenceSampler plain(Params(1.0f), 0, {});
  const auto d = plain.Distribution(row.data(), 1000, scratch);
  ASSERT_EQ(d.size(), 1000u);
  for (const TokenProb& t : d) EXPECT_NEAR(t.prob, 1e-3, 1e-9);
  // Top-k keeps every tie at the k-th value; min-p 1 keeps every maximum.
  SequenceSampler top_k(Params(1.0f, 5), 0, {});
  EXPECT_EQ(top_k.Distribution(row.data(), 1000, scratch).size(), 1000u);
  SequenceSampler min_p(Params(1.0f, 0, 1.0f, 1.0f), 0, {});
  EXPECT_EQ(min_p.Distribution(row.data(), 1000, scratch).size(), 1000u);
  // Top-p cuts ties in id order: the first 250 ids.
  SequenceSampler top_p(Params(1.0f, 0, 0.25f), 0, {});
  const auto q = top_p.Distribution(row.data(), 1000, scratch);
  ASSERT_EQ(q.size(), 250u);
  EXPECT_EQ(q.front().token, 0);
  EXPECT_EQ(q.back().token, 249);
  SequenceSampler greedy(Params(0.0f), 0, {});
  EXPECT_EQ(greedy.Sample(row.data(), 1000, scratch).token, 0);
  ExpectOnly(row, [] {
    std::set<int32_t> all;
    for (int i = 0; i < 1000; ++i) all.insert(i);
    return all;
  }(), "all equal");
}

TEST(RobustnessTest, VocabularyOfOne) {
  ExpectOnly({-3.0f}, {0}, "vocab 1");
  ExpectOnly({kInf}, {0}, "vocab 1 +inf");
}

TEST(RobustnessTest, ExtremeParameters) {
  std::vector<float> row(500);
  for (int i = 0; i < 500; ++i) row[i] = std::sin(i * 0.37f) * 3.0f;
  row[123] = 10.0f;
  SamplerScratch scratch;
  // Temperature 1e-30 is greedy; just above kGreedyTemperature nearly so; 100 nearly uniform.
  SequenceSampler tiny(Params(1e-30f), 0, {});
  EXPECT_EQ(tiny.Sample(row.data(), 500, scratch).token, 123);
  SequenceSampler cold(Params(2e-5f), 0, {});
  const auto cold_d = AsMap(cold.Distribution(row.data(), 500, scratch));
  EXPECT_NEAR(cold_d.at(123), 1.0, 1e-9);
  SequenceSampler hot(Params(100.0f), 0, {});
  const auto hot_d = hot.Distribution(row.data(), 500, scratch);
  EXPECT_EQ(hot_d.size(), 500u);
  for (const TokenProb& t : hot_d) EXPECT_NEAR(t.prob, 1.0 / 500, 0.3 / 500);
  // top_k beyond the vocabulary is off; top_k = 1 is the argmax.
  SequenceSampler big_k(Params(1.0f, 100000), 0, {});
  EXPECT_EQ(big_k.Distribution(row.data(), 500, scratch).size(), 500u);
  SequenceSampler k1(Params(1.0f, 1), 0, {});
  EXPECT_EQ(k1.Sample(row.data(), 500, scratch).token, 123);
  // top_p -> 0 and min_p = 1 keep only the most likely token.
  SequenceSampler p0(Params(1.0f, 0, 1e-9f), 0, {});
  EXPECT_EQ(p0.Distribution(row.data(), 500, scratch).size(), 1u);
  SequenceSampler m1(Params(3.0f, 0, 1.0f, 1.0f), 0, {});
  EXPECT_EQ(m1.Distribution(row.data(), 500, scratch).size(), 1u);
  // Finite logits near the float limit, and penalties that overflow them to +-inf.
  std::vector<float> huge = {3e38f, -3e38f, 1e38f, -FLT_MAX, FLT_MAX};
  ExpectOnly(huge, {0, 1, 2, 3, 4}, "huge");
  SamplingParams overflow = Params(1.0f);
  overflow.repetition_penalty = 0.1f;  // 3e38 / 0.1 -> +inf
  SequenceSampler o(overflow, 0, std::vector<int32_t>{0});
  EXPECT_EQ(o.Sample(huge.data(), 5, scratch).token, 0);
}

TEST(RobustnessTest, ParametersValidateRejectsDoNotCrash) {
  std::vector<float> row(300);
  for (int i = 0; i < 300; ++i) row[i] = std::cos(i * 0.11f);
  SamplerScratch scratch;
  std::vector<SamplingParams> bad(10, Params(1.0f));
  bad[0].temperature = kNaN;
  bad[1].temperature = -1.0f;
  bad[2].top_k = -7;
  bad[3].top_p = 0.0f;
  bad[4].top_p = kNaN;
  bad[5].min_p = 5.0f;
  bad[6].repetition_penalty = 0.0f;
  bad[7].logit_bias = {{-5, 1.0f}, {300, 2.0f}, {1 << 30, kNaN}};
  bad[8].top_logprobs = 500;
  bad[9].presence_penalty = kInf;
  bad[9].frequency_penalty = -kInf;
  bad[9].temperature = kInf;
  const std::vector<int32_t> prompt = {-1, 299, 300, 1 << 30};
  for (size_t i = 0; i < bad.size(); ++i) {
    EXPECT_FALSE(ValidateSamplingParams(bad[i], 300).ok()) << i;
    SequenceSampler s(bad[i], 0, prompt);
    s.Accept(-3);
    s.Accept(100000);
    for (int step = 0; step < 20; ++step) {
      const SampleResult r = s.Sample(row.data(), 300, scratch);
      ASSERT_FALSE(r.logits_were_all_invalid) << i;
      ASSERT_TRUE(r.token >= 0 && r.token < 300) << i;
      ASSERT_LE(r.top().size(), static_cast<size_t>(kMaxTopLogprobs));
    }
  }
}

TEST(RobustnessTest, ArgmaxIsNaNSafeAndPrefersTheLowestIndex) {
  const std::vector<float> ties = {0.1f, 2.0f, -1.0f, 2.0f};
  EXPECT_EQ(Argmax(ties.data(), 4), 1);
  const std::vector<float> nan_first = {kNaN, -1.0f, 3.0f, kNaN, 3.0f};
  EXPECT_EQ(Argmax(nan_first.data(), 5), 2);
  const std::vector<float> none = {kNaN, -kInf, kNaN};
  EXPECT_EQ(Argmax(none.data(), 3), 0);
  EXPECT_EQ(Argmax(nullptr, 0), 0);
  // Across the vector lanes and blocks: every position of a long row.
  std::vector<float> row(517, -1.0f);
  for (int64_t at : {0, 15, 16, 63, 64, 200, 511, 512, 516}) {
    row[at] = 5.0f;
    EXPECT_EQ(Argmax(row.data(), 517), at);
    row[516] = 5.0f;  // a later tie loses
    EXPECT_EQ(Argmax(row.data(), 517), at);
    row[at] = -1.0f;
    row[516] = -1.0f;
  }
  row[300] = kInf;
  row[100] = kNaN;
  EXPECT_EQ(Argmax(row.data(), 517), 300);
}

// ----------------------------------------------------------------------------
// Penalty state
// ----------------------------------------------------------------------------

TEST(PenaltyTest, SampleRecordsTheChosenToken) {
  // Greedy with a presence penalty of 2: token 0 leads by 1, then is penalised below token 1.
  const std::vector<float> row = {3.0f, 2.0f, 0.0f};
  SamplingParams p = Params(0.0f);
  p.presence_penalty = 2.0f;
  SamplerScratch scratch;
  SequenceSampler s(p, 0, {});
  EXPECT_EQ(s.Sample(row.data(), 3, scratch).token, 0);
  EXPECT_EQ(s.Sample(row.data(), 3, scratch).token, 1);
  EXPECT_EQ(s.Sample(row.data(), 3, scratch).token, 0);  // 3-2 > 2-2, 0: presence counts once
  // Frequency counts occurrences: Accept(0) twice more lowers it by 2 each.
  SamplingParams f = Params(0.0f);
  f.frequency_penalty = 1.5f;
  SequenceSampler g(f, 0, {});
  g.Accept(0);
  EXPECT_EQ(g.Sample(row.data(), 3, scratch).token, 1);  // 1.5 < 2
}

TEST(PenaltyTest, RepetitionPenaltyCoversThePromptAndSignMatters) {
  const std::vector<float> row = {2.0f, 1.5f, -1.0f, -1.2f};
  SamplingParams p = Params(1.0f);
  p.repetition_penalty = 2.0f;
  const std::vector<int32_t> prompt = {0, 0, 2};  // each distinct token once
  SamplerScratch scratch;
  SequenceSampler s(p, 0, prompt);
  const auto d = AsMap(s.Distribution(row.data(), 4, scratch));
  const double w[] = {std::exp(1.0), std::exp(1.5), std::exp(-2.0), std::exp(-1.2)};
  const double z = w[0] + w[1] + w[2] + w[3];
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(d.at(i), w[i] / z, 1e-6) << i;
  // Presence / frequency ignore the prompt.
  SamplingParams q = Params(1.0f);
  q.presence_penalty = 2.0f;
  q.frequency_penalty = 2.0f;
  SequenceSampler t(q, 0, prompt);
  const auto e = AsMap(t.Distribution(row.data(), 4, scratch));
  const double v[] = {std::exp(2.0), std::exp(1.5), std::exp(-1.0), std::exp(-1.2)};
  const double y = v[0] + v[1] + v[2] + v[3];
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(e.at(i), v[i] / y, 1e-6) << i;
}

TEST(PenaltyTest, LogitBiasComesFirstAndDoesNotTouchTheCallersRow) {
  const std::vector<float> row = {1.0f, 0.0f, 0.0f};
  SamplingParams p = Params(0.0f);
  p.logit_bias = {{2, 1.5f}};
  p.repetition_penalty = 2.0f;  // applies to the biased logit: 1.5 / 2 = 0.75 < 1
  SamplerScratch scratch;
  SequenceSampler s(p, 0, std::vector<int32_t>{2});
  EXPECT_EQ(s.Sample(row.data(), 3, scratch).token, 0);
  EXPECT_EQ(row[2], 0.0f);
  SamplingParams q = Params(0.0f);
  q.logit_bias = {{2, 1.5f}};
  SequenceSampler t(q, 0, {});
  EXPECT_EQ(t.Sample(row.data(), 3, scratch).token, 2);
}

// Many distinct prompt and generated tokens (the penalty table grows several
// times): the distribution equals one computed the plain way, counting with a map.
TEST(PenaltyTest, ManyTokensMatchAPlainCount) {
  const int64_t vocab = 5000;
  std::mt19937 gen(21);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<float> row(vocab);
  for (float& x : row) x = normal(gen);
  std::uniform_int_distribution<int32_t> any(0, vocab - 1);
  std::vector<int32_t> prompt(3000), generated(700);
  for (int32_t& t : prompt) t = any(gen);
  for (int32_t& t : generated) t = any(gen) % 900;  // repeats
  SamplingParams p = Params(0.9f);
  p.repetition_penalty = 1.4f;
  p.presence_penalty = 0.3f;
  p.frequency_penalty = 0.2f;
  p.logit_bias = {{17, 5.0f}, {4999, -3.0f}};
  SequenceSampler s(p, 0, prompt);
  for (int32_t t : generated) s.Accept(t);
  SamplerScratch scratch;
  const auto ours = AsMap(s.Distribution(row.data(), vocab, scratch));

  std::map<int32_t, int> count;
  for (int32_t t : generated) ++count[t];
  const std::set<int32_t> seen_in_prompt(prompt.begin(), prompt.end());
  std::vector<double> logit(row.begin(), row.end());
  for (const auto& [t, b] : p.logit_bias) logit[t] += b;
  for (int64_t t = 0; t < vocab; ++t) {
    const bool seen = seen_in_prompt.count(static_cast<int32_t>(t)) || count.count(static_cast<int32_t>(t));
    if (seen) logit[t] = logit[t] > 0 ? logit[t] / 1.4 : logit[t] * 1.4;
    if (auto it = count.find(static_cast<int32_t>(t)); it != count.end()) logit[t] -= 0.2 * it->second + 0.3;
  }
  double max = logit[0], z = 0.0;
  for (double l : logit) max = std::max(max, l);
  for (double l : logit) z += std::exp((l - max) / 0.9);
  ASSERT_EQ(ours.size(), static_cast<size_t>(vocab));
  for (int64_t t = 0; t < vocab; ++t) {
    const double expected = std::exp((logit[t] - max) / 0.9) / z;
    EXPECT_NEAR(ours.at(static_cast<int32_t>(t)), expected, 2e-5 * expected) << t;
  }
}

// ----------------------------------------------------------------------------
// Determinism
// ----------------------------------------------------------------------------

std::vector<float> StepRow(int step) {
  std::vector<float> row(4000);
  for (int i = 0; i < 4000; ++i) row[i] = std::sin(i * 0.37f + step) * 3.0f + std::cos(i * 0.011f) * 2.0f;
  return row;
}

std::vector<int32_t> Steps(SequenceSampler& s, SamplerScratch& scratch, int steps) {
  std::vector<int32_t> out;
  for (int i = 0; i < steps; ++i) {
    const std::vector<float> row = StepRow(i);
    out.push_back(s.Sample(row.data(), 4000, scratch).token);
  }
  return out;
}

SamplingParams Busy(uint64_t seed) {
  SamplingParams p = Params(0.9f, 0, 0.95f, 0.0f, seed);
  p.frequency_penalty = 0.2f;
  return p;
}

TEST(DeterminismTest, SameSeedSameSequence) {
  SamplerScratch scratch;
  for (const SamplingParams& p : {Busy(99), Params(1.0f, 0, 1.0f, 0.0f, 7), Params(0.8f, 40, 1.0f, 0.0f, 7),
                                  Params(1.0f, 0, 1.0f, 0.05f, 7)}) {
    SequenceSampler a(p, 0, {});
    SequenceSampler b(p, 0, {});
    EXPECT_EQ(Steps(a, scratch, 100), Steps(b, scratch, 100));
  }
}

TEST(DeterminismTest, StreamsAndSeedsDiffer) {
  SamplerScratch scratch;
  SequenceSampler a(Busy(99), 0, {});
  SequenceSampler b(Busy(99), 1, {});
  SequenceSampler c(Busy(100), 0, {});
  const auto ra = Steps(a, scratch, 100);
  EXPECT_NE(ra, Steps(b, scratch, 100));
  EXPECT_NE(ra, Steps(c, scratch, 100));
  // Without a seed, each sampler picks its own.
  SamplingParams unseeded = Busy(0);
  unseeded.seed.reset();
  SequenceSampler d(unseeded, 0, {});
  SequenceSampler e(unseeded, 0, {});
  EXPECT_NE(d.seed(), e.seed());
}

TEST(DeterminismTest, InterleavedSamplersShareNoState) {
  SamplerScratch scratch;
  SequenceSampler alone_a(Busy(1), 0, {});
  SequenceSampler alone_b(Params(0.7f, 20, 1.0f, 0.0f, 2), 3, {});
  const auto expect_a = Steps(alone_a, scratch, 60);
  const auto expect_b = Steps(alone_b, scratch, 60);
  SequenceSampler a(Busy(1), 0, {});
  SequenceSampler b(Params(0.7f, 20, 1.0f, 0.0f, 2), 3, {});
  SamplerScratch shared;
  std::vector<int32_t> got_a, got_b;
  for (int i = 0; i < 60; ++i) {
    const std::vector<float> row = StepRow(i);
    got_a.push_back(a.Sample(row.data(), 4000, shared).token);
    got_b.push_back(b.Sample(row.data(), 4000, shared).token);
  }
  EXPECT_EQ(got_a, expect_a);
  EXPECT_EQ(got_b, expect_b);
}

// ----------------------------------------------------------------------------
// Validation
// ----------------------------------------------------------------------------

void ExpectRejected(const SamplingParams& p, const std::string& message) {
  const Status s = ValidateSamplingParams(p, 1000);
  ASSERT_FALSE(s.ok()) << message;
  EXPECT_EQ(s.message(), message);
}

TEST(ValidateTest, AcceptsTheDocumentedRanges) {
  EXPECT_TRUE(ValidateSamplingParams(SamplingParams{}, 1000).ok());
  SamplingParams p;
  p.temperature = 100.0f;
  p.top_k = -1;
  p.top_p = 1e-6f;
  p.min_p = 1.0f;
  p.repetition_penalty = 10.0f;
  p.presence_penalty = -2.0f;
  p.frequency_penalty = 2.0f;
  p.logit_bias = {{0, -100.0f}, {999, 100.0f}};
  p.top_logprobs = 20;
  EXPECT_TRUE(ValidateSamplingParams(p, 1000).ok());
  p.temperature = 0.0f;
  p.top_k = 5000;  // beyond the vocabulary: off
  p.top_logprobs = -1;
  EXPECT_TRUE(ValidateSamplingParams(p, 1000).ok());
}

TEST(ValidateTest, NamesTheFieldAndTheValue) {
  SamplingParams p;
  p.temperature = 150.0f;
  ExpectRejected(p, "temperature must be in [0, 100], got 150");
  p.temperature = -0.5f;
  ExpectRejected(p, "temperature must be in [0, 100], got -0.5");
  p.temperature = kNaN;
  ExpectRejected(p, "temperature must be in [0, 100], got nan");
  p = {};
  p.top_k = -2;
  ExpectRejected(p, "top_k must be -1 or 0 (off) or a positive count, got -2");
  p = {};
  p.top_p = 1.5f;
  ExpectRejected(p, "top_p must be in (0, 1], got 1.5");
  p.top_p = 0.0f;
  ExpectRejected(p, "top_p must be in (0, 1], got 0");
  p.top_p = kNaN;
  ExpectRejected(p, "top_p must be in (0, 1], got nan");
  p = {};
  p.min_p = -0.1f;
  ExpectRejected(p, "min_p must be in [0, 1], got -0.1");
  p.min_p = kNaN;
  ExpectRejected(p, "min_p must be in [0, 1], got nan");
  p = {};
  p.repetition_penalty = 0.0f;
  ExpectRejected(p, "repetition_penalty must be in (0, 10], got 0");
  p.repetition_penalty = 11.0f;
  ExpectRejected(p, "repetition_penalty must be in (0, 10], got 11");
  p = {};
  p.presence_penalty = 2.5f;
  ExpectRejected(p, "presence_penalty must be in [-2, 2], got 2.5");
  p = {};
  p.frequency_penalty = -3.0f;
  ExpectRejected(p, "frequency_penalty must be in [-2, 2], got -3");
  p.frequency_penalty = kInf;
  ExpectRejected(p, "frequency_penalty must be in [-2, 2], got inf");
  p = {};
  p.logit_bias = {{5, 1.0f}, {1000, 1.0f}};
  ExpectRejected(p, "logit_bias token id 1000 is outside the vocabulary [0, 1000)");
  p.logit_bias = {{-1, 1.0f}};
  ExpectRejected(p, "logit_bias token id -1 is outside the vocabulary [0, 1000)");
  p.logit_bias = {{5, 101.0f}};
  ExpectRejected(p, "logit_bias for token 5 must be in [-100, 100], got 101");
  p.logit_bias = {{5, kNaN}};
  ExpectRejected(p, "logit_bias for token 5 must be in [-100, 100], got nan");
  p.logit_bias = {{7, 1.0f}, {5, 2.0f}, {7, 3.0f}};
  ExpectRejected(p, "logit_bias lists token 7 more than once");
  p = {};
  p.top_logprobs = 21;
  ExpectRejected(p, "top_logprobs must be in [0, 20] (or -1 for none), got 21");
  p.top_logprobs = -2;
  ExpectRejected(p, "top_logprobs must be in [0, 20] (or -1 for none), got -2");
  EXPECT_EQ(ValidateSamplingParams(SamplingParams{}, 0).message(), "vocab_size must be positive, got 0");
}

}  // namespace
}  // namespace tetra
