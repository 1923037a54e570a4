"""Compile steps: ort (compile.ort_graph), torch (compile.torch, compile.tensorrt)."""
