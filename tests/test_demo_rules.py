"""The demo's reference rule set keeps Chinese and Japanese manuals: with no spaces between
words the word split yields sentence-long "words" and leaves markup tokens the majority, which
Gopher's word-length and alpha-word rules read as a broken document. The demo's thresholds are
quantiles of each group (domain x language), so the group's own numbers decide (configs/demo.yaml)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from curate.records.typed import build
from curate.scorers.heuristics import signals
from curate.stages.filter.heuristics import HeuristicsConfig, HeuristicsStage
from curate.stages.filter.quantiles import resolve

REPO = Path(__file__).resolve().parents[1]

# A reStructuredText page as translated manuals are written: headings underlined, a literal
# block, sentences without spaces between words.
ZH = """.. include:: ../disclaimer.rst

:Original: Documentation/core-api/lists.rst

========================================
列表的用法：创建、添加、插入与删除元素
========================================

列表是一种可以按顺序保存任意对象的容器，它的长度可以在程序运行时随时改变，因此非常适合保存数量事先未知的数据。
向列表末尾添加元素时应当调用追加方法，而在指定位置插入元素时则应当调用插入方法，两者都会直接修改原来的列表。

1) 创建一个新的列表
--------------------------------

使用方括号可以直接创建一个列表，也可以把任何可以迭代的对象传给列表的构造函数，从而得到一个内容相同的新列表。

2) 从列表中删除元素
--------------------------------

删除元素时可以按值删除，也可以按位置删除并返回被删除的元素；如果列表中没有要删除的值，程序会抛出异常，调用者应当事先检查。
"""
JA = ZH.replace("列表", "リスト").replace("的", "の").replace("使用", "使う")


def _demo_config(resolved: dict | None = None) -> HeuristicsConfig:
    stages = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())["stages"]
    cfg = {k: v for k, v in next(s for s in stages if s["kind"] == "heuristics").items() if k != "kind"}
    return build(HeuristicsConfig, {**cfg, "resolved": resolved}, "stages[2]")


def _decide(stage: HeuristicsStage, text: str, lang: str) -> str | None:
    table = pa.table({"id": ["d"], "text": [text], "source": ["docs"], "lang": [lang], "domain": ["tech-docs"]})
    rejected = stage.process(table).rejected
    return rejected.column("reason")[0].as_py() if rejected.num_rows else None


@pytest.mark.parametrize("text,lang", [(ZH, "zh"), (JA, "ja")])
def test_cjk_manual_kept_by_its_groups_thresholds(text, lang):
    plain = HeuristicsStage(_demo_config())
    plain.setup()
    # Outside a run each quantile uses its fallback, Gopher-like absolute values: the page is
    # dropped by a Gopher quality rule, as it was under one rule for every language.
    assert (_decide(plain, text, lang) or "").startswith("gopher_quality:")
    # Its group's thresholds, from the signals of the group's documents (the manual's sections).
    cfg = _demo_config()
    sections = [text + f"\n\n{k}" for k in range(60)]
    values: dict[str, list[float]] = {}
    for doc in sections:
        for name, v in signals(plain._impl.features(doc, lang)).items():
            values.setdefault(name, []).append(float(v))
    table, _ = resolve({f"tech-docs|{lang}": values}, [(q.signal, q.level) for q in cfg.quantiles()],
                       cfg.min_group_docs)
    fitted = HeuristicsStage(_demo_config({"groups": table}))
    fitted.setup()
    assert _decide(fitted, sections[30], lang) is None  # a manual typical of its group
    # A document of symbols in the same group still goes.
    assert _decide(fitted, "\n".join(["=== --- :: ** || ## ~~ ^^ .. ::"] * 30), lang) is not None
