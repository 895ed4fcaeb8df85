// libFuzzer target: ParseGguf on arbitrary bytes must return a value or an
// error, never crash, hang or read out of bounds. Successful parses are
// checked: every tensor view lies inside the input and dequantizes.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "format/gguf.h"
#include "kernels/reference/dequantize.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tetra::StatusOr<tetra::ParsedGguf> parsed = tetra::ParseGguf(data, size, "fuzz.gguf");
  if (!parsed.ok()) {
    if (parsed.status().message().empty()) std::abort();
    return 0;
  }
  // Dumping the metadata with replacement must not throw, whatever the bytes.
  (void)parsed->metadata.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
  for (const tetra::WeightTensor& tensor : parsed->tensors) {
    if (tensor.data < data || tensor.data + tensor.num_bytes > data + size) std::abort();
    const tetra::DTypeTraits& traits = tetra::GetDTypeTraits(tensor.dtype);
    if (traits.can_dequantize && tensor.num_elements() <= (1 << 16)) {
      std::vector<float> out(static_cast<size_t>(tensor.num_elements()));
      tetra::DequantizeRow(tensor.dtype, tensor.data, out.data(), tensor.num_elements());
    }
  }
  return 0;
}
