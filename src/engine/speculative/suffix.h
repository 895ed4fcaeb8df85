// Suffix decoding (SuffixDecoding, arXiv 2411.04975) on a suffix automaton
// of the sequence's tokens: the longest suffix of the text that occurred
// before is found in O(1) after each token (amortized), and the tokens that
// followed its first occurrence are proposed. Unlike n-gram lookup the
// match is as long as the text allows (a whole quoted function, not 4
// tokens), which is what lets the speculation length follow the match.
// Memory: at most 2 states per token.
#pragma once

#include <memory>
#include <unordered_map>
#include <utility>

#include "engine/speculative/proposer.h"

namespace tetra::speculative {

class SuffixProposer : public Proposer {
 public:
  SuffixProposer();
  void Extend(std::span<const int32_t> tokens) override;
  Proposal Propose(int max_tokens) const override;
  int64_t size() const override { return static_cast<int64_t>(text_.size()); }

 private:
  struct State {
    int64_t len = 0;        // the longest string this state stands for
    int32_t link = -1;      // suffix link
    int64_t first_end = 0;  // end (index of the last token) of its first occurrence
    std::vector<std::pair<int32_t, int32_t>> edges;  // token -> state, while few
    std::unique_ptr<std::unordered_map<int32_t, int32_t>> many;  // once there are many
  };
  int32_t Next(int32_t state, int32_t token) const;
  void SetNext(int32_t state, int32_t token, int32_t to);
  void Append(int32_t token);

  std::vector<int32_t> text_;
  std::vector<State> states_;
  int32_t last_ = 0;
};

}  // namespace tetra::speculative
