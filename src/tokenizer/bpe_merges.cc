#include "tokenizer/bpe_merges.h"

#include <queue>

namespace tetra::tokenizer_internal {

namespace {
// A doubly linked list of symbols over a vector; merged-away symbols are dead.
struct SymbolList {
  std::vector<int> prev, next;
  std::vector<bool> alive;
  explicit SymbolList(size_t n) : prev(n), next(n), alive(n, true) {
    for (size_t i = 0; i < n; ++i) {
      prev[i] = static_cast<int>(i) - 1;
      next[i] = i + 1 < n ? static_cast<int>(i) + 1 : -1;
    }
  }
  // Merges `right` into `left`.
  void Unlink(int left, int right) {
    alive[right] = false;
    next[left] = next[right];
    if (next[right] >= 0) prev[next[right]] = left;
  }
};

struct RankedCandidate {
  int32_t rank;
  int left;
  int32_t left_id, right_id;
  bool operator>(const RankedCandidate& other) const {
    return rank != other.rank ? rank > other.rank : left > other.left;
  }
};

struct ScoredCandidate {
  float score;
  int left;
  size_t merged_length;
  bool operator<(const ScoredCandidate& other) const {  // max-heap: best is "largest"
    return score != other.score ? score < other.score : left > other.left;
  }
};
}  // namespace

void ApplyRankedMerges(const MergeTable& merges, std::vector<int32_t>* symbols) {
  std::vector<int32_t>& ids = *symbols;
  if (ids.size() < 2) return;
  SymbolList list(ids.size());
  std::priority_queue<RankedCandidate, std::vector<RankedCandidate>, std::greater<>> queue;
  auto consider = [&](int left) {
    if (left < 0) return;
    int right = list.next[left];
    if (right < 0 || ids[left] < 0 || ids[right] < 0) return;
    if (const MergeResult* merge = merges.Find(ids[left], ids[right])) {
      queue.push({merge->rank, left, ids[left], ids[right]});
    }
  };
  for (int i = 0; i + 1 < static_cast<int>(ids.size()); ++i) consider(i);
  while (!queue.empty()) {
    RankedCandidate top = queue.top();
    queue.pop();
    int left = top.left;
    if (!list.alive[left] || ids[left] != top.left_id) continue;
    int right = list.next[left];
    if (right < 0 || ids[right] != top.right_id) continue;
    ids[left] = merges.Find(top.left_id, top.right_id)->merged_id;
    list.Unlink(left, right);
    consider(list.prev[left]);
    consider(left);
  }
  std::vector<int32_t> result;
  for (int i = 0; i >= 0; i = list.next[i]) result.push_back(ids[i]);
  ids.swap(result);
}

void ApplyScoredMerges(std::string_view text, const std::function<int32_t(std::string_view)>& lookup,
                       const std::function<float(int32_t)>& score, std::vector<size_t>* symbol_lengths) {
  std::vector<size_t>& lengths = *symbol_lengths;
  if (lengths.size() < 2) return;
  std::vector<size_t> starts(lengths.size());
  for (size_t i = 1; i < lengths.size(); ++i) starts[i] = starts[i - 1] + lengths[i - 1];
  SymbolList list(lengths.size());
  std::priority_queue<ScoredCandidate> queue;
  auto consider = [&](int left) {
    if (left < 0) return;
    int right = list.next[left];
    if (right < 0) return;
    size_t merged_length = lengths[left] + lengths[right];
    int32_t id = lookup(text.substr(starts[left], merged_length));
    if (id >= 0) queue.push({score(id), left, merged_length});
  };
  for (int i = 0; i + 1 < static_cast<int>(lengths.size()); ++i) consider(i);
  while (!queue.empty()) {
    ScoredCandidate top = queue.top();
    queue.pop();
    int left = top.left;
    if (!list.alive[left]) continue;
    int right = list.next[left];
    if (right < 0 || lengths[left] + lengths[right] != top.merged_length) continue;
    lengths[left] = top.merged_length;
    list.Unlink(left, right);
    consider(list.prev[left]);
    consider(left);
  }
  std::vector<size_t> result;
  for (int i = 0; i >= 0; i = list.next[i]) result.push_back(lengths[i]);
  lengths.swap(result);
}

}  // namespace tetra::tokenizer_internal
