"""Decontamination benchmark: MB/s per core of the `decontaminate` stage beside its peers, on the
same real text and the same eval items, in the same run.

Peers:
- datatrove's `NGramsDecontFilter` (its own normalisation, spaCy word tokenizer and hash). Its
  indexer needs lighteval and the Hub to fetch task data, so its index file is written here from
  the same eval items with datatrove's own `simplify_text` + tokenizer + hash function, exactly
  what `NGramsDecontIndexer.compute_hashes` does for label-only items.
- a plain Python n-gram set lookup (`re.findall` words, a set of 13-word tuples).

The second curate row is the stage as a run does it: every batch matched, then each eval n-gram's
documents counted (`max_doc_frequency`, 10) and every batch decided from its saved matches.

Eval items: passages quoted from a sample of the corpus documents (so matches exist) plus
reversed text (no match). Times are CPU seconds of this process (`time.process_time`), one core.

    python bench/bench_decontaminate.py              # ~16 MB of text
    python bench/bench_decontaminate.py --mb 64 --items 5000
"""

from __future__ import annotations

import argparse
import json
import random
import re
import tempfile
import time
import unicodedata
from pathlib import Path

import pyarrow as pa

N = 13


def corpus_texts(mb: float, workdir: Path) -> list[str]:
    from curate.pipeline.commands.corpus import build_system_corpus

    path = workdir / "system.jsonl"
    build_system_corpus(path, max_mb=mb)
    return [json.loads(line)["text"] for line in path.open()]


def eval_items(texts: list[str], n_items: int, quoted: bool, seed: int = 0) -> list[str]:
    """50-word passages of corpus documents: every other one as it is (`quoted`), the others
    reversed, so they match nothing; with `quoted` false, all reversed."""
    rng = random.Random(seed)
    long = [t for t in texts if len(t.split()) > 120]
    items = []
    for k in range(n_items):
        words = rng.choice(long).split()
        start = rng.randrange(0, len(words) - 60)
        passage = words[start:start + 50]
        items.append(" ".join(passage if quoted and k % 2 == 0 else passage[::-1]))
    return items


def timed(fn):
    t0 = time.process_time()
    out = fn()
    return out, time.process_time() - t0


def run_curate(texts: list[str], items: list[str], workdir: Path) -> tuple[int, float, float]:
    from curate.stages.heldout.decontaminate import DecontaminateConfig, DecontaminateStage, EvalSetSpec

    path = workdir / "eval.jsonl"
    path.write_text("".join(json.dumps({"question": t}) + "\n" for t in items))
    # nothing ignored, as the peers: this row times the matching alone
    stage = DecontaminateStage(DecontaminateConfig(sets=[EvalSetSpec("bench", str(path))], n=N, mode="flag",
                                                   max_doc_frequency=None))
    _, setup = timed(stage.setup)

    def go():
        flagged = 0
        for i in range(0, len(texts), 4096):
            batch = texts[i:i + 4096]
            out = stage.process(pa.table({"id": [str(j) for j in range(len(batch))], "text": batch}))
            flagged += sum(1 for s in out.kept.column("contaminated_sets").to_pylist() if s)
        return flagged

    flagged, secs = timed(go)
    return flagged, secs, setup


def run_curate_two_pass(texts: list[str], items: list[str], workdir: Path) -> tuple[int, float, float]:
    """What a run does (without the files): match every batch, count each eval n-gram's documents,
    ignore those in more than 10, then decide every batch from its matches (mode `drop`)."""
    from curate.stages.heldout.decontaminate import (DecontaminateConfig, DecontaminateStage, EvalSetSpec, Hits,
                                             decontaminate, frequent)

    path = workdir / "eval.jsonl"
    path.write_text("".join(json.dumps({"question": t}) + "\n" for t in items))
    cfg = DecontaminateConfig(sets=[EvalSetSpec("bench", str(path))], n=N)
    stage = DecontaminateStage(cfg)
    _, setup = timed(stage.setup)

    def go():
        batches = [pa.table({"id": [str(j) for j in range(i, min(i + 4096, len(texts)))], "text": texts[i:i + 4096]})
                   for i in range(0, len(texts), 4096)]
        hits = [Hits.find(stage.index, b.column("text")) for b in batches]
        ignored = frequent(cfg, [h.doc_frequency() for h in hits], len(texts))
        labels = stage.index.describe(ignored)
        return sum(decontaminate(stage.index, cfg, "d", b, h, labels).rejected.num_rows for b, h in zip(batches, hits))

    flagged, secs = timed(go)
    return flagged, secs, setup


def run_python_set(texts: list[str], items: list[str]) -> tuple[int, float, float]:
    def words(t):
        return re.findall(r"[^\W_]+", unicodedata.normalize("NFKC", t).lower())

    def build():
        grams = set()
        for t in items:
            w = words(t)
            grams.update(tuple(w[i:i + N]) for i in range(len(w) - N + 1))
        return grams

    grams, setup = timed(build)

    def go():
        flagged = 0
        for t in texts:
            w = words(t)
            flagged += any(tuple(w[i:i + N]) in grams for i in range(len(w) - N + 1))
        return flagged

    flagged, secs = timed(go)
    return flagged, secs, setup


def run_datatrove(texts: list[str], items: list[str], workdir: Path) -> tuple[int, float, float]:
    import numpy as np
    from datatrove.data import Document
    from datatrove.pipeline.decont.n_grams import NGramsDecontConfig, NGramsDecontFilter
    from datatrove.utils.text import ngrams, simplify_text

    cfg = NGramsDecontConfig(n_grams=N)
    index_dir = workdir / "dt_index"
    index_dir.mkdir(exist_ok=True)
    filt = NGramsDecontFilter(str(index_dir), config=cfg)

    def build():
        hashes = set()
        for t in items:  # NGramsDecontIndexer.compute_hashes for a label without a query
            toks = filt.tokenizer.word_tokenize(simplify_text(t, cfg.norm_config))
            hashes.update(map(filt.hash_func, map(" ".join, ngrams(toks, N))))
        np.array(sorted(hashes), dtype=cfg.hash_config.np_descr).tofile(index_dir / "bench.index.hashes")
        filt.load_index_hashes()

    _, setup = timed(build)

    def go():
        return sum(1 for i, t in enumerate(texts) if filt.filter(Document(text=t, id=str(i))) is not True)

    flagged, secs = timed(go)
    return flagged, secs, setup


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=16.0, help="corpus size in MB")
    ap.add_argument("--items", type=int, default=2000, help="eval items (half quoted from the corpus)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        texts = corpus_texts(args.mb, workdir)
        size = sum(len(t.encode()) for t in texts) / 1e6
        print(f"{len(texts):,} documents, {size:.1f} MB; {args.items:,} eval items, {N}-grams; one core each")
        for quoted in (True, False):
            items = eval_items(texts, args.items, quoted)
            print(f"\neval items: {'half quoted from the corpus' if quoted else 'none in the corpus'}")
            print(f"{'':<34}{'docs matched':>13}{'index s':>9}{'scan s':>9}{'MB/s':>9}")
            rows = [("curate decontaminate", run_curate(texts, items, workdir)),
                    ("curate, both passes, frequency", run_curate_two_pass(texts, items, workdir)),
                    ("plain Python n-gram set", run_python_set(texts, items)),
                    ("datatrove NGramsDecontFilter", run_datatrove(texts, items, workdir))]
            for name, (flagged, secs, setup) in rows:
                print(f"{name:<34}{flagged:>13,}{setup:>9.2f}{secs:>9.2f}{size / secs:>9.1f}")
            ours = rows[0][1][1]
            for name, (_, secs, _) in rows[1:]:
                print(f"curate vs {name}: {secs / ours:.1f}x")


if __name__ == "__main__":
    main()
