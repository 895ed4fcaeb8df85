// Placeholder: replaced by the GGUF / safetensors readers.
#include "format/model_files.h"
