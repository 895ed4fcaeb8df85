// N-gram prompt lookup (what llama.cpp's lookup decoding and vLLM's `ngram`
// speculation do): the last n tokens (n from max_n down to min_n) are
// searched for in the sequence's earlier text, latest occurrence first, and
// the tokens that followed it are proposed. The simple baseline; O(length)
// per proposal.
#pragma once

#include "engine/speculative/proposer.h"

namespace tetra::speculative {

class NgramProposer : public Proposer {
 public:
  NgramProposer(int min_n = 2, int max_n = 4) : min_n_(min_n), max_n_(max_n) {}
  void Extend(std::span<const int32_t> tokens) override { text_.insert(text_.end(), tokens.begin(), tokens.end()); }
  Proposal Propose(int max_tokens) const override;
  int64_t size() const override { return static_cast<int64_t>(text_.size()); }

 private:
  int min_n_, max_n_;
  std::vector<int32_t> text_;
};

}  // namespace tetra::speculative
