"""Heuristic filters: datatrove's own classes decide, with their exact reasons; English-only
rules spare other languages; documents are conserved."""

from __future__ import annotations

import pyarrow as pa
import pytest

from curate.records.typed import build
from curate.stages.filter.heuristics import FilterSpec, HeuristicsConfig, HeuristicsStage
from test_scorers_corpus import codec_tables, doc_table, licences, multilingual, pydoc_prose, pydoc_topics, stdlib_code


def _datatrove(name: str, **params):
    from datatrove.pipeline.filters import (C4QualityFilter, FineWebQualityFilter, GopherQualityFilter,
                                            GopherRepetitionFilter)

    cls = {"gopher_quality": GopherQualityFilter, "gopher_repetition": GopherRepetitionFilter,
           "c4_quality": C4QualityFilter, "fineweb_quality": FineWebQualityFilter}[name]
    return cls(**params)


def _reference(text: str, names: list[str]) -> str | None:
    """What datatrove itself says, filter after filter (English)."""
    from datatrove.data import Document

    for name in names:
        res = _datatrove(name).filter(Document(text=text, id="x"))
        if res is not True:
            return f"{name}:{res[1]}"
    return None


@pytest.fixture(scope="module")
def corpus() -> pa.Table:
    texts = (pydoc_prose(30) + pydoc_topics(15) + stdlib_code(15) + licences()[:10] + codec_tables(5)
             + [t for _, t in multilingual()[:5]])
    short = " ".join(list(dict.fromkeys(pydoc_prose(1)[0].split()))[:45])  # real words, too few for Gopher, none repeated
    repeated = "\n".join([pydoc_prose(1)[0].splitlines()[0]] * 40)
    return doc_table(texts + [short, repeated])


NAMES = ["gopher_repetition", "gopher_quality", "c4_quality", "fineweb_quality"]


@pytest.fixture(scope="module")
def english_out(corpus):
    stage = HeuristicsStage(HeuristicsConfig(filters=[FilterSpec(n) for n in NAMES]))
    stage.setup()
    table = corpus.append_column("lang", pa.array(["en"] * corpus.num_rows))
    return table, stage.process(table)


def test_reasons_are_exactly_datatrove_reasons(english_out):
    table, out = english_out
    expected = {i: _reference(t, NAMES) for i, t in zip(table.column("id").to_pylist(), table.column("text").to_pylist())}
    got = dict(zip(out.rejected.column("id").to_pylist(), out.rejected.column("reason").to_pylist()))
    assert got == {i: r for i, r in expected.items() if r is not None}
    assert set(out.kept.column("id").to_pylist()) == {i for i, r in expected.items() if r is None}
    # Both kinds of outcome occur on this real text, and several distinct rules fire.
    assert out.kept.num_rows > 0 and len(set(got.values())) >= 3


def test_named_rules_fire(english_out):
    table, out = english_out
    reasons = dict(zip(out.rejected.column("id").to_pylist(), out.rejected.column("reason").to_pylist()))
    ids = table.column("id").to_pylist()
    assert reasons[ids[-2]] == "gopher_quality:gopher_short_doc"
    assert reasons[ids[-1]].startswith("gopher_repetition:")
    assert reasons[ids[-1]] == _reference(table.column("text").to_pylist()[-1], ["gopher_repetition"])


def test_documents_are_conserved(english_out):
    table, out = english_out
    kept, rej = out.kept.column("id").to_pylist(), out.rejected.column("id").to_pylist()
    assert len(kept) + len(rej) == table.num_rows
    assert sorted(kept + rej) == sorted(table.column("id").to_pylist())
    assert out.kept.column_names == table.column_names  # a filter adds no column, rewrites no text
    assert out.kept.column("text").to_pylist() == table.filter(pa.compute.is_in(table.column("id"), pa.array(kept))).column("text").to_pylist()
    assert set(out.rejected.column("stage").to_pylist()) == {"heuristics"}


def test_english_only_rules_spare_other_languages():
    docs = [t for _, t in multilingual(["de", "fr", "es", "it", "nl", "sv", "pl", "cs", "ca", "da", "pt", "fi"])]
    # Under English rules, datatrove drops these translations for lacking English stop words ...
    stop_word_drops = [t for t in docs if _reference(t, ["gopher_quality"]) == "gopher_quality:gopher_enough_stop_words"]
    assert len(stop_word_drops) >= 5
    table = doc_table(stop_word_drops)
    cfg = HeuristicsConfig(filters=[FilterSpec("gopher_quality"), FilterSpec("c4_quality")])
    as_en = HeuristicsStage(cfg).process(table.append_column("lang", pa.array(["en"] * table.num_rows)))
    assert as_en.rejected.num_rows == table.num_rows
    # ... but marked as their own language, no English rule removes them.
    as_de = HeuristicsStage(cfg).process(table.append_column("lang", pa.array(["de"] * table.num_rows)))
    reasons = as_de.rejected.column("reason").to_pylist()
    assert "gopher_quality:gopher_enough_stop_words" not in reasons
    assert not any(r.startswith("c4_quality:") for r in reasons)
    assert as_de.counters["non_english"] == table.num_rows


def test_without_lang_column_the_stage_identifies_languages():
    docs = [t for _, t in multilingual(["de", "fr", "es", "pl"])]
    table = doc_table(docs)
    out = HeuristicsStage(HeuristicsConfig(filters=[FilterSpec("gopher_quality")])).process(table)
    assert out.counters["lang_identified_here"] == table.num_rows
    assert "lang" not in out.kept.column_names
    assert "gopher_quality:gopher_enough_stop_words" not in out.rejected.column("reason").to_pylist()


def test_params_pass_through_and_exempt_sources():
    text = pydoc_topics(1)[0]
    table = doc_table([text, text], source=["pydoc", "keep-me"]).append_column("lang", pa.array(["en", "en"]))
    cfg = HeuristicsConfig(filters=[FilterSpec("gopher_quality", params={"min_doc_words": 10 ** 6})],
                           exempt_sources=["keep-*"])
    out = HeuristicsStage(cfg).process(table)
    assert out.rejected.column("reason").to_pylist() == ["gopher_quality:gopher_short_doc"]
    assert out.kept.column("source").to_pylist() == ["keep-me"] and out.counters["exempt"] == 1


def test_config_errors_name_the_field():
    from curate.records.errors import ConfigError

    with pytest.raises(ConfigError, match=r"filters\[0\]\.filter"):
        build(HeuristicsConfig, {"filters": [{"filter": "nope"}]}, "stages[1]")
    with pytest.raises(ValueError, match="gopher_quality"):
        HeuristicsStage(HeuristicsConfig(filters=[FilterSpec("gopher_quality", params={"no_such": 1})])).setup()


@pytest.mark.parametrize("entry, field", [
    ({"english": []}, "stages[1].english"),
    ({"filters": [{"filter": "gopher_quality", "non_english_params": {"min_doc_words": 5}}]},
     "stages[1].filters[0].non_english_params"),
    ({"filters": [{"filter": "gopher_quality", "non_english": "skip", "non_english_params": {}}]},
     "stages[1].filters[0].non_english_params"),
])
def test_config_refuses_settings_that_would_be_ignored_or_crash(entry, field):
    from curate.records.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        build(HeuristicsConfig, entry, "stages[1]")
    assert e.value.field == field


def test_bad_non_english_params_fail_in_setup():
    # Before the fix this passed setup and failed at the first non-English document; now the
    # spec itself is refused (at config load), so setup is never reached with it.
    with pytest.raises(ValueError, match="non_english_params: gopher_quality"):
        spec = FilterSpec("gopher_quality", non_english="apply", non_english_params={"no_such": 1})
        HeuristicsStage(HeuristicsConfig(filters=[spec])).setup()
