// Draft tokens for speculative decoding (doc/speculative.md): a proposer
// guesses how a sequence continues; the model verifies the guesses of many
// sequences in one forward step and keeps the longest correct run, so a
// batch-1 decode, pinned to the memory-bandwidth wall, gets several tokens
// per read of the weights. Proposers here need no model: they look the
// continuation up in text already seen.
//
// A proposer follows one sequence: Extend with its tokens as they become
// known (the prompt, then each accepted token), Propose before a step. Not
// thread-safe; the engine thread owns it.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace tetra::speculative {

struct Proposal {
  std::vector<int32_t> tokens;  // the guessed continuation, at most max_tokens
  int64_t match_length = 0;     // how many trailing tokens matched earlier text (the guess's support)
};

class Proposer {
 public:
  virtual ~Proposer() = default;
  // Appends tokens to the sequence followed.
  virtual void Extend(std::span<const int32_t> tokens) = 0;
  // Up to max_tokens tokens that may come next; none when nothing matches.
  virtual Proposal Propose(int max_tokens) const = 0;
  virtual int64_t size() const = 0;  // tokens followed so far
};

}  // namespace tetra::speculative
