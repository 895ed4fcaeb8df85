#include "engine/text_stream.h"

#include <algorithm>

namespace tetra {

TextStream::TextStream(const Tokenizer& tokenizer, bool skip_special, const std::vector<std::string>& stops,
                       bool include_stop)
    : decoder_(tokenizer, skip_special), stops_(stops), include_stop_(include_stop) {}

std::string TextStream::Push(int32_t token, std::string* matched) {
  if (stopped_) return {};
  pending_ += decoder_.Push(token);
  return Release(matched, /*is_final=*/false);
}

std::string TextStream::Finish(std::string* matched) {
  if (stopped_) return {};
  pending_ += decoder_.Flush();
  return Release(matched, /*is_final=*/true);
}

std::string TextStream::Release(std::string* matched, bool is_final) {
  // The earliest stop string in the pending text (pending_ never held a whole one before).
  size_t best = std::string::npos;
  const std::string* best_stop = nullptr;
  for (const std::string& stop : stops_) {
    const size_t at = pending_.find(stop);
    if (at != std::string::npos && (at < best || (at == best && stop.size() > best_stop->size()))) {
      best = at;
      best_stop = &stop;
    }
  }
  if (best_stop != nullptr) {
    stopped_ = true;
    *matched = *best_stop;
    std::string out = pending_.substr(0, include_stop_ ? best + best_stop->size() : best);
    pending_.clear();
    return out;
  }
  // Hold back the longest suffix that begins some stop string.
  size_t hold = 0;
  if (!is_final) {
    for (const std::string& stop : stops_) {
      for (size_t n = std::min(stop.size() - 1, pending_.size()); n > hold; --n) {
        if (pending_.compare(pending_.size() - n, n, stop, 0, n) == 0) {
          hold = n;
          break;
        }
      }
    }
  }
  std::string out = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
  return out;
}

}  // namespace tetra
