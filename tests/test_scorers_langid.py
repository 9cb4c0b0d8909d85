"""Language ID on real multilingual text (spaCy's example sentences, pydoc topics, Python's licence),
and the langid stage."""

from __future__ import annotations

import pyarrow as pa
import pytest

from curate.scorers.langid import LangID, lid_model_path
from curate.stages.score.annotate import LangIDConfig, LangIDStage
from test_scorers_corpus import doc_table, licences, multilingual, pydoc_topics


@pytest.fixture(scope="module")
def labelled():
    english = [("en", t[:1500]) for t in pydoc_topics(40) + licences()]
    return multilingual() + english


def test_model_ships_in_package():
    path = lid_model_path()
    assert path.name == "lid.176.ftz" and "site-packages" in str(path) and path.stat().st_size > 100_000


def test_accuracy_on_real_multilingual_text(labelled):
    langs, scores = LangID().predict([t for _, t in labelled])
    truth = [lang for lang, _ in labelled]
    accuracy = sum(a == b for a, b in zip(langs, truth)) / len(truth)
    assert len(set(truth)) >= 20
    assert accuracy >= 0.95, [(t, p) for t, p in zip(truth, langs) if t != p]
    assert all(0.0 <= s <= 1.0 for s in scores)


def test_empty_text_is_undetermined():
    langs, scores = LangID().predict(["", "   \n  "])
    assert langs == ["und", "und"] and scores == [0.0, 0.0]


def test_stage_adds_columns_and_filters_with_reasons(labelled):
    texts = [t for _, t in labelled]
    table = doc_table(texts)
    stage = LangIDStage(LangIDConfig(allowed=["en", "de"], min_score=0.5))
    stage.setup()
    out = stage.process(table)
    assert out.kept.num_rows + out.rejected.num_rows == table.num_rows
    assert set(out.kept.column_names) == set(table.column_names) | {"lang", "lang_score"}
    kept = out.kept.to_pylist()
    assert kept and all(r["lang"] in ("en", "de") and r["lang_score"] >= 0.5 for r in kept)
    reasons = set(out.rejected.column("reason").to_pylist())
    assert reasons <= {"lang_not_allowed", "lang_low_score"} and "lang_not_allowed" in reasons
    # Every rejection is explained by the plain scorer's answer for that document.
    langs, scores = LangID().predict(texts)
    by_id = dict(zip(table.column("id").to_pylist(), zip(langs, scores)))
    for r in out.rejected.to_pylist():
        lang, score = by_id[r["id"]]
        assert r["reason"] == ("lang_not_allowed" if lang not in ("en", "de") else "lang_low_score")
        assert r["stage"] == "langid"


def test_stage_refuses_to_overwrite_lang():
    table = doc_table(["Some English text that is long enough to be identified."])
    table = table.append_column("lang", pa.array(["xx"]))
    with pytest.raises(ValueError, match="column `lang` already exists"):
        LangIDStage(LangIDConfig()).process(table)


def test_config_validation_names_field():
    with pytest.raises(ValueError, match="min_score"):
        LangIDConfig(min_score=2.0)
    with pytest.raises(ValueError, match="allowed"):
        LangIDConfig(allowed=[])
