"""What a user reads: a budget rounded to whole steps says so, token counts in plan.png are readable,
and a YAML word read as a boolean gets a hint to quote it."""

from __future__ import annotations

import re

import pytest

from curate.mixtures.plot import format_tokens
from curate.pipeline.commands.plan import plan
from curate.pipeline.errors import ConfigError
from test_plan_catalog import make_run, recipe_file


def test_a_budget_that_is_not_whole_steps_is_rounded_down_with_a_note(tmp_path, capsys):
    """`--tokens 1e5 --seq-len 256` is 390.6 steps: the plan takes 390 whole steps and says so,
    so the trainer never meets a partial last step."""
    run = make_run(tmp_path, with_tokens=True)
    result = plan(run, recipe_file(tmp_path), tokens=1e5, seq_len=256, plot=False)
    assert result["total_tokens"] == 100_000 // 256 * 256 == result["phases"][-1]["end_token"]
    assert result["total_tokens"] % result["tokens_per_step"] == 0
    assert result["total_steps"] == 100_000 // 256
    note = "tokens: 100,000 is not a whole number of steps of 256 tokens"
    assert any(w.startswith(note) for w in result["warnings"])
    assert note in capsys.readouterr().out
    # With --batch-size the step is seq_len x batch size; a whole number of steps is left alone.
    result = plan(run, recipe_file(tmp_path), tokens=256 * 4 * 50, seq_len=256, batch_size=4, plot=False, echo=None)
    assert result["total_tokens"] == 256 * 4 * 50 and not any(w.startswith("tokens:") for w in result["warnings"])
    result = plan(run, recipe_file(tmp_path), tokens=256 * 4 * 50 + 1000, seq_len=256, batch_size=4, plot=False,
                  echo=None)
    assert result["total_tokens"] == 256 * 4 * 50


@pytest.mark.parametrize("x", [535_552, 999_936, 999_960, 1_000_000, 2048, 30_000_123, 12, 0, 2.5e9, 1_234_567_890_123])
def test_token_counts_read_as_at_most_four_digits_and_a_unit(x):
    text = format_tokens(x)
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMBT]?)", text)
    assert m, text
    digits = m.group(1).replace(".", "").lstrip("0")
    assert len(digits) <= 4 and float(m.group(1)) < 1000, text
    value = float(m.group(1)) * {"": 1, "K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}[m.group(2)]
    assert abs(value - x) <= 5e-4 * x, (x, text)


def test_format_tokens_examples():
    assert format_tokens(535_552) == "535.6K"  # was "535.552K" in plan.png titles
    assert format_tokens(999_960) == "1M"


@pytest.mark.parametrize("word", ["off", "no", "yes", "null"])
def test_a_yaml_word_read_as_bool_or_null_gets_a_hint_to_quote_it(tmp_path, word):
    from curate.pipeline.running.config import load_config

    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"name: {word}\ninputs:\n  - path: {tmp_path}\n")
    with pytest.raises(ConfigError, match=r"`name`: expected a string, got .*quote it"):
        load_config(cfg)
    cfg.write_text(f"name: '{word}'\ninputs:\n  - path: {tmp_path}\n")
    assert load_config(cfg).name == word
