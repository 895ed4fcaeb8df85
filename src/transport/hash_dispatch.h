// XXH3-64 builds per ISA (hash_impl.h); wire.cc picks one at run time.
#pragma once

#include <cstddef>
#include <cstdint>

namespace tetra::transport {

struct HashFunctions {
  void (*reset)(void* state);
  void (*update)(void* state, const void* data, size_t size);
  uint64_t (*digest)(const void* state);
  uint64_t (*hash)(const void* data, size_t size);
};

#define TETRA_DECLARE_HASH(ns)                                 \
  namespace ns {                                               \
  void Reset(void* state);                                     \
  void Update(void* state, const void* data, size_t size);     \
  uint64_t Digest(const void* state);                          \
  uint64_t Hash(const void* data, size_t size);                \
  }
TETRA_DECLARE_HASH(hash_avx2)
TETRA_DECLARE_HASH(hash_avx512)
#undef TETRA_DECLARE_HASH

}  // namespace tetra::transport
