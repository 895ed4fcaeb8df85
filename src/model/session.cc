#include "model/session.h"

#include "base/check.h"

namespace tetra {

Session::Session(const Model& model, int max_sequences, int64_t max_tokens)
    : model_(model),
      kv_(max_sequences * static_cast<int>((max_tokens + model.kv_cache.block_tokens - 1) / model.kv_cache.block_tokens),
          model.kv_cache.block_tokens, max_sequences),
      storage_(NewKvStorage(model, kv_.blocks().num_blocks(), max_sequences)),
      workspace_(model.arch->NewWorkspace()),
      sequences_(max_sequences),
      is_live_(max_sequences, false) {
  kv_.blocks().set_prefix_caching(false);  // each sequence is the caller's own
  // Tables at their full size up front, so steady steps allocate nothing.
  for (KvSequence& seq : sequences_) seq.blocks.reserve(kv_.blocks().num_blocks() / max_sequences);
}

StatusOr<int> Session::NewSequence() {
  for (size_t id = 0; id < is_live_.size(); ++id) {
    if (!is_live_[id]) {
      is_live_[id] = true;
      return static_cast<int>(id);
    }
  }
  return Status::WithCode(StatusCode::kResourceExhausted,
                          fmt::format("all {} sequences of the session are live", is_live_.size()));
}

void Session::FreeSequence(int id) {
  TETRA_CHECK(id >= 0 && id < static_cast<int>(is_live_.size()) && is_live_[id], "sequence {} is not live", id);
  kv_.Free(sequences_[id]);
  is_live_[id] = false;
}

Status Session::Forward(std::span<const Step> steps, std::span<float> logits, ThreadPool& pool) {
  tokens_.clear();
  forward_.clear();
  for (const Step& step : steps) {
    TETRA_CHECK(step.sequence >= 0 && step.sequence < static_cast<int>(is_live_.size()) && is_live_[step.sequence],
                "step of sequence {} that is not live", step.sequence);
    KvSequence& seq = sequences_[step.sequence];
    TETRA_RETURN_IF_ERROR(kv_.Reserve(seq, seq.num_tokens + static_cast<int64_t>(step.tokens.size())));
  }
  for (const Step& step : steps) {
    const KvSequence& seq = sequences_[step.sequence];
    ForwardSequence f;
    f.first_token = static_cast<int64_t>(tokens_.size());
    f.num_tokens = static_cast<int64_t>(step.tokens.size());
    f.start_position = seq.num_tokens;
    f.block_table = seq.blocks;
    f.slot = seq.slot;
    f.logits = step.logits;
    forward_.push_back(f);
    tokens_.insert(tokens_.end(), step.tokens.begin(), step.tokens.end());
  }
  const ForwardBatch batch{tokens_, forward_, {}, logits, {}};
  TETRA_RETURN_IF_ERROR(model_.arch->Forward(batch, *storage_, *workspace_, pool));
  for (const Step& step : steps) {
    KvSequence& seq = sequences_[step.sequence];
    kv_.Commit(seq, {}, seq.num_tokens + static_cast<int64_t>(step.tokens.size()));
  }
  return Status::Ok();
}

}  // namespace tetra
