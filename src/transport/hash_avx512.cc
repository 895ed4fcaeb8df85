#define TETRA_HASH_NAMESPACE hash_avx512
#include "transport/hash_impl.h"
