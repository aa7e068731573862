"""vidrt.export: ONNX export and onnxruntime / TensorRT backends (optional dependencies, imported lazily)."""

from vidrt._checkout import refuse_top_level

refuse_top_level(__name__, __file__)   # a checkout's root on sys.path would shadow installed packages
