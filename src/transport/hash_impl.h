// One build of XXH3's streaming functions, inlined into the including file
// and vectorized for its -m flags (hash_avx2.cc, hash_avx512.cc), behind
// plain functions that wire.cc picks from at run time. Debian's libxxhash
// is built for SSE2 only, and hashing was a quarter of a transfer's time.
// The including file defines TETRA_HASH_NAMESPACE; its -m flags pick the
// vector width (xxhash.h looks at __AVX2__ / __AVX512F__).
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "transport/hash_dispatch.h"

namespace tetra::transport::TETRA_HASH_NAMESPACE {

void Reset(void* state) { XXH3_64bits_reset(static_cast<XXH3_state_t*>(state)); }
void Update(void* state, const void* data, size_t size) {
  XXH3_64bits_update(static_cast<XXH3_state_t*>(state), data, size);
}
uint64_t Digest(const void* state) { return XXH3_64bits_digest(static_cast<const XXH3_state_t*>(state)); }
uint64_t Hash(const void* data, size_t size) { return XXH3_64bits(data, size); }

}  // namespace tetra::transport::TETRA_HASH_NAMESPACE
