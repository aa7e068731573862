"""The synthetic world: a prompt grammar, a ground-truth renderer, multi-shot clips and a
prompt-adherence scorer. It is the training data of the embedded model and the quality yardstick
of every fast path. See docs/world.md for the grammar and the rules.

    from vidrt.world import render, score
    frames = render("a red circle moves right on a gray background", 64, 64, num_frames=17, seed=0)
    score(frames, "a red circle moves right on a gray background").adherence   # -> 1.0
"""
from vidrt.world.grammar import (BACKGROUNDS, COLORS, DEFAULT_BACKGROUND, GRAMMAR, MAX_OBJECTS, MOTIONS, SHAPES,
                                 ObjectSpec, Scene, held_out_prompts, held_out_triples, is_held_out,
                                 is_held_out_triple, parse, sample_prompt, sample_scene, sample_train_prompt,
                                 tokenize, train_prompts, vocabulary)
from vidrt.world.render import render
from vidrt.world.score import ObjectScore, Score, mean_scores, score
from vidrt.world.shots import Shot, model_prompts, parse_shots, render_shots, shot_lengths

__all__ = [
    "COLORS", "SHAPES", "MOTIONS", "BACKGROUNDS", "DEFAULT_BACKGROUND", "MAX_OBJECTS", "GRAMMAR",
    "ObjectSpec", "Scene", "parse", "tokenize", "vocabulary", "sample_scene", "sample_prompt",
    "sample_train_prompt", "train_prompts", "is_held_out", "is_held_out_triple", "held_out_triples",
    "held_out_prompts", "render", "Shot", "parse_shots", "model_prompts", "shot_lengths", "render_shots", "Score",
    "ObjectScore", "score", "mean_scores",
]
