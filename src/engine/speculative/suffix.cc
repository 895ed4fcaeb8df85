#include "engine/speculative/suffix.h"

#include <algorithm>

namespace tetra::speculative {

namespace {
constexpr size_t kFewEdges = 16;
}  // namespace

SuffixProposer::SuffixProposer() { states_.emplace_back(); }

int32_t SuffixProposer::Next(int32_t state, int32_t token) const {
  const State& s = states_[state];
  if (s.many) {
    const auto it = s.many->find(token);
    return it == s.many->end() ? -1 : it->second;
  }
  for (const auto& [t, to] : s.edges) {
    if (t == token) return to;
  }
  return -1;
}

void SuffixProposer::SetNext(int32_t state, int32_t token, int32_t to) {
  State& s = states_[state];
  if (s.many) {
    (*s.many)[token] = to;
    return;
  }
  for (auto& [t, next] : s.edges) {
    if (t == token) {
      next = to;
      return;
    }
  }
  s.edges.emplace_back(token, to);
  if (s.edges.size() > kFewEdges) {
    s.many = std::make_unique<std::unordered_map<int32_t, int32_t>>(s.edges.begin(), s.edges.end());
    s.edges.clear();
    s.edges.shrink_to_fit();
  }
}

void SuffixProposer::Extend(std::span<const int32_t> tokens) {
  for (int32_t t : tokens) Append(t);
}

// The standard online construction (Blumer et al.), with each state's first
// end position kept for the continuation.
void SuffixProposer::Append(int32_t token) {
  text_.push_back(token);
  const int32_t cur = static_cast<int32_t>(states_.size());
  states_.emplace_back();
  states_[cur].len = states_[last_].len + 1;
  states_[cur].first_end = static_cast<int64_t>(text_.size()) - 1;
  int32_t p = last_;
  while (p != -1 && Next(p, token) < 0) {
    SetNext(p, token, cur);
    p = states_[p].link;
  }
  if (p == -1) {
    states_[cur].link = 0;
  } else {
    const int32_t q = Next(p, token);
    if (states_[p].len + 1 == states_[q].len) {
      states_[cur].link = q;
    } else {
      const int32_t clone = static_cast<int32_t>(states_.size());
      states_.emplace_back();
      State& c = states_[clone];
      const State& original = states_[q];
      c.len = states_[p].len + 1;
      c.link = original.link;
      c.first_end = original.first_end;
      c.edges = original.edges;
      if (original.many) c.many = std::make_unique<std::unordered_map<int32_t, int32_t>>(*original.many);
      while (p != -1 && Next(p, token) == q) {
        SetNext(p, token, clone);
        p = states_[p].link;
      }
      states_[q].link = clone;
      states_[cur].link = clone;
    }
  }
  last_ = cur;
}

Proposal SuffixProposer::Propose(int max_tokens) const {
  Proposal p;
  if (text_.empty() || max_tokens <= 0) return p;
  // The suffix link of the whole text's state: its longest suffix that also
  // ends somewhere earlier; first_end is the earliest such end.
  const State& s = states_[states_[last_].link];
  if (s.len == 0) return p;
  const int64_t from = s.first_end + 1;
  const int64_t count = std::min<int64_t>(max_tokens, static_cast<int64_t>(text_.size()) - from);
  p.tokens.assign(text_.begin() + from, text_.begin() + from + count);
  p.match_length = s.len;
  return p;
}

}  // namespace tetra::speculative
