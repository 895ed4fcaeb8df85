// The two BPE merge loops, over one word (a pre-tokenized piece):
//  - ranked: HF/GPT-2 BPE. A table maps an adjacent pair of token ids to the
//    id of their merge and its rank; the lowest rank merges first, the leftmost
//    among equal ranks.
//  - scored: SentencePiece BPE. Adjacent symbols merge when their concatenated
//    text is a mergeable vocabulary entry; the highest score merges first, the
//    leftmost among equal scores.
// Pure functions over immutable tables; any thread may call them.
#pragma once

#include <cstdint>
#include <functional>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace tetra::tokenizer_internal {

struct MergeResult {
  int32_t rank = 0;
  int32_t merged_id = 0;
};

class MergeTable {
 public:
  void Add(int32_t left_id, int32_t right_id, MergeResult result) {
    table_.emplace(Key(left_id, right_id), result);  // the first (lowest rank) entry wins
  }
  const MergeResult* Find(int32_t left_id, int32_t right_id) const {
    auto it = table_.find(Key(left_id, right_id));
    return it == table_.end() ? nullptr : &it->second;
  }
  size_t size() const { return table_.size(); }

 private:
  static uint64_t Key(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
  }
  std::unordered_map<uint64_t, MergeResult> table_;
};

// In place: *symbols (token ids of the word's initial symbols) becomes the ids
// after all merges. Ids below 0 never merge.
void ApplyRankedMerges(const MergeTable& merges, std::vector<int32_t>* symbols);

// `lookup(text)` returns the id of a mergeable vocabulary entry or -1;
// `score(id)` its score. `symbol_lengths` holds the byte lengths of the initial
// symbols of `text` (they sum to text.size()); on return it holds the lengths of
// the merged symbols.
void ApplyScoredMerges(std::string_view text, const std::function<int32_t(std::string_view)>& lookup,
                       const std::function<float(int32_t)>& score, std::vector<size_t>* symbol_lengths);

}  // namespace tetra::tokenizer_internal
