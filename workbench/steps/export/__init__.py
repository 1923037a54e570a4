"""Export steps: onnx (export.onnx), torch (export.torchscript, export.torch_export)."""
