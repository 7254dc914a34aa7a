"""Split quantized models: datasets, node views, Brevitas QAT, export and the integer golden model."""
