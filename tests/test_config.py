from __future__ import annotations

import pytest

from distill.config import RecipeError, load_recipe

GOOD = """\
teacher:
  backend: hf
  model: embedded
problems:
  task: arithmetic
  count: 8
sampling:
  n: 2
  temperature: 0.6
"""


def write(tmp_path, text, name="r.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_good_recipe_and_defaults(tmp_path):
    r = load_recipe(write(tmp_path, GOOD))
    assert r.sampling.n == 2 and r.problems.count == 8
    assert r.sampling.top_p == 0.95 and r.prompt.template == "r1"  # R1 report defaults


def test_unknown_key_names_key_file_line_and_suggests(tmp_path):
    p = write(tmp_path, GOOD.replace("  temperature: 0.6", "  temprature: 0.6"))
    with pytest.raises(RecipeError) as e:
        load_recipe(p)
    msg = str(e.value)
    assert str(p) in msg and "line 9" in msg
    assert "sampling.temprature: unknown key" in msg and "did you mean 'sampling.temperature'" in msg


def test_unknown_section(tmp_path):
    with pytest.raises(RecipeError, match="samplng: unknown key; did you mean 'sampling'"):
        load_recipe(write(tmp_path, GOOD + "samplng:\n  n: 3\n"))


def test_bad_type_names_key_and_value(tmp_path):
    with pytest.raises(RecipeError) as e:
        load_recipe(write(tmp_path, GOOD.replace("n: 2", "n: eight")))
    assert "sampling.n" in str(e.value) and "'eight'" in str(e.value) and "line 8" in str(e.value)


def test_constraint_violation(tmp_path):
    with pytest.raises(RecipeError, match="sampling.top_p"):
        load_recipe(write(tmp_path, GOOD), ["sampling.top_p=1.5"])


def test_overrides_typed_and_repeatable(tmp_path):
    r = load_recipe(write(tmp_path, GOOD), ["sampling.n=8", "sampling.temperature=0", "prompt.system=null",
                                            "problems.task_options.digits=2", "teacher.model=./m"])
    assert r.sampling.n == 8 and isinstance(r.sampling.n, int)
    assert r.sampling.temperature == 0.0 and r.prompt.system is None
    assert r.problems.task_options == {"digits": 2} and r.teacher.model == "./m"


def test_override_unknown_key_blames_set(tmp_path):
    with pytest.raises(RecipeError) as e:
        load_recipe(write(tmp_path, GOOD), ["sampling.nn=3"])
    assert "--set sampling.nn=3" in str(e.value) and "did you mean 'sampling.n'" in str(e.value)


def test_override_syntax_error():
    with pytest.raises(RecipeError, match="expected dotted.key=value"):
        load_recipe(None, ["sampling.n"])


def test_problems_needs_exactly_one_origin(tmp_path):
    with pytest.raises(RecipeError, match="exactly one of problems.source"):
        load_recipe(write(tmp_path, GOOD), ["problems.source=x.jsonl"])
    from distill.generate import plan

    with pytest.raises(RecipeError, match="needs a problems section"):
        plan(load_recipe(write(tmp_path, "sampling:\n  n: 1\n")), None)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(write(tmp_path, "teacher: [\n"))


def test_shipped_recipes_validate():
    from pathlib import Path

    recipes = sorted((Path(__file__).parents[1] / "recipes").glob("**/*.yaml"))
    recipes = [p for p in recipes if "accelerate" not in p.parts]
    assert recipes, "no recipes found"
    for p in recipes:
        load_recipe(p)


def test_engine_controls_are_refused_where_no_engine_keeps_them():
    from distill.config import RecipeError, load_recipe

    with pytest.raises(RecipeError, match="teacher.backend=hf has none"):
        load_recipe(None, ["sampling.repetition_detection.min_count=4"])
    with pytest.raises(RecipeError, match="needs teacher.reasoning_end"):
        load_recipe(None, ["teacher.backend=vllm", "sampling.thinking_token_budget=64"])
    with pytest.raises(RecipeError, match="min_pattern_size"):
        load_recipe(None, ["teacher.backend=vllm", "sampling.repetition_detection.min_pattern_size=9",
                           "sampling.repetition_detection.max_pattern_size=4"])
    r = load_recipe(None, ["teacher.backend=openai", "sampling.thinking_token_budget=64"])
    assert r.sampling.thinking_token_budget == 64
