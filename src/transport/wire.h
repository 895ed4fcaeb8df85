// The KV transfer wire format, version 1 (doc/transport.md). Pure functions
// over bytes: no sockets, no threads.
//
// A stream is a TCP connection from a sender (prefill) to a receiver
// (decode). Everything on it is frames: a fixed 48-byte little-endian header,
// then payload_bytes of payload.
//
//   offset size field
//        0    4 magic          "TKV1" (0x31564B54 read as a little-endian u32)
//        4    2 version        1
//        6    2 type           FrameType
//        8    8 transfer_id    chosen by the receiver when it expects a transfer
//       16    4 index          kChunk: the chunk's index; kFinish: the chunk count
//       20    4 status         kResult: a StatusCode; else 0
//       24    8 payload_bytes
//       32    8 payload_hash   XXH3-64 of the payload (0 when empty)
//       40    8 header_hash    XXH3-64 of bytes 0..39
//
// Sender to receiver: kHello (payload: the stream's index and the session,
// 16 bytes), kChunk (payload: the chunk's bytes, which land straight in the
// receiver's registered regions), kFinish (no payload: every chunk of the
// transfer is sent), kAbort (no payload: the sender gives up).
// Receiver to sender, on the stream that carried kFinish or kAbort:
// kResult (payload: a UTF-8 message, empty on success).
// A header that fails its hash, magic or version ends the stream: there is
// no way to find the next frame.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "base/status.h"

namespace tetra::transport {

inline constexpr uint32_t kWireMagic = 0x31564B54;  // "TKV1"
inline constexpr uint16_t kWireVersion = 1;
inline constexpr size_t kFrameHeaderBytes = 48;
// Larger payloads are refused before any byte of them is read.
inline constexpr uint64_t kMaxChunkBytes = uint64_t{1} << 32;
inline constexpr uint64_t kMaxMessageBytes = 4096;  // kResult, kHello

enum class FrameType : uint16_t { kHello = 1, kChunk = 2, kFinish = 3, kAbort = 4, kResult = 5 };

struct FrameHeader {
  FrameType type = FrameType::kChunk;
  uint64_t transfer_id = 0;
  uint32_t index = 0;
  uint32_t status = 0;
  uint64_t payload_bytes = 0;
  uint64_t payload_hash = 0;
};

// XXH3-64 of bytes, continued over several spans (one chunk's regions).
class PayloadHasher {
 public:
  PayloadHasher();
  ~PayloadHasher();
  PayloadHasher(const PayloadHasher&) = delete;
  PayloadHasher& operator=(const PayloadHasher&) = delete;
  void Update(std::span<const uint8_t> bytes);
  uint64_t Digest() const;

 private:
  void* state_;  // XXH3_state_t
};
uint64_t HashPayload(std::span<const uint8_t> bytes);

void EncodeFrameHeader(const FrameHeader& header, uint8_t (&out)[kFrameHeaderBytes]);
// Checks magic, version, header hash, type and the payload limits.
StatusOr<FrameHeader> DecodeFrameHeader(std::span<const uint8_t, kFrameHeaderBytes> bytes);

const char* FrameTypeName(FrameType type);

}  // namespace tetra::transport
