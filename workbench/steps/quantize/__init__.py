"""Quantization steps: ort (quantize.ort_dynamic, quantize.ort_static), torch (quantize.torch_dynamic, fp16/bf16)."""
