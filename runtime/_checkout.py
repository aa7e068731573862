"""The ImportError for a checkout's folder imported as a top-level package (kernels/, export/ from the repo root).

Imports nothing, so vidrt.kernels (a leaf) and vidrt.export can both call it first."""
from __future__ import annotations


def refuse_top_level(name: str, file: str) -> None:
    """Raise, naming the cause and the fix, unless module `name` (a package's ``__name__``) is vidrt's own."""
    folder = name.rpartition(".")[2]
    if name != f"vidrt.{folder}":
        raise ImportError(
            f"{file} is vidrt's {folder}/ folder (vidrt.{folder}), imported as the top-level package {name!r} because "
            "the root of a vidrt checkout is on sys.path (Python started there: `python -m ...`, `python -c ...`), "
            "where it shadows any installed package of that name (transformers imports PyPI's `kernels`). Run from "
            "another directory, or with `python -P` (Python >= 3.11) so the working directory is not put on sys.path.")
