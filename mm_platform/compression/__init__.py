"""Compression of registered models: pruning, quantization, distillation, with lineage."""
