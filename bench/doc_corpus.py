"""A random sample of this machine's Debian documentation as a curate JSONL corpus, twice: with
real source names and URLs, and with every source replaced by an opaque name and no URL.

    apt-get install -y python3.11-doc linux-doc-6.1 debian-handbook manpages-de debian-faq
    python bench/doc_corpus.py --max-mb 16 --out data/docs.jsonl      # also data/docs.opaque.jsonl
    curate run configs/demo.yaml --input data/docs.jsonl --out runs/docs --executor local

The files (kernel documentation as HTML, reStructuredText, text and YAML; Python's documentation
as HTML and reStructuredText; changelogs, copyright files and licences; man pages' troff sources
in every installed language; the Debian handbook and FAQ as HTML) are shuffled with a fixed seed
and read until the size cap, each cut at blank lines as `curate corpus` does. The same machine
and seed give the same corpus. bench/README.md records what the demo config keeps of it.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import random
from pathlib import Path

from curate.pipeline.commands.corpus import _chunks, _read

LINUX = "/usr/share/doc/linux-doc-6.1"
PYDOC = "/usr/share/doc/python3.11-doc/html"


def _files() -> list[tuple[str, str]]:
    """(source, path) of every candidate file, sorted."""
    found: list[tuple[str, str]] = []

    def add(source: str, pattern: str) -> None:
        found.extend((source, p) for p in sorted(glob.glob(pattern, recursive=True)) if os.path.isfile(p))

    add("linux-doc/html", f"{LINUX}/html/**/*.html")
    add("linux-doc/rst", f"{LINUX}/Documentation/**/*.rst*")
    add("linux-doc/txt", f"{LINUX}/Documentation/**/*.txt*")
    add("linux-doc/yaml", f"{LINUX}/Documentation/**/*.yaml*")
    add("python-doc/html", f"{PYDOC}/**/*.html")
    add("python-doc/rst", f"{PYDOC}/_sources/**/*.rst.txt")
    add("debian/changelog", "/usr/share/doc/*/changelog*")
    add("debian/copyright", "/usr/share/doc/*/copyright")
    add("license", "/usr/share/common-licenses/*")
    add("debian-handbook/html", "/usr/share/doc/debian-handbook/html/**/*.html")
    add("debian-faq/html", "/usr/share/doc/debian/FAQ/*.html")
    for d in sorted(glob.glob("/usr/share/man/*/")):
        lang = Path(d).name
        if lang.startswith("man"):  # /usr/share/man/man1/: English
            add("man/en", f"{d}*.gz")
        else:
            add(f"man/{lang}", f"{d}**/*.gz")
    return found


def build(out: Path, max_mb: float, seed: int = 0) -> dict[str, int]:
    files = _files()
    random.Random(seed).shuffle(files)
    budget, written, counts = int(max_mb * 1e6), 0, {}
    opaque = out.with_suffix(".opaque.jsonl")
    names: dict[str, str] = {}
    with open(out, "w", encoding="utf-8") as f, open(opaque, "w", encoding="utf-8") as g:
        for source, path in files:
            text = _read(path)
            if not text or not text.strip():
                continue
            for k, chunk in enumerate(_chunks(text)):
                rec = {"text": chunk, "source": source, "url": f"file://{path}" + (f"#{k}" if k else "")}
                line = json.dumps(rec, ensure_ascii=False) + "\n"
                if written + len(line.encode()) > budget:
                    return counts
                f.write(line)
                name = names.setdefault(source, "s" + hashlib.sha1(source.encode()).hexdigest()[:8])
                g.write(json.dumps({"text": chunk, "source": name}, ensure_ascii=False) + "\n")
                written += len(line.encode())
                counts[source] = counts.get(source, 0) + 1
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("data/docs.jsonl"))
    ap.add_argument("--max-mb", type=float, default=16.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for source, n in sorted(build(args.out, args.max_mb, args.seed).items()):
        print(f"{source:>24} {n:>6}")


if __name__ == "__main__":
    main()
