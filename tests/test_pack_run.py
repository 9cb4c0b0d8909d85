"""`curate pack` end to end on Ray over a run built from real text."""

from __future__ import annotations

import argparse
import json
import shutil

import numpy as np
import pytest

from curate.pipeline.catalog import db as catalog
from curate.pipeline.commands.pack import pack, register
from curate.pipeline.errors import CurateError
from curate.stages import shardio
from curate.stages.tokens.megatron import read_indexed_dataset
from curate.stages.tokens.packing import read_rows
from curate.stages.tokens.tokenizers import load_tokenizer
from test_pack_common import load_docs, make_run, write_plan

GROUPS = [
    # `code` first: stdlib sources match both, first match wins.
    {"name": "code", "where": "domain = 'code'", "requested_tokens": 10_000_000, "max_epochs": 2.0},
    {"name": "prose", "where": "source <> 'license' OR domain = 'code'", "requested_tokens": 1000, "max_epochs": 4.0},
]


@pytest.fixture(scope="module")
def packed(ray_session, system_corpus, tmp_path_factory):
    docs = load_docs(system_corpus)
    run = make_run(tmp_path_factory.mktemp("packrun") / "run", docs, n_parts=3)
    write_plan(run, GROUPS, seq_len=256)
    # These tests account for every document of a group in its rows: no evaluation hold-out here
    # (tests/test_holdout.py covers it).
    result = pack(run, vocab_size=2000, workers=2, echo=lambda s: None, eval_fraction=0.0)
    return run, docs, result


def digest(run, group, name):
    return shardio.file_digest(run / "tokens" / group / name)


def own_copy(packed, tmp_path):
    """The packed run for a test that repacks or deletes parts of it: the module's run stays as built."""
    return shutil.copytree(packed[0], tmp_path / "run")


def test_catalog_sees_tokenize_stage(packed):
    run, docs, _ = packed
    assert json.loads((run / "stages.json").read_text()) == ["ingest", "tokenize"]
    t = catalog.query(run, 'SELECT "group", count(*) AS n, sum(n_tokens) AS tok FROM docs GROUP BY ALL').to_pylist()
    by = {r["group"]: r for r in t}
    assert sum(r["n"] for r in t) == len(docs)
    assert by["code"]["n"] == sum(d["source"] == "python-stdlib" for d in docs)
    assert by[None]["n"] == sum(d["source"] == "license" for d in docs)  # in no group, still tokenized
    assert all(r["tok"] > 0 for r in t)


def test_no_token_lost_per_group(packed):
    run, _, result = packed
    index = json.loads((run / "tokens" / "index.json").read_text())
    sp = load_tokenizer(run / "tokens" / "tokenizer.model")
    for name in ("code", "prose"):
        q = f"SELECT text, n_tokens FROM docs WHERE \"group\" = '{name}'"
        rows_cat = catalog.query(run, q).to_pylist()
        meta = json.loads((run / "tokens" / name / "meta.json").read_text())
        ds = read_indexed_dataset(run / "tokens" / name / "tokens")
        rows, segs = read_rows(run / "tokens" / name, 256, ds.dtype)
        doc_tokens = sum(r["n_tokens"] for r in rows_cat)
        separators = len(rows_cat)  # one EOS per document
        assert doc_tokens + separators == ds.lengths.sum() == rows.size - meta["n_pad"] == int((segs > 0).sum())
        assert index["groups"][name]["n_tokens"] == doc_tokens + separators == meta["n_doc_tokens"]
        assert meta["n_text_tokens"] == doc_tokens
        # Same multiset of tokens in the documents and in the packed rows.
        assert np.array_equal(np.bincount(ds.tokens, minlength=2000), np.bincount(rows[segs > 0], minlength=2000))
        # Documents keep catalog order in tokens.bin and decode back to their text.
        for i in (0, len(ds) // 2, len(ds) - 1):
            assert ds[i][-1] == meta["eos_id"] and sp.decode(ds[i][:-1].tolist()) == rows_cat[i]["text"]
        assert meta["padding_share"] == meta["n_pad"] / rows.size


def test_plan_checked_with_exact_counts(packed):
    _, _, result = packed
    assert len(result.plan_problems) == 1 and "'code'" in result.plan_problems[0]
    assert result.index["plan_check"]["ok"] is False


def test_best_fit_truncates_no_more_than_concat_and_is_deterministic(packed, tmp_path):
    """Best-fit cuts exactly the documents longer than a row; concat cuts those and any document
    that straddles a row boundary, so it never cuts fewer (equal when no short document straddles
    one: tests/test_pack.py shows where best-fit is strictly better)."""
    _, _, result = packed
    run = own_copy(packed, tmp_path)
    before = {g: digest(run, g, "rows.bin") for g in ("code", "prose")}
    concat = pack(run, packing="concat", workers=2, echo=lambda s: None, eval_fraction=0.0).index
    for g in ("code", "prose"):
        # Each document as packed (EOS attached) against a row of seq_len + 1 tokens.
        lengths = read_indexed_dataset(run / "tokens" / g / "tokens").lengths
        longer_than_a_row = int((lengths > 256 + 1).sum())
        assert result.index["groups"][g]["truncated_docs"] == longer_than_a_row
        assert longer_than_a_row <= concat["groups"][g]["truncated_docs"]
        assert result.index["groups"][g]["n_tokens"] == concat["groups"][g]["n_tokens"]
    again = pack(run, workers=2, echo=lambda s: None, eval_fraction=0.0).index
    assert {g: digest(run, g, "rows.bin") for g in ("code", "prose")} == before
    assert again["groups"] == result.index["groups"]


def test_resume_after_partial_loss(packed, tmp_path):
    run = own_copy(packed, tmp_path)
    before = {n: digest(run, "code", n) for n in ("tokens.bin", "tokens.idx", "rows.bin", "segs.bin")}
    tok = run / "tokenize" / "part-00001-000.parquet"
    (run / "tokenize" / "_done" / "part-00001-000.json").unlink()  # as if killed before the marker
    (run / "tokens" / "_done" / "code.json").unlink()
    (run / "tokens" / "code" / "rows.bin").unlink()
    lines = []
    pack(run, workers=2, echo=lines.append, eval_fraction=0.0)
    assert "2 reused" in lines[0]
    assert {n: digest(run, "code", n) for n in before} == before
    assert tok.exists()


def test_cli_without_plan_uses_one_group_and_a_given_tokenizer(packed, tmp_path, capsys):
    run, docs, _ = packed
    other = make_run(tmp_path / "run2", docs[:40], n_parts=2)
    hf = tmp_path / "hf"
    hf.mkdir()
    shutil.copy(run / "tokens" / "tokenizer.model", hf / "tokenizer.model")
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["pack", str(other), "--tokenizer", str(hf), "--seq-len", "128", "--packing", "concat",
                              "--eval-fraction", "0"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "all" in out and "padding" in out
    index = json.loads((other / "tokens" / "index.json").read_text())
    assert list(index["groups"]) == ["all"] and index["groups"]["all"]["n_docs"] == 40
    assert index["seq_len"] == 128 and index["packing"] == "concat"
    assert shardio.file_digest(other / "tokens" / "tokenizer.model") == shardio.file_digest(hf / "tokenizer.model")


def test_clear_errors(packed, tmp_path):
    run, docs, _ = packed
    with pytest.raises(CurateError, match="does not exist"):
        pack(tmp_path / "nope")
    with pytest.raises(CurateError, match="--plan"):
        pack(run, plan=tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(CurateError, match="not valid JSON"):
        pack(run, plan=broken)
    bad = make_run(tmp_path / "bad", docs[:5], n_parts=1)
    write_plan(bad, [{"name": "x", "where": "no_such_column = 1"}])
    with pytest.raises(CurateError, match="no_such_column"):
        pack(bad, tokenizer=str(run / "tokens" / "tokenizer.model"))
    with pytest.raises(CurateError, match="--tokenizer"):
        pack(bad, plan=None, tokenizer=str(tmp_path / "none.model"))


def test_run_folder_with_a_quote_in_its_name(packed, tmp_path):
    run, docs, _ = packed
    odd = make_run(tmp_path / "o'brien", docs[:6], n_parts=1)
    write_plan(odd, [{"name": "x", "where": "n_chars > 0"}])
    pack(odd, tokenizer=str(run / "tokens" / "tokenizer.model"), workers=1, echo=lambda s: None, eval_fraction=0.0)
    index = json.loads((odd / "tokens" / "index.json").read_text())
    assert index["groups"]["x"]["n_docs"] == 6


def test_planner_and_packer_agree_on_groups(packed, tmp_path):
    """pack (one group) -> plan on exact n_tokens -> pack with the plan: same documents per group."""
    from curate.pipeline.commands.plan import plan

    run, docs, _ = packed
    other = make_run(tmp_path / "run", docs[::3], n_parts=2)
    model = str(run / "tokens" / "tokenizer.model")
    pack(other, tokenizer=model, seq_len=256, workers=2, echo=lambda s: None, eval_fraction=0.0)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "name: t\nkind: natural\ndescription: test\n"
        "schedule: {kind: cosine, lr_start: 3.0e-4, lr_end_ratio: 0.1, warmup_fraction: 0.01}\n"
        "max_epochs: 4.0\ngroups:\n"
        "  - {name: code, where: \"domain = 'code'\"}\n"
        "  - {name: manpages, where: \"source = 'man'\"}\n"
        "  - {name: rest, where: \"TRUE\"}\n")
    planned = plan(other, str(recipe), seq_len=256, plot=False, echo=None)
    assert planned["token_counts"] == "exact"
    result = pack(other, workers=2, echo=lambda s: None, eval_fraction=0.0)
    assert result.plan_problems == [] and result.index["plan_check"]["ok"]
    for g in planned["groups"]:
        packed_g = result.index["groups"][g["name"]]
        assert packed_g["n_docs"] == g["documents"]
        assert packed_g["n_text_tokens"] == g["available_tokens"]
    assert sum(g["n_docs"] for g in result.index["groups"].values()) == len(docs[::3])
    assert not (other / "tokens" / "all").exists()  # the earlier plan-less group is gone
    assert sorted(p.name for p in (other / "tokens").iterdir() if p.is_dir()) == ["_done", "code", "manpages", "rest"]


def test_cli_executor_local_packs_what_ray_packs(packed, tmp_path):
    """`curate pack --executor local` tokenizes and packs in this process (no Ray) into the same
    bytes as a pack on Ray from the same run; `--executor` takes what `curate run` takes."""
    from curate.pipeline.cli import main

    run = own_copy(packed, tmp_path)
    names = ("tokens.bin", "tokens.idx", "rows.bin", "segs.bin")

    def repack(how) -> dict:
        shutil.rmtree(run / "tokenize")
        shutil.rmtree(run / "tokens" / "_done")
        for g in ("code", "prose"):
            shutil.rmtree(run / "tokens" / g)
        how()
        return {(g, n): digest(run, g, n) for g in ("code", "prose") for n in names}

    on_ray = repack(lambda: pack(run, workers=2, echo=lambda s: None, eval_fraction=0.0))
    # 1: the plan's problem (its `code` group asks for more tokens than the run has)
    local = repack(lambda: main(["pack", str(run), "--executor", "local", "--eval-fraction", "0"]) == 1 or 1 / 0)
    assert local == on_ray
    with pytest.raises(SystemExit):
        main(["pack", str(run), "--executor", "nowhere"])
