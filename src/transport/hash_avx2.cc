#define TETRA_HASH_NAMESPACE hash_avx2
#include "transport/hash_impl.h"
