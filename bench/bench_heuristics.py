"""Heuristic filters: the `heuristics` stage vs datatrove's raw filter chain, same real text.

    python bench/bench_heuristics.py [--mb 4] [--repeats 3] [--corpus system|python] [--profile]

Both sides run the same filters with the same parameters (the shipped prose set: Gopher
repetition, Gopher quality with min_doc_words 50, FineWeb quality), in this one process, on the
same documents, read once into memory, English throughout. The corpus (`--corpus system`, the
default) is `curate corpus`'s: Python's stdlib and pydoc topics plus the machine's changelogs,
copyright files, licences and man pages where it has them; `--corpus python` keeps to the text
that comes with Python.

- peer: datatrove's classes as a datatrove pipeline calls them, one `Document` per document and
  `filter(doc)` per filter until one drops it (datatrove caches a text's word split, so its
  filters share it too);
- curate: `HeuristicsStage.process` on an Arrow table of the same documents, a fresh stage for
  each run (its memo of word splits starts empty), in the default mode and with `signals: true`.

The domain stage's content detectors (scorers/structure.py) are timed on the same documents
too: their share of the heuristics stage's time (the goal: at most 10%).

Decisions are asserted identical, and so are the words of every document (spaCy's split vs
the stage's). Times are CPU seconds of this process (`time.process_time`): the machine is
shared, and wall time measures the queue. MB are UTF-8 megabytes of text; best of `--repeats`, the
sides taking turns, each run starting after a full garbage collection (so that neither side pays
for a collection of the other's objects: loading spaCy leaves ~200,000 objects to look over).
`--profile` prints the top entries of a cProfile of one stage run (where the time goes).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import tempfile
import time
from pathlib import Path

CHAIN = [("gopher_repetition", {}), ("gopher_quality", {"min_doc_words": 50, "max_doc_words": 100000}),
         ("fineweb_quality", {})]


def _best(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        gc.collect()
        t0 = time.process_time()
        out = fn()
        best = min(best, time.process_time() - t0)
    return best, out


def _corpus(kind: str, mb: float) -> list[dict]:
    from curate.pipeline.commands.corpus import build_python_corpus, build_system_corpus

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "corpus.jsonl"
        (build_system_corpus if kind == "system" else build_python_corpus)(path, max_mb=mb)
        return [json.loads(line) for line in open(path)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=4.0, help="corpus size in MB")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--corpus", choices=["system", "python"], default="system")
    ap.add_argument("--profile", action="store_true", help="print a cProfile of one stage run")
    a = ap.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")

    import importlib
    from collections import Counter

    import pyarrow as pa
    from datatrove.data import Document
    from datatrove.utils.word_tokenizers import load_word_tokenizer

    from curate.scorers.heuristics import FILTER_CLASSES
    from curate.scorers.wordsplit import fast_word_splitter
    from curate.stages.filter.heuristics import FilterSpec, HeuristicsConfig, HeuristicsStage

    rows = _corpus(a.corpus, a.mb)
    texts = [r["text"] for r in rows]
    mb = sum(len(t.encode()) for t in texts) / 1e6
    table = pa.table({"id": [str(i) for i in range(len(texts))], "text": texts,
                      "source": [r["source"] for r in rows], "lang": ["en"] * len(texts)})
    per_source = ", ".join(f"{s} {c}" for s, c in Counter(r["source"] for r in rows).most_common())
    print(f"corpus ({a.corpus}): {len(texts):,} documents, {mb:.1f} MB ({per_source})")

    peers = [(n, getattr(importlib.import_module(FILTER_CLASSES[n][0]), FILTER_CLASSES[n][1])(**p)) for n, p in CHAIN]

    def peer():
        out = []
        for t in texts:
            reason = None
            for name, f in peers:
                res = f.filter(Document(text=t, id=""))
                if res is not True:
                    reason = f"{name}:{res[1]}"
                    break
            out.append(reason)
        return out

    def stage(signals: bool):
        def run():
            st = HeuristicsStage(HeuristicsConfig(filters=[FilterSpec(n, params=p) for n, p in CHAIN], signals=signals))
            st.setup()  # not timed: loads spaCy, as the peer's warm-up run does
            gc.collect()
            t0 = time.process_time()
            out = st.process(table)
            spent = time.process_time() - t0
            got = dict.fromkeys(table.column("id").to_pylist())
            if out.rejected is not None:
                got.update(zip(out.rejected.column("id").to_pylist(), out.rejected.column("reason").to_pylist()))
            return spent, [got[i] for i in table.column("id").to_pylist()]
        return run

    peer()  # warm: spaCy loads on first use
    # Interleaved, so that the machine's other work weighs on each side alike; best of each.
    t_peer = t_cur = t_sig = float("inf")
    for _ in range(a.repeats):
        gc.collect()
        t0 = time.process_time()
        want = peer()
        t_peer = min(t_peer, time.process_time() - t0)
        spent, got = stage(False)()
        t_cur = min(t_cur, spent)
        spent, got_sig = stage(True)()
        t_sig = min(t_sig, spent)
    assert got == want and got_sig == want, "decisions differ from datatrove's"

    # The domain stage's content detectors on the same documents (they pick the rule set).
    from curate.scorers.domain import RuleTagger, default_taxonomy

    tagger = RuleTagger(default_taxonomy())
    t_det, _ = _best(lambda: [tagger.tag_one(t, None, None) for t in texts], a.repeats)

    tok = load_word_tokenizer("en")
    t_tok, spacy_words = _best(lambda: [tok.word_tokenize(t) for t in texts], a.repeats)
    t_fast, fast_words = _best(lambda: [w for f in [fast_word_splitter(tok)] for w in map(f.word_tokenize, texts)],
                               a.repeats)
    assert fast_words == spacy_words, "the stage's word split differs from spaCy's"
    kept = sum(r is None for r in want)
    top = Counter(r.split(":")[0] for r in want if r).most_common()
    print(f"decisions identical: {len(want) - kept:,} dropped ({', '.join(f'{n} {c}' for n, c in top)}), "
          f"{kept:,} kept; words identical on every document")
    print("MB/s per core (CPU seconds of this process)")
    print(f"datatrove chain          {mb / t_peer:6.2f}  ({t_peer:.1f} s)")
    print(f"curate stage             {mb / t_cur:6.2f}  ({t_cur:.1f} s)  x{t_peer / t_cur:.2f}")
    print(f"curate stage + signals   {mb / t_sig:6.2f}  ({t_sig:.1f} s)  x{t_peer / t_sig:.2f}")
    print(f"domain detectors         {mb / t_det:6.2f}  ({t_det:.2f} s: {100 * t_det / t_sig:.0f}% of the stage "
          f"with signals)")
    print(f"spaCy word split alone   {mb / t_tok:6.2f}  ({t_tok:.1f} s: {100 * t_tok / t_peer:.0f}% of the chain)")
    print(f"stage's word split alone {mb / t_fast:6.2f}  ({t_fast:.1f} s: {100 * t_fast / t_cur:.0f}% of the stage)")

    if a.profile:
        import cProfile
        import pstats

        st = HeuristicsStage(HeuristicsConfig(filters=[FilterSpec(n, params=p) for n, p in CHAIN]))
        st.setup()
        prof = cProfile.Profile()
        prof.runcall(st.process, table)
        pstats.Stats(prof).sort_stats("tottime").print_stats(12)


if __name__ == "__main__":
    main()
