// libFuzzer target: ParseSafetensors on arbitrary bytes must return a value or
// an error, never crash, hang or read out of bounds.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "format/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tetra::StatusOr<tetra::ParsedSafetensors> parsed = tetra::ParseSafetensors(data, size, "fuzz.safetensors");
  if (!parsed.ok()) {
    if (parsed.status().message().empty()) std::abort();
    return 0;
  }
  for (const tetra::WeightTensor& tensor : parsed->tensors) {
    if (tensor.data < data || tensor.data + tensor.num_bytes > data + size) std::abort();
    if (tensor.num_bytes != tetra::RowBytes(tensor.dtype, tensor.num_elements())) std::abort();
  }
  return 0;
}
