// Mutation corpus: thousands of deterministic corruptions of the valid
// fixture files (truncations at every length, bit flips, 0xFF runs, inflated
// counts and lengths). The parsers must either succeed with every tensor view
// inside the buffer, or fail with a message naming the file. Run under
// -DTETRA_SANITIZE=ON to catch any out-of-bounds read.
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <random>

#include "format/gguf.h"
#include "format/safetensors.h"
#include "kernels/reference/dequantize.h"
#include "test_util.h"

namespace tetra {
namespace {

using testing::FixturePath;
using testing::ReadBytes;

using Mutation = std::function<void(std::vector<uint8_t>*)>;

struct Counts {
  int num_ok = 0;
  int num_errors = 0;
};

void CheckTensors(const std::vector<WeightTensor>& tensors, const std::vector<uint8_t>& bytes) {
  for (const WeightTensor& tensor : tensors) {
    ASSERT_GE(tensor.data, bytes.data()) << tensor.name;
    ASSERT_LE(tensor.data + tensor.num_bytes, bytes.data() + bytes.size()) << tensor.name;
    ASSERT_EQ(tensor.num_bytes, RowBytes(tensor.dtype, tensor.num_elements())) << tensor.name;
    if (GetDTypeTraits(tensor.dtype).can_dequantize && tensor.num_elements() <= (1 << 16)) {
      std::vector<float> out(static_cast<size_t>(tensor.num_elements()));
      DequantizeRow(tensor.dtype, tensor.data, out.data(), tensor.num_elements());  // reads every byte
    }
  }
}

template <typename ParseFn>
void ParseOne(const std::vector<uint8_t>& mutated, const std::string& name, ParseFn parse, Counts* counts) {
  // An exact-size heap copy, so a sanitizer sees any read past the end.
  std::vector<uint8_t> bytes(mutated.begin(), mutated.end());
  auto parsed = parse(bytes.data(), bytes.size(), name);
  if (parsed.ok()) {
    ++counts->num_ok;
    CheckTensors(parsed->tensors, bytes);
  } else {
    ++counts->num_errors;
    const std::string message = parsed.status().message();
    ASSERT_EQ(message.rfind(name + ": ", 0), 0u) << message;
    ASSERT_GT(message.size(), name.size() + 2);
  }
}

// Every mutation of `original`, parsed with `parse`.
template <typename ParseFn>
Counts RunCorpus(const std::vector<uint8_t>& original, size_t header_bytes, const std::string& name,
                 ParseFn parse) {
  Counts counts;
  auto run = [&](const Mutation& mutate) {
    std::vector<uint8_t> bytes = original;
    mutate(&bytes);
    ParseOne(bytes, name, parse, &counts);
  };
  // Truncation at every length.
  for (size_t length = 0; length <= original.size(); ++length) {
    run([length](std::vector<uint8_t>* b) { b->resize(length); });
  }
  const size_t header = std::min(header_bytes, original.size());
  for (size_t pos = 0; pos < header; ++pos) {
    // One bit flip per header byte, cycling through the bits.
    run([pos](std::vector<uint8_t>* b) { (*b)[pos] ^= static_cast<uint8_t>(1u << (pos % 8)); });
    run([pos](std::vector<uint8_t>* b) { (*b)[pos] = 0xFF; });
    run([pos](std::vector<uint8_t>* b) { (*b)[pos] = 0x00; });
    // Inflated 64-bit and 32-bit fields (counts, lengths, dims, offsets).
    const uint64_t inflated[] = {~uint64_t{0}, uint64_t{1} << 63, uint64_t{1} << 32, uint64_t{original.size()},
                                 uint64_t{original.size() + 1}};
    for (uint64_t value : inflated) {
      run([pos, value](std::vector<uint8_t>* b) {
        const size_t n = std::min<size_t>(8, b->size() - pos);
        std::memcpy(b->data() + pos, &value, n);
      });
    }
    run([pos](std::vector<uint8_t>* b) {
      const uint32_t value = 0x7FFFFFFF;
      std::memcpy(b->data() + pos, &value, std::min<size_t>(4, b->size() - pos));
    });
  }
  // Random multi-byte corruption anywhere (deterministic seed).
  std::mt19937_64 rng(12345);
  for (int i = 0; i < 1500; ++i) {
    const uint64_t seed = rng();
    run([seed, header](std::vector<uint8_t>* b) {
      std::mt19937_64 local(seed);
      const int num_changes = 1 + static_cast<int>(local() % 4);
      for (int c = 0; c < num_changes; ++c) {
        const size_t limit = (local() % 4 == 0) ? b->size() : header;
        (*b)[local() % limit] = static_cast<uint8_t>(local());
      }
    });
  }
  return counts;
}

auto ParseGgufFn = [](const uint8_t* data, size_t size, const std::string& name) {
  return ParseGguf(data, size, name);
};
auto ParseSafetensorsFn = [](const uint8_t* data, size_t size, const std::string& name) {
  return ParseSafetensors(data, size, name);
};

TEST(MutationTest, GgufFixtures) {
  for (const char* file : {"tiny.gguf", "aligned64.gguf"}) {
    const std::vector<uint8_t> original = ReadBytes(FixturePath(std::string("format/") + file));
    ASSERT_FALSE(original.empty());
    StatusOr<ParsedGguf> clean = ParseGguf(original.data(), original.size(), file);
    ASSERT_TRUE(clean.ok()) << clean.status().message();
    Counts counts = RunCorpus(original, clean->data_offset, file, ParseGgufFn);
    EXPECT_GT(counts.num_errors, 1000) << file;
    EXPECT_GT(counts.num_ok, 10) << file;  // data-only changes still parse
  }
}

TEST(MutationTest, SafetensorsFixtures) {
  for (const char* file : {"hf_single/model.safetensors", "hf_sharded/model-00001-of-00002.safetensors"}) {
    const std::vector<uint8_t> original = ReadBytes(FixturePath(std::string("format/") + file));
    ASSERT_FALSE(original.empty());
    StatusOr<ParsedSafetensors> clean = ParseSafetensors(original.data(), original.size(), file);
    ASSERT_TRUE(clean.ok()) << clean.status().message();
    Counts counts = RunCorpus(original, clean->data_offset, file, ParseSafetensorsFn);
    EXPECT_GT(counts.num_errors, 1000) << file;
    EXPECT_GT(counts.num_ok, 10) << file;
  }
}

}  // namespace
}  // namespace tetra
