"""vidrt.export: ONNX export and onnxruntime / TensorRT backends (optional dependencies, imported lazily)."""

if __name__ != "vidrt.export":   # pragma: no cover - only when a checkout's root is on sys.path
    raise ImportError(
        f"{__file__} is vidrt's export/ folder (vidrt.export), imported as the top-level package {__name__!r} because "
        "the root of a vidrt checkout is on sys.path (Python started there: `python -m ...`, `python -c ...`), where "
        "it shadows any installed package of that name (transformers imports PyPI's `kernels`). Run from another "
        "directory, or with `python -P` (Python >= 3.11) so the working directory is not put on sys.path.")

