// `tetra quantize`: writes a model (a GGUF file or a HF directory, anything
// LoadModel accepts) as a GGUF v3 file with its weight matrices in Q4_0 or
// Q8_0, readable by tetra and by llama.cpp.
//
// Which type each tensor gets (one table, ChooseOutputType):
//   1-D tensors (norms, biases, rope_freqs) and MoE routers (ffn_gate_inp*) -> F32;
//   token_embd.weight and output.weight -> Q8_0 (also when the target is Q4_0, as llama.cpp);
//   other 2-D/3-D ".weight" tensors -> the target, per row (3-D stacked experts included);
//   rows not a multiple of 32 -> kept in their type (F32/F16/BF16), with a log line;
//   a tensor already in its output type is copied byte for byte.
// GGUF input: every key/value is copied as is (general.file_type set to match).
// HF input: the metadata llama.cpp's converter writes for the architecture,
// tensors under GGUF names, per-expert tensors stacked into ffn_*_exps
// [n_expert, rows, cols], and Q/K rows of architectures whose GGUF RoPE is
// interleaved (llama, mixtral) permuted per head as the converter does.
// Only byte-level BPE tokenizers (GGUF "gpt2") can be written from HF yet.
// The output is streamed (bounded memory) and appears atomically.
#pragma once

#include <CLI/CLI.hpp>

#include <string>

#include "base/status.h"
#include "base/thread_pool.h"
#include "tensor/dtype.h"

namespace tetra::cli {

struct QuantizeFlags {
  std::string model;
  std::string output;
  std::string type = "q4_0";
  int threads = 0;
};
void AddQuantizeCommand(CLI::App& app, QuantizeFlags& flags);
int RunQuantize(const QuantizeFlags& flags);

// "q4_0" / "q8_0" (any case) -> the type; error names the flag value.
StatusOr<DType> ParseQuantizeType(const std::string& name);

struct QuantizeSummary {
  int num_tensors = 0;
  int num_quantized = 0;  // converted to the target (or Q8_0 for embeddings/head)
  int num_copied = 0;     // byte for byte
  uint64_t input_bytes = 0;   // tensor data read
  uint64_t output_bytes = 0;  // tensor data written
};

// Quantizes `input` into `output` (target: kQ4_0 or kQ8_0), rows in parallel
// on `pool`. Errors name the file or tensor and the problem; on error nothing
// is left at `output`.
StatusOr<QuantizeSummary> QuantizeModel(const std::string& input, const std::string& output, DType target,
                                        ThreadPool& pool);

}  // namespace tetra::cli
