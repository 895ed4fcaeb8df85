// libFuzzer target for the KV transport's frame headers (transport/wire.h):
// whatever 48 bytes arrive, DecodeFrameHeader either refuses them or gives
// a header that encodes back to exactly those bytes; any header within the
// limits decodes to its own fields; and the payload hasher over any split
// of the rest equals the one-shot hash.
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "transport/wire.h"

using namespace tetra::transport;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < kFrameHeaderBytes) return 0;
  auto header = DecodeFrameHeader(std::span<const uint8_t, kFrameHeaderBytes>(data, kFrameHeaderBytes));
  if (header.ok()) {
    uint8_t again[kFrameHeaderBytes];
    EncodeFrameHeader(*header, again);
    if (std::memcmp(again, data, kFrameHeaderBytes) != 0) std::abort();
  }
  // The other way: the bytes as fields; a header within the limits decodes
  // to the same fields after encoding.
  FrameHeader h;
  uint64_t words[5];
  std::memcpy(words, data + 8, sizeof(words));
  h.type = static_cast<FrameType>(1 + data[1] % 5);
  h.transfer_id = words[0];
  h.index = static_cast<uint32_t>(words[1]);
  h.status = static_cast<uint32_t>(words[1] >> 32);
  const bool has_payload = h.type == FrameType::kChunk || h.type == FrameType::kHello || h.type == FrameType::kResult;
  h.payload_bytes = has_payload ? words[2] % (kMaxMessageBytes + 1) : 0;
  h.payload_hash = words[3];
  uint8_t encoded[kFrameHeaderBytes];
  EncodeFrameHeader(h, encoded);
  auto decoded = DecodeFrameHeader(std::span<const uint8_t, kFrameHeaderBytes>(encoded));
  if (!decoded.ok() || decoded->type != h.type || decoded->transfer_id != h.transfer_id ||
      decoded->index != h.index || decoded->status != h.status || decoded->payload_bytes != h.payload_bytes ||
      decoded->payload_hash != h.payload_hash) {
    std::abort();
  }
  const std::span<const uint8_t> rest(data + kFrameHeaderBytes, size - kFrameHeaderBytes);
  PayloadHasher hasher;
  const size_t cut = rest.empty() ? 0 : data[0] % (rest.size() + 1);
  hasher.Update(rest.first(cut));
  hasher.Update(rest.subspan(cut));
  if (hasher.Digest() != HashPayload(rest)) std::abort();
  return 0;
}
