"""The Open Inference Protocol v2: codec (JSON and the binary extension) and rest (the Starlette routes)."""
