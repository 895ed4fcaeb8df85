#include "cli/quantize.h"
#include "cli/commands.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <filesystem>
#include <map>
#include <numbers>

#include "base/logging.h"
#include "base/mapped_file.h"
#include "format/gguf.h"
#include "format/gguf_writer.h"
#include "kernels/reference/dequantize.h"
#include "kernels/reference/quantize.h"
#include "model/model.h"
#include "model/weight_source.h"

namespace tetra::cli {
namespace {

using Json = nlohmann::ordered_json;

constexpr uint32_t kGgmlQuantizationVersion = 2;
constexpr int64_t kQuantBlock = 32;  // Q4_0 and Q8_0 blocks
constexpr size_t kChunkBytes = size_t{64} << 20;  // output bytes converted per step

// llama.cpp's general.file_type values (enum llama_ftype).
uint32_t FileTypeOf(DType target) { return target == DType::kQ8_0 ? 7 : 2; }  // MOSTLY_Q8_0 : MOSTLY_Q4_0

bool EndsWith(std::string_view s, std::string_view tail) {
  return s.size() >= tail.size() && s.substr(s.size() - tail.size()) == tail;
}

// Rows of `count` consecutive rows of a stored tensor viewed as [rows, cols].
struct RowRange {
  const WeightTensor* tensor = nullptr;
  int64_t first_row = 0;
  int64_t num_rows = 0;
};

// One tensor of the output and where its rows come from.
struct PlannedTensor {
  GgufTensorInfo info;            // output name, type, shape
  std::vector<RowRange> sources;  // concatenated in order: the output's rows
  int64_t permute_heads = 0;      // > 0: rows permuted per head, HF rotate-half -> GGML interleaved
  std::vector<float> generated;   // values computed here (rope_freqs) instead of sources
};

// The output type of a tensor (see the table in quantize.h) and, when the
// tensor cannot take the type it would get, why (for a log line).
DType ChooseOutputType(const std::string& name, const std::vector<int64_t>& shape, DType source, DType target,
                       std::string* note) {
  if (!GetDTypeTraits(source).can_dequantize) return source;  // integers etc.: as stored
  const bool is_weight = EndsWith(name, ".weight");
  if (shape.size() < 2) return DType::kF32;
  if (!is_weight) return source;
  if (name.find("ffn_gate_inp") != std::string::npos) return DType::kF32;  // MoE routers stay exact
  if (shape.back() % kQuantBlock != 0) {
    const DType kept = source == DType::kF16 || source == DType::kBF16 ? source : DType::kF32;
    *note = fmt::format("row length {} is not a multiple of {}: kept as {}", shape.back(), kQuantBlock,
                        DTypeName(kept));
    return kept;
  }
  if (name == "token_embd.weight" || name == "output.weight") return DType::kQ8_0;
  return target;
}

// ---------------------------------------------------------------------------
// Converting and writing the planned tensors.

int64_t RowLength(const PlannedTensor& p) { return p.info.shape.size() == 1 && p.permute_heads > 0 ? 1 : p.info.shape.back(); }

bool CanCopyBytes(const PlannedTensor& p) {
  if (p.permute_heads > 0 || !p.generated.empty()) return false;
  for (const RowRange& r : p.sources) {
    if (r.tensor->dtype != p.info.dtype) return false;
  }
  return true;
}

// The stored bytes of row `row` of a tensor viewed as [rows, cols].
const uint8_t* RowPointer(const WeightTensor& t, int64_t cols, int64_t row) {
  return t.data + static_cast<size_t>(row) * RowBytes(t.dtype, cols);
}

// Source row of output row r when rows are permuted per head: output row
// (h, i, j) of [heads, D/2, 2] comes from HF row (h, j, i) of [heads, 2, D/2].
int64_t PermutedSourceRow(int64_t r, int64_t rows, int64_t heads) {
  const int64_t head_dim = rows / heads;
  const int64_t half = head_dim / 2;
  const int64_t head = r / head_dim, within = r % head_dim;
  const int64_t i = within / 2, j = within % 2;
  return head * head_dim + j * half + i;
}

Status WritePlanned(const PlannedTensor& p, GgufWriter& writer, ThreadPool& pool, QuantizeSummary* summary) {
  const size_t out_bytes = p.info.num_bytes();
  summary->output_bytes += out_bytes;
  if (!p.generated.empty()) {
    std::vector<uint8_t> bytes(out_bytes);
    QuantizeRow(p.info.dtype, p.generated.data(), bytes.data(), static_cast<int64_t>(p.generated.size()));
    ++summary->num_quantized;
    return writer.Write(bytes.data(), bytes.size());
  }
  const int64_t cols = RowLength(p);
  if (CanCopyBytes(p)) {
    for (const RowRange& r : p.sources) {
      const size_t row_bytes = RowBytes(r.tensor->dtype, cols);
      summary->input_bytes += row_bytes * r.num_rows;
      TETRA_RETURN_IF_ERROR(writer.Write(RowPointer(*r.tensor, cols, r.first_row), row_bytes * r.num_rows));
    }
    ++summary->num_copied;
    return Status::Ok();
  }
  // Where each output row's source bytes are (before any permutation).
  std::vector<const uint8_t*> rows;
  std::vector<DType> row_types;
  for (const RowRange& r : p.sources) {
    summary->input_bytes += RowBytes(r.tensor->dtype, cols) * r.num_rows;
    for (int64_t i = 0; i < r.num_rows; ++i) {
      rows.push_back(RowPointer(*r.tensor, cols, r.first_row + i));
      row_types.push_back(r.tensor->dtype);
    }
  }
  const int64_t num_rows = static_cast<int64_t>(rows.size());
  const size_t out_row_bytes = RowBytes(p.info.dtype, cols);
  const int64_t chunk_rows = std::max<int64_t>(1, static_cast<int64_t>(kChunkBytes / out_row_bytes));
  std::vector<uint8_t> buffer(static_cast<size_t>(std::min(chunk_rows, num_rows)) * out_row_bytes);
  for (int64_t begin = 0; begin < num_rows; begin += chunk_rows) {
    const int64_t end = std::min(num_rows, begin + chunk_rows);
    pool.ParallelFor(end - begin, 16, [&](int64_t first, int64_t last) {
      std::vector<float> values(static_cast<size_t>(cols));
      for (int64_t i = first; i < last; ++i) {
        const int64_t r = begin + i;
        const int64_t s = p.permute_heads > 0 ? PermutedSourceRow(r, num_rows, p.permute_heads) : r;
        DequantizeRow(row_types[s], rows[s], values.data(), cols);
        QuantizeRow(p.info.dtype, values.data(), buffer.data() + static_cast<size_t>(i) * out_row_bytes, cols);
      }
    });
    TETRA_RETURN_IF_ERROR(writer.Write(buffer.data(), static_cast<size_t>(end - begin) * out_row_bytes));
  }
  ++summary->num_quantized;
  return Status::Ok();
}

int64_t NumRows(const WeightTensor& t) { return t.shape.empty() ? 1 : t.num_elements() / t.shape.back(); }

// Sets the output type of a planned tensor; checks that its rows can be read.
Status ChooseType(PlannedTensor& p, DType target, const std::string& path) {
  const DType source = p.sources.empty() ? DType::kF32 : p.sources[0].tensor->dtype;
  for (const RowRange& r : p.sources) {
    if (r.tensor->dtype != source) {
      return Status::Errorf("{}: tensors stacked into '{}' have different types ({} and {})", path, p.info.name,
                            DTypeName(source), DTypeName(r.tensor->dtype));
    }
  }
  std::string note;
  p.info.dtype = p.generated.empty() ? ChooseOutputType(p.info.name, p.info.shape, source, target, &note)
                                     : DType::kF32;
  if (!note.empty()) TETRA_LOG_WARN("{}: tensor '{}': {}", path, p.info.name, note);
  if (p.info.dtype != source && p.generated.empty()) {
    // Converting reads rows: they must be whole blocks of the source type.
    const int64_t cols = RowLength(p);
    if (cols % GetDTypeTraits(source).block_size != 0) {
      return Status::Errorf("{}: tensor '{}' of type {} has rows of {} values, not whole blocks", path,
                            p.info.name, DTypeName(source), cols);
    }
  }
  return Status::Ok();
}

// ---------------------------------------------------------------------------
// GGUF input: metadata copied, tensors in file order.

struct GgufInput {
  MappedFile file;
  ParsedGguf parsed;
};

StatusOr<std::vector<PlannedTensor>> PlanGguf(const ParsedGguf& parsed, DType target, const std::string& path) {
  std::vector<PlannedTensor> plan;
  for (const WeightTensor& t : parsed.tensors) {
    PlannedTensor p;
    p.info = {t.name, t.dtype, t.shape};
    p.sources.push_back({&t, 0, NumRows(t)});
    TETRA_RETURN_IF_ERROR(ChooseType(p, target, path));
    plan.push_back(std::move(p));
  }
  return plan;
}

// ---------------------------------------------------------------------------
// HF input: GGUF names, stacked experts, permuted Q/K, converter metadata.

// "blk.L.ffn_KIND.E.weight" (one expert's matrix) -> (layer, kind, expert).
bool ParsePerExpertName(const std::string& name, int* layer, std::string* kind, int* expert) {
  std::string_view s = name;
  if (s.substr(0, 4) != "blk." || !EndsWith(s, ".weight")) return false;
  s.remove_prefix(4);
  s.remove_suffix(7);
  auto [p1, e1] = std::from_chars(s.data(), s.data() + s.size(), *layer);
  if (e1 != std::errc()) return false;
  s.remove_prefix(static_cast<size_t>(p1 - s.data()));
  for (std::string_view k : {"gate", "up", "down"}) {
    const std::string prefix = fmt::format(".ffn_{}.", k);
    if (s.substr(0, prefix.size()) != prefix) continue;
    std::string_view rest = s.substr(prefix.size());
    auto [p2, e2] = std::from_chars(rest.data(), rest.data() + rest.size(), *expert);
    if (e2 != std::errc() || p2 != rest.data() + rest.size()) return false;
    *kind = std::string(k);
    return true;
  }
  return false;
}

// Output order: token_embd and rope_freqs, the layers in order, then the head.
std::pair<int, std::string> SortKey(const std::string& name) {
  int layer = -1;
  if (name.rfind("blk.", 0) == 0) {
    std::from_chars(name.data() + 4, name.data() + name.size(), layer);
    return {layer, name};
  }
  const bool is_head = name.rfind("output", 0) == 0;
  return {is_head ? 1 << 30 : -1, name};
}

StatusOr<std::vector<PlannedTensor>> PlanHf(const Model& model, DType target) {
  const ModelFiles& files = *model.files;
  const ModelConfig& c = model.config();
  const bool permute_qk = model.spec->gguf_rope_style == RopeStyle::kInterleaved;  // HF stores NEOX order
  std::vector<PlannedTensor> plan;
  // (layer, kind) -> expert -> tensor
  std::map<std::pair<int, std::string>, std::map<int, const WeightTensor*>> experts;
  for (const std::string& hf_name : files.weights.Names()) {
    const WeightTensor* t = files.weights.Find(hf_name);
    const std::optional<std::string> name = HfToCanonicalName(hf_name);
    if (!name) {
      TETRA_LOG_INFO("{}: tensor '{}' is not used by tetra: not written", files.path, hf_name);
      continue;
    }
    int layer = 0, expert = 0;
    std::string kind;
    if (ParsePerExpertName(*name, &layer, &kind, &expert)) {
      experts[{layer, kind}][expert] = t;
      continue;
    }
    if (EndsWith(*name, ".ffn_gate_up_exps.weight")) {  // fused [E, 2I, H] -> gate [E, I, H] and up [E, I, H]
      if (t->shape.size() != 3 || t->shape[1] % 2 != 0) {
        return Status::Errorf("{}: tensor '{}' is not [experts, 2 * rows, cols]", files.path, hf_name);
      }
      const int64_t rows = t->shape[1] / 2;
      const std::string stem = name->substr(0, name->size() - std::string("gate_up_exps.weight").size());
      for (int half = 0; half < 2; ++half) {
        PlannedTensor p;
        p.info = {stem + (half == 0 ? "gate_exps.weight" : "up_exps.weight"), t->dtype, {t->shape[0], rows, t->shape[2]}};
        for (int64_t e = 0; e < t->shape[0]; ++e) p.sources.push_back({t, (2 * e + half) * rows, rows});
        plan.push_back(std::move(p));
      }
      continue;
    }
    PlannedTensor p;
    p.info = {*name, t->dtype, t->shape};
    p.sources.push_back({t, 0, NumRows(*t)});
    if (permute_qk) {
      for (auto [suffix, heads] : {std::pair<const char*, int>{".attn_q.", c.num_heads}, {".attn_k.", c.num_kv_heads}}) {
        if (name->find(suffix) == std::string::npos) continue;
        const int64_t rows = t->shape[0];
        if (rows != static_cast<int64_t>(heads) * c.head_dim || c.head_dim % 2 != 0) {
          return Status::Errorf("{}: tensor '{}' has {} rows, expected {} heads x {}", files.path, hf_name, rows,
                                heads, c.head_dim);
        }
        p.permute_heads = heads;
        if (t->shape.size() == 1) p.sources[0].num_rows = rows;  // a bias: rows of one value
      }
    }
    plan.push_back(std::move(p));
  }
  for (const auto& [key, by_expert] : experts) {
    const auto& [layer, kind] = key;
    const std::string name = fmt::format("blk.{}.ffn_{}_exps.weight", layer, kind);
    if (static_cast<int>(by_expert.size()) != c.num_experts || by_expert.begin()->first != 0 ||
        by_expert.rbegin()->first != c.num_experts - 1) {
      return Status::Errorf("{}: layer {} has {} '{}' expert tensors, expected experts 0..{}", files.path, layer,
                            by_expert.size(), kind, c.num_experts - 1);
    }
    const WeightTensor* first = by_expert.begin()->second;
    if (first->shape.size() != 2) return Status::Errorf("{}: expert tensor '{}' is not a matrix", files.path, first->name);
    PlannedTensor p;
    p.info = {name, first->dtype, {c.num_experts, first->shape[0], first->shape[1]}};
    for (const auto& [e, t] : by_expert) {
      if (t->shape != first->shape) {
        return Status::Errorf("{}: expert tensor '{}' has another shape than '{}'", files.path, t->name, first->name);
      }
      p.sources.push_back({t, 0, t->shape[0]});
    }
    plan.push_back(std::move(p));
  }
  if (c.rope.scaling == RopeScaling::kLlama3) {
    // GGUF has no llama3 RoPE keys: the converter writes per-frequency divisors,
    // computed in double from the f32 frequencies as here.
    RopeConfig unscaled = c.rope;
    unscaled.scaling = RopeScaling::kNone;
    const RopeConfig& r = c.rope;
    const double low_freq_wavelen = r.original_max_position / static_cast<double>(r.low_freq_factor);
    const double high_freq_wavelen = r.original_max_position / static_cast<double>(r.high_freq_factor);
    PlannedTensor p;
    for (float frequency : unscaled.InverseFrequencies()) {
      const double wavelen = 2.0 * std::numbers::pi / frequency;
      double divisor = 1.0;
      if (wavelen > low_freq_wavelen) {
        divisor = r.factor;
      } else if (wavelen >= high_freq_wavelen) {
        const double smooth = (r.original_max_position / wavelen - r.low_freq_factor) /
                              (static_cast<double>(r.high_freq_factor) - r.low_freq_factor);
        divisor = 1.0 / ((1.0 - smooth) / r.factor + smooth);
      }
      p.generated.push_back(static_cast<float>(divisor));
    }
    p.info = {"rope_freqs.weight", DType::kF32, {static_cast<int64_t>(p.generated.size())}};
    plan.push_back(std::move(p));
  }
  for (PlannedTensor& p : plan) TETRA_RETURN_IF_ERROR(ChooseType(p, target, files.path));
  std::stable_sort(plan.begin(), plan.end(),
                   [](const PlannedTensor& a, const PlannedTensor& b) { return SortKey(a.info.name) < SortKey(b.info.name); });
  return plan;
}

std::string TokenContent(const nlohmann::json& value) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_object() && value.contains("content") && value["content"].is_string()) return value["content"];
  return "";
}

// Probe texts for matching tokenizers: words, contractions, digits, spaces,
// newlines, punctuation, accents, CJK, emoji and special-token text.
constexpr const char* kTokenizerProbes[] = {
    "Hello world! I'm here, you're there; DON'T stop.",
    "Numbers: 1 12 123 1234 12345 3.14159 and 2024-06-11",
    "  leading spaces\n\nnew  lines\ttabs \r\n end   ",
    "café naïve résumé Ελληνικά русский 日本語の文章 中文 한국어 🙂👍",
    "<|im_start|>user\nHi there<|im_end|>\n<|endoftext|>",
    "code: for (int i=0;i<10;++i) { x += y[i]; } // done...",
};

// The tokenizer.ggml.* keys of a HF byte-level BPE tokenizer.json; pre is
// the GGUF pre-tokenizer family that tokenizes the probes as the HF
// tokenizer does (the check llama.cpp's converter does with hashes).
Status AddHfTokenizer(const Model& model, GgufMetadata* metadata) {
  const ModelFiles& files = *model.files;
  const Tokenizer& hf = *model.tokenizer;
  if (!hf.is_byte_level()) {
    return Status::Errorf("{}: only byte-level BPE tokenizers (GGUF 'gpt2') can be written yet; this one is {}",
                          files.path, hf.model_name());
  }
  TETRA_ASSIGN_OR_RETURN(std::string text, ReadFileToString(files.hf_tokenizer_json_path));
  const nlohmann::json tokenizer = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  const std::string& path = files.hf_tokenizer_json_path;
  if (!tokenizer.is_object() || !tokenizer.contains("model") || !tokenizer["model"].is_object()) {
    return Status::Errorf("{}: not a tokenizer.json with a model", path);
  }
  const nlohmann::json& bpe = tokenizer["model"];
  if (!bpe.contains("vocab") || !bpe["vocab"].is_object() || !bpe.contains("merges") || !bpe["merges"].is_array()) {
    return Status::Errorf("{}: model has no vocab/merges", path);
  }
  const int64_t vocab_size = model.config().vocab_size;
  std::vector<std::string> tokens(static_cast<size_t>(vocab_size));
  std::vector<int32_t> types(static_cast<size_t>(vocab_size), 5);  // UNUSED until filled
  auto place = [&](const std::string& token, const nlohmann::json& id_value, int32_t type) -> Status {
    if (!id_value.is_number_integer() || id_value.get<int64_t>() < 0 || id_value.get<int64_t>() >= vocab_size) {
      return Status::Errorf("{}: token '{}' has id {} outside the model's vocabulary of {}", path, token,
                            id_value.dump(), vocab_size);
    }
    tokens[id_value.get<size_t>()] = token;
    types[id_value.get<size_t>()] = type;
    return Status::Ok();
  };
  for (auto it = bpe["vocab"].begin(); it != bpe["vocab"].end(); ++it) TETRA_RETURN_IF_ERROR(place(it.key(), it.value(), 1));
  if (tokenizer.contains("added_tokens") && tokenizer["added_tokens"].is_array()) {
    for (const auto& added : tokenizer["added_tokens"]) {
      const bool is_special = added.value("special", false);
      TETRA_RETURN_IF_ERROR(place(added.value("content", ""), added.value("id", nlohmann::json()), is_special ? 3 : 4));
    }
  }
  Json token_list = Json::array(), type_list = Json::array();
  for (int64_t i = 0; i < vocab_size; ++i) {
    if (types[i] == 5) tokens[i] = fmt::format("[PAD{}]", i);
    token_list.push_back(tokens[i]);
    type_list.push_back(types[i]);
  }
  Json merges = Json::array();
  for (const auto& merge : bpe["merges"]) {
    if (merge.is_string()) {
      merges.push_back(merge.get<std::string>());
    } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() && merge[1].is_string()) {
      merges.push_back(merge[0].get<std::string>() + " " + merge[1].get<std::string>());
    } else {
      return Status::Errorf("{}: merge {} is neither \"a b\" nor [a, b]", path, merge.dump());
    }
  }
  metadata->SetString("tokenizer.ggml.model", "gpt2");
  metadata->SetString("tokenizer.ggml.pre", "gpt-2");  // replaced below
  metadata->SetArray("tokenizer.ggml.tokens", GgufValueType::kString, std::move(token_list));
  metadata->SetArray("tokenizer.ggml.token_type", GgufValueType::kInt32, std::move(type_list));
  metadata->SetArray("tokenizer.ggml.merges", GgufValueType::kString, std::move(merges));
  if (auto id = hf.bos_id()) metadata->SetUint32("tokenizer.ggml.bos_token_id", static_cast<uint32_t>(*id));
  if (auto id = hf.eos_id()) metadata->SetUint32("tokenizer.ggml.eos_token_id", static_cast<uint32_t>(*id));
  const nlohmann::json& tc = files.hf_tokenizer_config;
  std::optional<int32_t> pad;
  if (tc.is_object() && tc.contains("pad_token")) pad = hf.TokenId(TokenContent(tc["pad_token"]));
  if (!pad && files.hf_config.contains("pad_token_id") && files.hf_config["pad_token_id"].is_number_integer()) {
    pad = files.hf_config["pad_token_id"].get<int32_t>();
  }
  if (pad && *pad >= 0 && *pad < vocab_size) metadata->SetUint32("tokenizer.ggml.padding_token_id", static_cast<uint32_t>(*pad));
  // BOS/EOS as the HF tokenizer adds them: seen on an encoded probe.
  const std::vector<int32_t> plain = hf.Encode("probe", false, true), special = hf.Encode("probe", true, true);
  const bool adds_bos = hf.bos_id() && special.size() > plain.size() && special.front() == *hf.bos_id();
  const bool adds_eos = hf.eos_id() && special.size() > plain.size() && special.back() == *hf.eos_id();
  metadata->SetBool("tokenizer.ggml.add_bos_token", adds_bos);
  metadata->SetBool("tokenizer.ggml.add_eos_token", adds_eos);

  static constexpr const char* kPreFamilies[] = {"gpt-2", "llama-bpe", "qwen2", "smollm", "deepseek-v3", "gpt-4o",
                                                 "tekken", "deepseek-llm", "deepseek-coder", "falcon", "bloom"};
  for (const char* pre : kPreFamilies) {
    metadata->SetString("tokenizer.ggml.pre", pre);
    auto candidate = Tokenizer::FromGguf(metadata->values());
    if (!candidate.ok()) return candidate.status().WithPrefix(path + ": as GGUF: ");
    bool same = true;
    for (const char* probe : kTokenizerProbes) {
      for (bool add_special : {false, true}) {
        same = same && (*candidate)->Encode(probe, add_special, true) == hf.Encode(probe, add_special, true);
      }
    }
    if (same) {
      TETRA_LOG_INFO("{}: tokenizer written with pre-tokenizer '{}'", path, pre);
      return Status::Ok();
    }
  }
  return Status::Errorf("{}: no GGUF pre-tokenizer family tetra knows tokenizes like this tokenizer", path);
}

StatusOr<GgufMetadata> HfMetadata(const Model& model, DType target) {
  const ModelFiles& files = *model.files;
  const ModelConfig& c = model.config();
  const std::string arch = model.spec->gguf_arch;
  const std::string a = arch + ".";
  GgufMetadata m;
  m.SetString("general.architecture", arch);
  m.SetString("general.type", "model");
  std::filesystem::path directory = std::filesystem::path(files.path).lexically_normal();
  if (directory.filename().empty()) directory = directory.parent_path();  // "dir/" -> "dir"
  m.SetString("general.name", directory.filename().string());
  m.SetUint32(a + "vocab_size", static_cast<uint32_t>(c.vocab_size));
  m.SetUint32(a + "block_count", static_cast<uint32_t>(c.num_layers));
  m.SetUint32(a + "context_length", static_cast<uint32_t>(c.max_position));
  m.SetUint32(a + "embedding_length", static_cast<uint32_t>(c.hidden_size));
  if (c.intermediate_size > 0) m.SetUint32(a + "feed_forward_length", static_cast<uint32_t>(c.intermediate_size));
  m.SetUint32(a + "attention.head_count", static_cast<uint32_t>(c.num_heads));
  m.SetUint32(a + "attention.head_count_kv", static_cast<uint32_t>(c.num_kv_heads));
  if (c.head_dim * c.num_heads != c.hidden_size || files.hf_config.contains("head_dim")) {
    m.SetUint32(a + "attention.key_length", static_cast<uint32_t>(c.head_dim));
    m.SetUint32(a + "attention.value_length", static_cast<uint32_t>(c.head_dim));
  }
  m.SetUint32(a + "rope.dimension_count", static_cast<uint32_t>(c.rope.rotary_dim));
  m.SetFloat32(a + "rope.freq_base", c.rope.theta);
  if (c.rope.scaling == RopeScaling::kLinear) {
    m.SetString(a + "rope.scaling.type", "linear");
    m.SetFloat32(a + "rope.scaling.factor", c.rope.factor);
  }
  m.SetFloat32(a + "attention.layer_norm_rms_epsilon", c.rms_norm_eps);
  if (c.is_moe()) {
    m.SetUint32(a + "expert_count", static_cast<uint32_t>(c.num_experts));
    m.SetUint32(a + "expert_used_count", static_cast<uint32_t>(c.num_experts_per_token));
    m.SetUint32(a + "expert_feed_forward_length", static_cast<uint32_t>(c.expert_intermediate_size));
    if (c.shared_expert_intermediate_size > 0) {
      m.SetUint32(a + "expert_shared_feed_forward_length", static_cast<uint32_t>(c.shared_expert_intermediate_size));
    }
    if (!model.spec->norm_topk_prob_always && c.norm_topk_prob != model.spec->norm_topk_prob_default) {
      m.SetBool(a + "expert_weights_norm", c.norm_topk_prob);
    }
  }
  m.SetUint32("general.file_type", FileTypeOf(target));
  m.SetUint32("general.quantization_version", kGgmlQuantizationVersion);
  TETRA_RETURN_IF_ERROR(AddHfTokenizer(model, &m));
  const std::string chat_template = ChatTemplateSource(files);
  if (!chat_template.empty()) m.SetString("tokenizer.chat_template", chat_template);
  return m;
}


}  // namespace

StatusOr<DType> ParseQuantizeType(const std::string& name) {
  std::string lower = name;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char ch) { return std::tolower(ch); });
  if (lower == "q4_0") return DType::kQ4_0;
  if (lower == "q8_0") return DType::kQ8_0;
  return Status::Errorf("--type '{}' is not supported (q4_0 or q8_0)", name);
}

StatusOr<QuantizeSummary> QuantizeModel(const std::string& input, const std::string& output, DType target,
                                        ThreadPool& pool) {
  if (target != DType::kQ4_0 && target != DType::kQ8_0) {
    return Status::Errorf("cannot quantize to {} (Q4_0 or Q8_0)", DTypeName(target));
  }
  // Loading checks that tetra can use the input (every tensor bound, tokenizer, template).
  TETRA_ASSIGN_OR_RETURN(std::unique_ptr<Model> model, LoadModel(input));
  const std::string& path = model->files->path;
  GgufInput gguf;
  GgufMetadata metadata;
  std::vector<PlannedTensor> plan;
  if (model->files->format == ModelFiles::Format::kGguf) {
    TETRA_ASSIGN_OR_RETURN(gguf.file, MappedFile::Open(path));
    TETRA_ASSIGN_OR_RETURN(gguf.parsed, ParseGguf(gguf.file.data(), gguf.file.size(), path));
    metadata = GgufMetadata::FromParsed(gguf.parsed.metadata, gguf.parsed.metadata_types);
    metadata.SetUint32("general.file_type", FileTypeOf(target));
    if (!metadata.Has("general.quantization_version")) {
      metadata.SetUint32("general.quantization_version", kGgmlQuantizationVersion);
    }
    TETRA_ASSIGN_OR_RETURN(plan, PlanGguf(gguf.parsed, target, path));
  } else {
    TETRA_ASSIGN_OR_RETURN(metadata, HfMetadata(*model, target));
    TETRA_ASSIGN_OR_RETURN(plan, PlanHf(*model, target));
  }
  std::vector<GgufTensorInfo> infos;
  for (const PlannedTensor& p : plan) infos.push_back(p.info);
  TETRA_ASSIGN_OR_RETURN(std::unique_ptr<GgufWriter> writer, GgufWriter::Create(output, metadata, std::move(infos)));
  QuantizeSummary summary;
  summary.num_tensors = static_cast<int>(plan.size());
  for (const PlannedTensor& p : plan) {
    TETRA_LOG_DEBUG("{}: {} [{}] {}", output, p.info.name, fmt::join(p.info.shape, ", "), DTypeName(p.info.dtype));
    TETRA_RETURN_IF_ERROR(WritePlanned(p, *writer, pool, &summary));
  }
  TETRA_RETURN_IF_ERROR(writer->Commit());
  return summary;
}

void AddQuantizeCommand(CLI::App& app, QuantizeFlags& f) {
  CLI::App* cmd = app.add_subcommand("quantize", "Write a model as a Q4_0 or Q8_0 GGUF file (readable by llama.cpp)");
  cmd->add_option("-m,--model", f.model, "GGUF file or HF directory")->required();
  cmd->add_option("-o,--output", f.output, "Output .gguf file (written atomically)")->required();
  cmd->add_option("--type", f.type, "q4_0 (default; embeddings and output head Q8_0) or q8_0");
  cmd->add_option("-t,--threads", f.threads, "Threads (default: all cores)")->check(CLI::Range(0, 1024));
}

int RunQuantize(const QuantizeFlags& f) {
  auto target = ParseQuantizeType(f.type);
  if (!target.ok()) return Fail(target.status().message());
  ThreadPool pool(f.threads);
  const auto start = std::chrono::steady_clock::now();
  auto summary = QuantizeModel(f.model, f.output, *target, pool);
  if (!summary.ok()) return Fail(summary.status().message());
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  fmt::print("wrote {}: {} tensors ({} converted, {} copied), {:.1f} MB -> {:.1f} MB of weights, {} in {:.1f} s\n",
             f.output, summary->num_tensors, summary->num_quantized, summary->num_copied, summary->input_bytes / 1e6,
             summary->output_bytes / 1e6, DTypeName(*target), seconds);
  return 0;
}

}  // namespace tetra::cli
