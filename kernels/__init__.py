"""vidrt.kernels: Triton kernels and their pure-torch references.

Leaves of the package: nothing here imports the rest of vidrt (but the import-free vidrt._checkout), and nothing
imports triton at ``import vidrt.kernels`` time (each kernel module imports it when first used).
"""

from vidrt._checkout import refuse_top_level

refuse_top_level(__name__, __file__)   # a checkout's root on sys.path would shadow installed packages

from vidrt.kernels.reference import MaskSpec, Rope3D, apply_rope, attention_reference, build_rope_3d

__all__ = ["MaskSpec", "Rope3D", "apply_rope", "attention_reference", "build_rope_3d"]
