"""A target domain with real question/answer pairs, built at run time from this machine's
documentation (nothing written by others is shipped in the repo).

`build_faq_corpus(out_dir)` writes three files:
- `target.jsonl`: Debian documentation: `debian-faq` (the Debian FAQ, one document per question:
  the heading and the text under it) and `debian-readme` (README.Debian and NEWS.Debian files);
- `general.jsonl`: `kernel-doc` (linux-doc-*), `python-doc` (python3.*-doc reST sources),
  `license` (/usr/share/common-licenses), `changelog` (/usr/share/doc/*/changelog*) and `pydoc`
  (`pydoc_data.topics`), interleaved as `curate corpus system` does;
- `qa.jsonl`: the FAQ as `{"id", "question", "answer"}` pairs: each numbered heading is a
  question, the text under it (up to the next heading) its answer.

A package that is missing is named with the command that installs it, and the corpus is built
from what exists; without the FAQ there are no QA pairs, which is an error.
"""

from __future__ import annotations

import glob
import json
import os
import re
import textwrap
from pathlib import Path
from typing import Iterator

from curate.pipeline.commands.corpus import _files, _pydoc, _read, _write
from curate.pipeline.errors import CurateError

# The FAQ's plain-text rendering: debian-faq installs it under /usr/share/doc/debian/FAQ (its
# own /usr/share/doc/debian-faq holds only the changelog and copyright).
FAQ_GLOBS = ("/usr/share/doc/debian/FAQ/debian-faq.en.txt*", "/usr/share/doc/debian-faq/debian-faq.en.txt*")
# The number and the question are separated by a no-break space in the rendering.
HEADING = re.compile(r"^(\d+(?:\.\d+)+)\.[ \u00a0](\S.*)$")
CHAPTER = re.compile(r"^(Chapter|Appendix)[ \u00a0]\w+\.")


def find_faq() -> str | None:
    for pattern in FAQ_GLOBS:
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    return None


def _paragraphs(lines: list[str]) -> str:
    """The FAQ's indented, wrapped text as paragraphs: one line each, blank lines between."""
    body = textwrap.dedent("\n".join(lines)).strip("\n")
    paras = [" ".join(p.split()) for p in re.split(r"\n\s*\n", body)]
    return "\n\n".join(p for p in paras if p)


def parse_faq(text: str) -> list[dict]:
    """`{"id", "number", "question", "answer"}` per numbered heading of the FAQ's text rendering.
    Headings start in column 0 (the table of contents is indented) and wrap until a blank line."""
    lines = text.splitlines()
    items: list[dict] = []
    i = 0
    while i < len(lines):
        m = HEADING.match(lines[i])
        if not m:
            i += 1
            continue
        number, head = m.group(1), [m.group(2)]
        i += 1
        while i < len(lines) and lines[i].strip() and not lines[i].startswith(" "):
            head.append(lines[i].strip())
            i += 1
        body: list[str] = []
        while i < len(lines) and not HEADING.match(lines[i]) and not CHAPTER.match(lines[i]):
            body.append(lines[i])
            i += 1
        answer = _paragraphs(body)
        if answer:
            items.append({"id": f"debian-faq-{number}", "number": number, "question": " ".join(" ".join(head).split()),
                          "answer": answer})
    return items


def _faq_docs(items: list[dict], path: str) -> Iterator[dict]:
    for it in items:
        yield {"text": f"{it['number']}. {it['question']}\n\n{it['answer']}\n", "source": "debian-faq",
               "url": f"file://{path}#{it['number']}", "date": None}


def general_sources(notes: list[str]) -> dict[str, Iterator[dict]]:
    kernel = sorted(p for p in glob.glob("/usr/share/doc/linux-doc-*/Documentation/**/*", recursive=True)
                    if re.search(r"\.(rst|txt)(\.gz)?$", p))
    python = sorted(glob.glob("/usr/share/doc/python3*/html/_sources/**/*.rst.txt", recursive=True))
    licences = sorted(p for p in glob.glob("/usr/share/common-licenses/*") if os.path.isfile(p))
    changelogs = sorted(glob.glob("/usr/share/doc/*/changelog*"))
    for name, paths, package in (("kernel-doc", kernel, "linux-doc"), ("python-doc", python, "python3-doc"),
                                 ("license", licences, "base-files"), ("changelog", changelogs, "any package")):
        if not paths:
            notes.append(f"{name}: nothing found (apt-get install {package}); built without it")
    return {"kernel-doc": _files("kernel-doc", kernel, dated=False),
            "python-doc": _files("python-doc", python, dated=False),
            "license": _files("license", licences, dated=False),
            "changelog": _files("changelog", changelogs, dated=False),
            "pydoc": _pydoc()}


def build_faq_corpus(out_dir: str | Path, general_mb: float = 8.0, target_mb: float = 2.0) -> dict:
    """Write target.jsonl, general.jsonl and qa.jsonl into `out_dir`; return documents per source
    and file, the QA pair count and notes on what was missing."""
    out = Path(out_dir)
    faq = find_faq()
    if faq is None:
        raise CurateError("the Debian FAQ is not on this machine (looked for "
                          f"{', '.join(FAQ_GLOBS)}): apt-get install debian-faq, or give your own QA file")
    text = _read(faq)
    items = parse_faq(text or "")
    if not items:
        raise CurateError(f"{faq}: no numbered questions found (is it the FAQ's text rendering?)")
    notes: list[str] = []
    readmes = sorted(glob.glob("/usr/share/doc/*/README.Debian*") + glob.glob("/usr/share/doc/*/NEWS.Debian*"))
    if not readmes:
        notes.append("debian-readme: no README.Debian / NEWS.Debian files; the target is the FAQ alone")
    target = _write(out / "target.jsonl", {"debian-faq": _faq_docs(items, faq),
                                           "debian-readme": _files("debian-readme", readmes, dated=False)}, target_mb)
    general = _write(out / "general.jsonl", general_sources(notes), general_mb)
    tmp = out / ".tmp-qa.jsonl"
    with open(tmp, "w", encoding="utf-8") as f:
        for it in items:
            f.write(json.dumps({"id": it["id"], "question": it["question"], "answer": it["answer"]},
                               ensure_ascii=False) + "\n")
    os.replace(tmp, out / "qa.jsonl")
    return {"target": target, "general": general, "qa_pairs": len(items), "faq": faq, "notes": notes}
