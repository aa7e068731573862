"""Prompt grammar: parsing, canonical text, errors, vocabulary, sampler and the train / held-out split."""
import numpy as np
import pytest

from vidrt.errors import PromptError
from vidrt.world import (COLORS, MOTIONS, SHAPES, ObjectSpec, Scene, held_out_prompts, held_out_triples,
                         is_held_out, is_held_out_triple, parse, sample_prompt, sample_scene, sample_train_prompt,
                         tokenize, train_prompts, vocabulary)


def test_parse_two_objects_and_background():
    scene = parse("a blue square moves up and a yellow triangle stays still on a gray background")
    assert scene.objects == (ObjectSpec("blue", "square", "moves up"), ObjectSpec("yellow", "triangle", "stays still"))
    assert scene.background == "gray" and scene.background_given


def test_parse_variants_and_defaults():
    scene = parse("An orange Circle moves to the left, a red square. the cyan triangle bounces on grey background.")
    assert [o.motion for o in scene.objects] == ["moves left", "stays still", "bounces"]
    assert [o.ref for o in scene.objects] == [False, False, True]
    assert scene.background == "gray"
    default = parse("a red circle grows")
    assert default.background == "black" and not default.background_given


@pytest.mark.parametrize("seed", range(50))
def test_canonical_text_round_trips(seed):
    scene = sample_scene(seed)
    text = scene.prompt()
    assert parse(text) == scene
    assert set(tokenize(text)) <= set(vocabulary())


def test_vocabulary_covers_grammar_words():
    vocab = vocabulary()
    assert vocab == sorted(set(vocab))
    for w in ["a", "an", "the", "and", "on", "background", "to", "moves", "stays", "still", "bounces", "grows",
              "shrinks", "left", "right", "up", "down", "gray", "grey", "black", *COLORS, *SHAPES]:
        assert w in vocab


@pytest.mark.parametrize("prompt, needle", [
    ("a red elephant moves right", "'elephant'"),
    ("a red circle dances", "'dances'"),
    ("a magenta circle", "'magenta'"),
])
def test_unknown_words_are_listed_with_the_grammar(prompt, needle):
    with pytest.raises(PromptError) as e:
        parse(prompt)
    msg = str(e.value)
    assert needle in msg and "Prompt grammar" in msg and "triangle" in msg and "bounces" in msg


@pytest.mark.parametrize("prompt, needle", [
    ("", "empty"),
    ("red circle moves right", "expected an object"),
    ("a red moves right", "expected a shape"),
    ("a gray circle", "expected an object colour"),
    ("a red circle moves sideways and", "unknown word"),
    ("a red circle moves", "expected a direction"),
    ("a red circle stays", "'still'"),
    ("a red circle on a purple background", "expected a background colour"),
    ("a red circle on a gray", "'background'"),
    ("a red circle and a blue circle and a green circle and a cyan circle", "1 to 3 objects, got 4"),
    ("a red circle moves left and a red circle moves right", "appears twice"),
    ("a white square on a white background", "invisible"),
])
def test_structural_errors(prompt, needle):
    with pytest.raises(PromptError, match="Prompt grammar") as e:
        parse(prompt)
    assert needle in str(e.value)


def test_scene_validation():
    with pytest.raises(PromptError):
        Scene(())
    with pytest.raises(PromptError):
        ObjectSpec("red", "hexagon")


def test_sampler_is_deterministic_and_covers_the_grammar():
    a = [sample_prompt(np.random.default_rng(7)) for _ in range(3)]
    assert a[0] == a[1] == a[2]
    rng = np.random.default_rng(0)
    scenes = [sample_scene(rng) for _ in range(600)]
    counts = np.bincount([len(s.objects) for s in scenes], minlength=4)[1:]
    assert all(c > 100 for c in counts), counts
    assert {o.color for s in scenes for o in s.objects} == set(COLORS)
    assert {o.shape for s in scenes for o in s.objects} == set(SHAPES)
    assert {o.motion for s in scenes for o in s.objects} == set(MOTIONS)
    assert {s.background for s in scenes} == {"black", "gray", "white"}


def test_held_out_triples_form_a_latin_square():
    triples = held_out_triples()
    assert len(triples) == 24
    for c in COLORS:          # every colour+shape pair keeps 7 of its 8 motions for training
        for s in SHAPES:
            assert sum(is_held_out_triple(c, s, m) for m in MOTIONS) == 1
    for s in SHAPES:          # every shape+motion pair is held out for exactly one colour
        for m in MOTIONS:
            assert sum(is_held_out_triple(c, s, m) for c in COLORS) == 1


def test_held_out_prompts_are_fixed_distinct_and_unseen_in_training():
    held = held_out_prompts()
    assert len(held) >= 60 and len(set(held)) == len(held)
    assert held == held_out_prompts()
    assert all(is_held_out(p) for p in held)
    assert {len(parse(p).objects) for p in held} == {1, 2, 3}
    train = train_prompts(2000, seed=0)
    assert len(set(train)) == 2000 and not any(is_held_out(p) for p in train)
    train_triples = {(o.color, o.shape, o.motion) for p in train for o in parse(p).objects}
    assert not train_triples & set(held_out_triples())
    assert len(train_triples) == 192 - 24     # every other triple is seen in training
    rng = np.random.default_rng(3)
    assert not any(is_held_out(sample_train_prompt(rng)) for _ in range(300))
