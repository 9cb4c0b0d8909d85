"""Heuristics as signals, then policy: rule sets by domain / source / lang (first match wins,
top-level filters as `default`), per-language parameters, `hs_*` signal columns that decide as
the filters do, and `mode: annotate` that keeps every document with its would-be reason. Decisions
stay datatrove's: identical to its filter chain on real text with the same parameters."""

from __future__ import annotations

import hashlib
import importlib
import json

import pyarrow as pa
import pytest

from curate.records.errors import ConfigError
from curate.records.typed import build
from curate.scorers.heuristics import SIGNALS
from curate.stages.filter.heuristics import HeuristicsConfig, HeuristicsStage

# Reference text keeps its manuals: the prose rules made for web pages drop much of it for symbols.
PROSE = [{"filter": "gopher_repetition"}, {"filter": "gopher_quality"}, {"filter": "fineweb_quality"}]
DOCS = [{"filter": "gopher_repetition", "params": {"top_n_grams": [[2, 0.3]], "dup_n_grams": [[10, 0.3]]}},
        {"filter": "gopher_quality", "params": {"min_doc_words": 20, "max_non_alpha_words_ratio": 0.4,
                                                "min_stop_words": None, "max_symbol_word_ratio": None}}]


def _table(records: list[dict], lang: str | list[str] = "en", domain: str | list[str] | None = None) -> pa.Table:
    n = len(records)
    cols = {"id": [hashlib.blake2b(f"{i}{r['text']}".encode(), digest_size=8).hexdigest() for i, r in enumerate(records)],
            "text": [r["text"] for r in records], "source": [r.get("source", "test") for r in records],
            "lang": [lang] * n if isinstance(lang, str) else lang}
    if domain is not None:
        cols["domain"] = [domain] * n if isinstance(domain, str) else domain
    return pa.table(cols)


@pytest.fixture(scope="module")
def records(system_corpus) -> list[dict]:
    """Real text that comes with Python: stdlib sources, pydoc topics, its licence."""
    rows = [json.loads(line) for line in open(system_corpus)]
    per_source: dict[str, list] = {}
    for r in rows:
        if len(r["text"]) < 12_000 and len(per_source.setdefault(r["source"], [])) < 40:
            per_source[r["source"]].append(r)
    return [r for group in per_source.values() for r in group]


def _stage(**cfg) -> HeuristicsStage:
    stage = HeuristicsStage(build(HeuristicsConfig, cfg, "stages[0]"))
    stage.setup()
    return stage


def _reasons(out) -> dict[str, str]:
    return dict(zip(out.rejected.column("id").to_pylist(), out.rejected.column("reason").to_pylist()))


def _datatrove_chain(text: str, chain: list[dict]) -> str | None:
    """datatrove's own classes, one after the other, as a datatrove pipeline would run them."""
    from datatrove.data import Document

    from curate.scorers.heuristics import FILTER_CLASSES

    for spec in chain:
        module, cls = FILTER_CLASSES[spec["filter"]]
        params = {k: tuple(map(tuple, v)) if isinstance(v, list) else v for k, v in spec.get("params", {}).items()}
        res = getattr(importlib.import_module(module), cls)(**params).filter(Document(text=text, id="x"))
        if res is not True:
            return f"{spec['filter']}:{res[1]}"
    return None


@pytest.fixture(scope="module")
def routed(records):
    """The same documents tagged tech-docs, under the prose default and a docs rule set."""
    table = _table(records, domain="tech-docs")
    prose = _stage(filters=PROSE).process(table)
    policy = dict(filters=PROSE, rule_sets=[{"name": "docs", "match": {"domain": ["tech-docs"]}, "filters": DOCS}])
    docs = _stage(**policy).process(table)
    annotated = _stage(**policy, mode="annotate", signals=True).process(table.set_column(
        table.schema.get_field_index("domain"), "domain", pa.array(["tech-docs", "web"] * (table.num_rows // 2)
                                                                   + ["tech-docs"] * (table.num_rows % 2))))
    return table, prose, docs, annotated


def test_decisions_identical_to_datatrove_chain(routed):
    table, prose, docs, _ = routed
    for out, chain in ((prose, PROSE), (docs, DOCS)):
        expected = {i: _datatrove_chain(t, chain) for i, t in zip(table.column("id").to_pylist(),
                                                                   table.column("text").to_pylist())}
        assert _reasons(out) == {i: r for i, r in expected.items() if r is not None}
        assert out.kept.num_rows + out.rejected.num_rows == table.num_rows


def test_prose_drop_is_kept_under_docs_rule_set_and_annotated(routed):
    table, prose, docs, annotated = routed
    dropped_by_prose = _reasons(prose)
    rescued = set(dropped_by_prose) & set(docs.kept.column("id").to_pylist())
    assert len(rescued) >= 0.2 * table.num_rows, "the docs rules keep reference text the prose rules drop"
    assert docs.counters["rule_set_docs"] == table.num_rows
    # annotate: nothing dropped; each row carries its rule set and the reason its set would give.
    out = annotated.kept
    assert annotated.rejected is None or annotated.rejected.num_rows == 0
    assert out.num_rows == table.num_rows
    by_set = {"docs": _reasons(docs), "default": dropped_by_prose}
    for i, rule_set, reason in zip(out.column("id").to_pylist(), out.column("heuristics_rule_set").to_pylist(),
                                   out.column("heuristics_reason").to_pylist()):
        assert reason == by_set[rule_set].get(i)
    sets = out.column("heuristics_rule_set").to_pylist()
    assert set(sets) == {"docs", "default"}
    rescued_rows = [r for i, s, r in zip(out.column("id").to_pylist(), sets, out.column("heuristics_reason").to_pylist())
                    if i in rescued and s == "default"]
    assert rescued_rows and all(r is not None for r in rescued_rows)  # the prose reason is recorded, not acted on
    assert annotated.counters["would_drop"] == sum(r is not None for r in out.column("heuristics_reason").to_pylist())


def test_signals_decide_as_the_filters_do(records):
    """A threshold on an `hs_*` column gives the filter's decision when that rule alone is on."""
    table = _table(records)
    out = _stage(filters=[], signals=True).process(table).kept
    assert set(SIGNALS) <= set(out.column_names)
    sig = {c: out.column(c).to_pylist() for c in SIGNALS}
    off_q = {k: None for k in ("max_doc_words", "min_avg_word_length", "max_avg_word_length", "max_symbol_word_ratio",
                               "max_bullet_lines_ratio", "max_ellipsis_lines_ratio", "max_non_alpha_words_ratio",
                               "min_stop_words")}
    off_r = {"dup_line_frac": None, "dup_para_frac": None, "dup_line_char_frac": None, "dup_para_char_frac": None,
             "top_n_grams": [], "dup_n_grams": []}
    cases = [
        ({"filter": "gopher_quality", "params": {**off_q, "min_doc_words": 200}}, lambda i: sig["hs_words"][i] < 200),
        ({"filter": "gopher_quality", "params": {**off_q, "min_doc_words": None, "max_non_alpha_words_ratio": 0.8}},
         lambda i: sig["hs_alpha_ratio"][i] < 0.8),
        ({"filter": "gopher_quality", "params": {**off_q, "min_doc_words": None, "min_stop_words": 5}},
         lambda i: sig["hs_stop_words"][i] < 5),
        ({"filter": "gopher_repetition", "params": {**off_r, "dup_line_frac": 0.2}},
         lambda i: sig["hs_dup_line_frac"][i] > 0.2),
        ({"filter": "gopher_repetition", "params": {**off_r, "dup_para_frac": 0.1}},
         lambda i: sig["hs_dup_para_frac"][i] > 0.1),
        ({"filter": "gopher_repetition", "params": {**off_r, "top_n_grams": [[2, 0.05]]}},
         lambda i: sig["hs_top2gram_frac"][i] > 0.05),
        ({"filter": "fineweb_quality", "params": {"line_punct_thr": 0.3, "line_punct_exclude_zero": False,
                                                  "short_line_thr": 1.0, "char_duplicates_ratio": 1.0, "new_line_ratio": 1e9}},
         lambda i: sig["hs_line_punct_ratio"][i] < 0.3),
    ]
    for spec, predicate in cases:
        dropped = set(_reasons(_stage(filters=[spec]).process(table)))
        by_column = {i for n, i in enumerate(table.column("id").to_pylist()) if predicate(n)}
        assert dropped == by_column, spec
        assert 0 < len(dropped) < table.num_rows, spec  # both outcomes occur on this text


def test_lang_params_apply_by_lang():
    """FineWeb-2's adapted thresholds: a language's parameters apply to that language only."""
    texts = [{"text": "\n".join(importlib.import_module(f"spacy.lang.{lang}.examples").sentences)}
             for lang in ("es", "it", "pl", "de", "fr", "pt")]
    spec = {"filter": "gopher_quality", "params": {"min_doc_words": 5}, "lang_params": {"es": {"min_doc_words": 10 ** 6}}}
    langs = ["es", "it", "pl", "de", "fr", "pt"]
    out = _stage(filters=[spec]).process(_table(texts, lang=langs))
    reasons = _reasons(out)
    ids = out.kept.column("id").to_pylist() + out.rejected.column("id").to_pylist()
    by_lang = dict(zip(_table(texts, lang=langs).column("id").to_pylist(), langs))
    assert {by_lang[i] for i, r in reasons.items() if r == "gopher_quality:gopher_short_doc"} == {"es"}
    assert len(ids) == len(texts)
    # The same text tagged `it` instead passes the word count.
    as_it = _stage(filters=[spec]).process(_table(texts[:1], lang="it"))
    assert "gopher_quality:gopher_short_doc" not in _reasons(as_it).values()


def test_rule_sets_first_match_wins_by_source_and_lang(records):
    recs = records[:40]
    cfg = dict(filters=[{"filter": "gopher_quality", "params": {"min_doc_words": 10 ** 6}}],
               rule_sets=[{"name": "spanish", "match": {"lang": ["es"]}, "filters": []},
                          {"name": "pydoc", "match": {"source": ["py*"]}, "filters": []},
                          {"name": "late", "match": {"source": ["python-*"]},
                           "filters": [{"filter": "gopher_quality", "params": {"min_doc_words": 10 ** 6}}]}])
    langs = ["es" if i % 2 else "en" for i in range(len(recs))]
    out = _stage(**cfg, mode="annotate").process(_table(recs, lang=langs)).kept
    for src, lang, rs, reason in zip(*(out.column(c).to_pylist() for c in
                                       ("source", "lang", "heuristics_rule_set", "heuristics_reason"))):
        want = "spanish" if lang == "es" else "pydoc" if src.startswith("py") else "default"
        assert rs == want and (reason is None) == (want != "default")


@pytest.mark.parametrize("entry, field", [
    ({"rule_sets": [{"name": "d", "filters": [{"filter": "gopher_quality", "params": {"nope": 1}}]}]},
     "stages[1].rule_sets[0].filters[0]"),
    ({"rule_sets": [{"name": "d", "filters": [{"filter": "gopher_quality", "lang_params": {"es": {"min_doc_words": "x"}}}]}]},
     "stages[1].rule_sets[0].filters[0]"),
    ({"rule_sets": [{"name": "d", "match": {"domian": ["x"]}}]}, "stages[1].rule_sets[0].match.domian"),
    ({"rule_sets": [{"name": "default"}]}, "stages[1].rule_sets[0]"),
    ({"mode": "filter"}, "stages[1].mode"),
])
def test_nested_rule_sets_are_validated_at_load(entry, field):
    with pytest.raises(ConfigError) as e:
        build(HeuristicsConfig, entry, "stages[1]")
    assert e.value.field.startswith(field)
