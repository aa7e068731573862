"""vidrt.kernels: Triton kernels and their pure-torch references.

Leaves of the package: nothing here imports the rest of vidrt, and nothing imports triton at
``import vidrt.kernels`` time (each kernel module imports it when first used).
"""

if __name__ != "vidrt.kernels":   # pragma: no cover - only when a checkout's root is on sys.path
    raise ImportError(
        f"{__file__} is vidrt's kernels/ folder (vidrt.kernels), imported as the top-level package {__name__!r} because "
        "the root of a vidrt checkout is on sys.path (Python started there: `python -m ...`, `python -c ...`), where "
        "it shadows any installed package of that name (transformers imports PyPI's `kernels`). Run from another "
        "directory, or with `python -P` (Python >= 3.11) so the working directory is not put on sys.path.")

from vidrt.kernels.reference import MaskSpec, Rope3D, apply_rope, attention_reference, build_rope_3d

__all__ = ["MaskSpec", "Rope3D", "apply_rope", "attention_reference", "build_rope_3d"]
