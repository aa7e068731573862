"""Checkpoint reading: diffusers folders, the original Wan layout, bare state dicts."""
