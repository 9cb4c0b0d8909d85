"""No leak by construction: every training document is checked against every held-out set.

The held-out sets are fixed first and never change with the arm: the held-out QA pairs (by a
salted hash of the pair's id) and the held-out target and general documents (by a hash of the
document id). Two checks, 13-grams of normalised words as the `decontaminate` stage counts them
(`stages.heldout.wordgrams.word_ngrams`, as the `decontaminate` stage counts them), so both directions are the same set intersection:

- held-out QA answers and questions vs every document: the `decontaminate` stage of the curation
  run drops those documents (data.run_config);
- held-out documents vs every training document (QA pairs, target, general): a training document
  sharing an n-gram with a held-out document is left out of training (this module); an n-gram in
  more than 10 training documents is boilerplate and ignored, as GPT-3 did.

The training side is dropped, never the held-out side: the evaluation sets stay the same for every
arm and every corpus, and a leak costs a few training documents. On the Debian FAQ corpus that is
the case an audit found: FAQ sections 8.1.4 and 15.1 were held-out target documents while their
own question/answer pairs were in the QA training group.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def shared_ngrams(train: Sequence[str], held: Sequence[str], n: int, max_doc_frequency: int | None = 10) -> list[int]:
    """Indexes of `train` texts that share an n-gram of words with any of `held`. An n-gram in
    more than `max_doc_frequency` training texts is boilerplate (licence lines, packaging
    notices) and ignored, as GPT-3 ignored 13-grams in more than 10 training documents (Brown et
    al. 2020, appendix C; the `decontaminate` stage's `max_doc_frequency`)."""
    from curate.stages.heldout.wordgrams import word_ngrams

    if not train or not held:
        return []
    h_held, _ = word_ngrams(list(held), n)
    h_train, owner = word_ngrams(list(train), n)
    hit = np.isin(h_train, np.unique(h_held))
    pairs = np.unique(np.stack([h_train[hit], owner[hit].astype(np.uint64)]), axis=1)
    if max_doc_frequency is not None and pairs.size:
        grams, docs = np.unique(pairs[0], return_counts=True)
        pairs = pairs[:, np.isin(pairs[0], grams[docs <= max_doc_frequency])]
    return sorted({int(i) for i in pairs[1]})


def training_leaks(run, held_where: Sequence[str], train_where: str, n: int) -> dict:
    """Training documents (`train_where`) sharing an n-gram with a held-out document (`held_where`:
    pack's `name=SQL` specs); returns their ids and counts per source."""
    from curate.pipeline.catalog.db import query

    held = [r["text"] for spec in held_where
            for r in query(run, f"SELECT text FROM docs WHERE {spec.split('=', 1)[1]}").to_pylist()]
    rows = query(run, f"SELECT id, source, text FROM docs WHERE ({train_where}) "
                      f"AND NOT ({' OR '.join(s.split('=', 1)[1] for s in held_where)})").to_pylist()
    bad = [rows[i] for i in shared_ngrams([r["text"] for r in rows], held, n)]
    per: dict[str, int] = {}
    for r in bad:
        per[r["source"]] = per.get(r["source"], 0) + 1
    return {"ids": sorted(r["id"] for r in bad), "by_source": per, "held_docs": len(held), "checked": len(rows)}
