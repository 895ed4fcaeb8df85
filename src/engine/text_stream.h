// One sample's text as it is generated: tokens in, text deltas out, with
// stop strings found across token boundaries. Text that might be the start
// of a stop string is held back until it is known not to be one. Deltas
// are whole UTF-8 characters. One thread at a time (the engine's).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace tetra {

class TextStream {
 public:
  // `stops` must outlive the stream.
  TextStream(const Tokenizer& tokenizer, bool skip_special, const std::vector<std::string>& stops,
             bool include_stop);

  // The text a new token makes safe to emit. When a stop string appears,
  // *matched is set to it, the text returned ends before it (after it with
  // include_stop), and the stream takes no more tokens.
  std::string Push(int32_t token, std::string* matched);
  // The rest of the text once no more tokens come (the end of the sample).
  std::string Finish(std::string* matched);
  bool stopped() const { return stopped_; }

 private:
  // Emits what can be emitted of pending_, holding back a possible stop start.
  std::string Release(std::string* matched, bool is_final);

  StreamingDecoder decoder_;
  const std::vector<std::string>& stops_;
  bool include_stop_;
  std::string pending_;  // decoded, not yet emitted
  bool stopped_ = false;
};

}  // namespace tetra
