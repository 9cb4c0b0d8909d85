"""Heuristic filters: the `heuristics` stage vs datatrove's raw filter chain, same real text.

    python bench/bench_heuristics.py [--mb 4] [--repeats 3]

Both sides run the same filters with the same parameters (the shipped prose set: Gopher
repetition, Gopher quality with min_doc_words 50, FineWeb quality), in this one process, on the
same documents (`pipeline.commands.corpus.build_python_corpus` plus /usr/share/doc text where there is
some, read once into memory), English throughout:

- peer: datatrove's classes as a datatrove pipeline calls them, one `Document` per document and
  `filter(doc)` per filter until one drops it (each filter splits words itself);
- curate: `HeuristicsStage.process` on an Arrow table of the same documents (words split once per
  document and shared, later filters skipped for a dropped document), and again with `signals`.

Decisions are asserted identical. MB are UTF-8 megabytes of text; best of `--repeats`; the word
tokenizer's own time on the same text is printed to say where the remaining time goes.
"""

from __future__ import annotations

import argparse
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
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=4.0, help="corpus size in MB")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")

    import importlib

    import pyarrow as pa
    from datatrove.data import Document

    from pipeline.commands.corpus import build_python_corpus
    from scorers.heuristics import FILTER_CLASSES
    from stages.filters import FilterSpec, HeuristicsConfig, HeuristicsStage

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "corpus.jsonl"
        build_python_corpus(path, max_mb=a.mb)
        rows = [json.loads(line) for line in open(path)]
    texts = [r["text"] for r in rows]
    mb = sum(len(t.encode()) for t in texts) / 1e6
    table = pa.table({"id": [str(i) for i in range(len(texts))], "text": texts,
                      "source": [r["source"] for r in rows], "lang": ["en"] * len(texts)})
    print(f"corpus: {len(texts):,} documents, {mb:.1f} MB (Python's stdlib, pydoc topics, licence)")

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
        st = HeuristicsStage(HeuristicsConfig(filters=[FilterSpec(n, params=p) for n, p in CHAIN], signals=signals))
        st.setup()

        def run():
            out = st.process(table)
            got = dict.fromkeys(table.column("id").to_pylist())
            if out.rejected is not None:
                got.update(zip(out.rejected.column("id").to_pylist(), out.rejected.column("reason").to_pylist()))
            return [got[i] for i in table.column("id").to_pylist()]
        return run

    peer()  # warm: spaCy loads on first use
    t_peer, want = _best(peer, a.repeats)
    t_cur, got = _best(stage(False), a.repeats)
    t_sig, got_sig = _best(stage(True), a.repeats)
    assert got == want and got_sig == want, "decisions differ from datatrove's"
    from datatrove.utils.word_tokenizers import load_word_tokenizer

    tok = load_word_tokenizer("en")
    t_tok, _ = _best(lambda: [tok.word_tokenize(t) for t in texts], a.repeats)
    kept = sum(r is None for r in want)
    print(f"decisions identical: {len(want) - kept:,} dropped, {kept:,} kept")
    print(f"datatrove chain        {mb / t_peer:6.2f} MB/s per core  ({t_peer:.1f} s)")
    print(f"curate stage           {mb / t_cur:6.2f} MB/s per core  ({t_cur:.1f} s)  x{t_peer / t_cur:.2f}")
    print(f"curate stage + signals {mb / t_sig:6.2f} MB/s per core  ({t_sig:.1f} s)  x{t_peer / t_sig:.2f}")
    print(f"spaCy word split alone {mb / t_tok:6.2f} MB/s per core  ({t_tok:.1f} s: {100 * t_tok / t_cur:.0f}% of the stage)")


if __name__ == "__main__":
    main()
