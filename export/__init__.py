"""vidrt.export: ONNX export and onnxruntime / TensorRT backends (optional dependencies, imported lazily)."""
