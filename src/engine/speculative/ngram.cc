#include "engine/speculative/ngram.h"

#include <algorithm>

namespace tetra::speculative {

Proposal NgramProposer::Propose(int max_tokens) const {
  Proposal p;
  const int64_t len = static_cast<int64_t>(text_.size());
  if (max_tokens <= 0) return p;
  for (int64_t n = std::min<int64_t>(max_n_, len - 1); n >= min_n_; --n) {
    const int32_t* pattern = text_.data() + len - n;
    // Latest earlier occurrence: it starts at i and ends before the suffix itself.
    for (int64_t i = len - n - 1; i >= 0; --i) {
      if (!std::equal(pattern, pattern + n, text_.data() + i)) continue;
      const int64_t from = i + n;
      const int64_t count = std::min<int64_t>(max_tokens, len - from);
      p.tokens.assign(text_.begin() + from, text_.begin() + from + count);
      p.match_length = n;
      return p;
    }
  }
  return p;
}

}  // namespace tetra::speculative
