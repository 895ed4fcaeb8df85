#include "transport/wire.h"

#include <xxhash.h>

#include <cstring>

#include "base/check.h"
#include "base/cpu_features.h"
#include "transport/hash_dispatch.h"

namespace tetra::transport {
namespace {

void PutU16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
}
void PutU32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
void PutU64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint16_t GetU16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t GetU32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
uint64_t GetU64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

constexpr size_t kHashedHeaderBytes = 40;

}  // namespace

namespace {

// libxxhash itself (SSE2 on x86-64, whatever it was built for elsewhere).
void LibraryReset(void* state) { XXH3_64bits_reset(static_cast<XXH3_state_t*>(state)); }
void LibraryUpdate(void* state, const void* data, size_t size) {
  XXH3_64bits_update(static_cast<XXH3_state_t*>(state), data, size);
}
uint64_t LibraryDigest(const void* state) { return XXH3_64bits_digest(static_cast<const XXH3_state_t*>(state)); }
uint64_t LibraryHash(const void* data, size_t size) { return XXH3_64bits(data, size); }

// The widest build this CPU runs; every build computes the same XXH3.
const HashFunctions& Hashing() {
  static const HashFunctions functions = [] {
#if defined(TETRA_TRANSPORT_X86_HASH)
    const CpuFeatures& cpu = GetCpuFeatures();
    if (cpu.avx512f) {
      return HashFunctions{hash_avx512::Reset, hash_avx512::Update, hash_avx512::Digest, hash_avx512::Hash};
    }
    if (cpu.avx2) return HashFunctions{hash_avx2::Reset, hash_avx2::Update, hash_avx2::Digest, hash_avx2::Hash};
#endif
    return HashFunctions{LibraryReset, LibraryUpdate, LibraryDigest, LibraryHash};
  }();
  return functions;
}

}  // namespace

PayloadHasher::PayloadHasher() : state_(XXH3_createState()) {
  TETRA_CHECK(state_ != nullptr, "XXH3_createState failed");
  Hashing().reset(state_);
}
PayloadHasher::~PayloadHasher() { XXH3_freeState(static_cast<XXH3_state_t*>(state_)); }
void PayloadHasher::Update(std::span<const uint8_t> bytes) { Hashing().update(state_, bytes.data(), bytes.size()); }
uint64_t PayloadHasher::Digest() const { return Hashing().digest(state_); }

uint64_t HashPayload(std::span<const uint8_t> bytes) { return Hashing().hash(bytes.data(), bytes.size()); }

void EncodeFrameHeader(const FrameHeader& header, uint8_t (&out)[kFrameHeaderBytes]) {
  PutU32(out + 0, kWireMagic);
  PutU16(out + 4, kWireVersion);
  PutU16(out + 6, static_cast<uint16_t>(header.type));
  PutU64(out + 8, header.transfer_id);
  PutU32(out + 16, header.index);
  PutU32(out + 20, header.status);
  PutU64(out + 24, header.payload_bytes);
  PutU64(out + 32, header.payload_hash);
  PutU64(out + 40, XXH3_64bits(out, kHashedHeaderBytes));
}

StatusOr<FrameHeader> DecodeFrameHeader(std::span<const uint8_t, kFrameHeaderBytes> bytes) {
  const uint8_t* p = bytes.data();
  if (GetU32(p) != kWireMagic) return Status::Errorf("kv transfer frame: bad magic 0x{:08x}", GetU32(p));
  if (GetU16(p + 4) != kWireVersion) {
    return Status::Errorf("kv transfer frame: version {} (this build speaks {})", GetU16(p + 4), kWireVersion);
  }
  if (GetU64(p + 40) != XXH3_64bits(p, kHashedHeaderBytes)) {
    return Status::Error("kv transfer frame: header hash mismatch (corrupt header)");
  }
  FrameHeader h;
  const uint16_t type = GetU16(p + 6);
  if (type < static_cast<uint16_t>(FrameType::kHello) || type > static_cast<uint16_t>(FrameType::kResult)) {
    return Status::Errorf("kv transfer frame: unknown type {}", type);
  }
  h.type = static_cast<FrameType>(type);
  h.transfer_id = GetU64(p + 8);
  h.index = GetU32(p + 16);
  h.status = GetU32(p + 20);
  h.payload_bytes = GetU64(p + 24);
  h.payload_hash = GetU64(p + 32);
  const uint64_t limit = h.type == FrameType::kChunk ? kMaxChunkBytes : kMaxMessageBytes;
  if (h.payload_bytes > limit) {
    return Status::Errorf("kv transfer frame: {} payload of {} bytes (at most {})", FrameTypeName(h.type),
                          h.payload_bytes, limit);
  }
  if ((h.type == FrameType::kFinish || h.type == FrameType::kAbort) && h.payload_bytes != 0) {
    return Status::Errorf("kv transfer frame: {} with a payload", FrameTypeName(h.type));
  }
  return h;
}

const char* FrameTypeName(FrameType type) {
  switch (type) {
    case FrameType::kHello: return "hello";
    case FrameType::kChunk: return "chunk";
    case FrameType::kFinish: return "finish";
    case FrameType::kAbort: return "abort";
    case FrameType::kResult: return "result";
  }
  return "unknown";
}

}  // namespace tetra::transport
