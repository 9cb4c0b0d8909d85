"""Stage `pii`: replace e-mail addresses, IP addresses and other personal data with placeholders.

Built on datatrove's `PIIFormatter`: its e-mail and IP regexes, its public-IP validator and its
replacement values (example.org addresses, unassigned IPs) are used as they are; the stage adds
a count per kind, credit-card numbers (Luhn-checked), optional phone numbers, and the user's own
patterns (`patterns: {name: regex}`, replaced by `<NAME>`).

This stage changes `text`, the one column no other stage after ingest writes. It therefore
writes *full* shards (every document column, the redacted `text` included, no `_base_row`):
a new text base. Every later stage's delta shards point at the pii shards of the same name
(`curate.base` = `../<pii stage>/part-....parquet`), so the catalog, `read_docs` and the next
stage's fingerprints follow the redacted text, while the `ingest` view keeps the original.
`n_chars` is recomputed for the new text; `pii_replaced` (int32) counts the replacements in
each document. It declares that it writes full shards itself (`step = shards`), so the runner
runs each shard as an independent task and keeps its marker like any other stage's.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from curate.records.marker import Marker
from curate.stages import docshard, ledger, shardio
from curate.stages.base import DROPPED_ROWS, FULL_SHARDS, SHARDS, Declares, Prepared, add_columns, empty_rejected

COUNTS = "pii_replaced"
# datatrove's defaults (PIIFormatter), repeated so the config shows what they are
EMAILS = ["email@example.com", "firstname.lastname@example.org"]
IPS = ["22.214.171.124", "126.96.36.199", "188.8.131.52", "184.108.40.206", "220.127.116.11", "18.104.22.168"]
CARD = r"\b(?:\d[ -]?){12,18}\d\b"
PHONE = r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])\d{3,4}[ .-]\d{3,4}\b"


@dataclass
class PIIConfig:
    """Config of the `pii` stage."""

    emails: bool = True
    """Replace e-mail addresses (datatrove's regex)."""
    ips: bool = True
    """Replace IPv4 addresses (datatrove's regex)."""
    only_public_ips: bool = True
    """Leave private, loopback and reserved addresses (127.0.0.1, 10.x, 192.168.x) as they are."""
    email_replacement: list[str] = field(default_factory=lambda: list(EMAILS))
    """Replacement addresses, used in turn (datatrove's)."""
    ip_replacement: list[str] = field(default_factory=lambda: list(IPS))
    """Replacement IPs, used in turn (datatrove's: addresses that answered no ping)."""
    credit_cards: bool = True
    """Replace 13-19 digit numbers (spaces or dashes allowed) that pass the Luhn check by `<CREDIT_CARD>`."""
    phones: bool = False
    """Replace phone-number-shaped digit groups by `<PHONE>` (off by default: dates, versions and
    code constants look alike)."""
    patterns: dict[str, str] = field(default_factory=dict)
    """Extra kinds: name -> Python regex; a match is replaced by `<NAME>` and counted under name."""

    def __post_init__(self):
        if not self.email_replacement or not self.ip_replacement:
            raise ValueError("email_replacement: give at least one replacement (and one ip_replacement)")
        for name, rx in self.patterns.items():
            if not name.replace("_", "").isalnum():
                raise ValueError(f"patterns: kind name {name!r} must be letters, digits and '_'")
            try:
                re.compile(rx)
            except re.error as e:
                raise ValueError(f"patterns: {name}: {rx!r} is not a valid regex ({e})") from None

    def columns(self) -> list[str]:
        """Columns the stage adds (the run config refuses two stages adding the same one)."""
        return [COUNTS]


def _luhn(s: str) -> bool:
    digits = [int(c) for c in s if c.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = sum(d if i % 2 == 0 else (d * 2 - 9 if d > 4 else d * 2) for i, d in enumerate(reversed(digits)))
    return total % 10 == 0


class Redactor:
    """The replacers of one config; `redact(text)` -> (new text, counts per kind)."""

    def __init__(self, cfg: PIIConfig):
        from datatrove.pipeline.formatters.pii import PIIFormatter

        base = PIIFormatter(only_remove_public_ips=cfg.only_public_ips)
        self.kinds: list[tuple[str, re.Pattern, object, list[str]]] = []
        if cfg.emails:
            self.kinds.append(("email", base.emails_replacer.regex, None, cfg.email_replacement))
        if cfg.ips:
            self.kinds.append(("ip", base.ip_replacer.regex, base.ip_replacer.validator, cfg.ip_replacement))
        if cfg.credit_cards:
            self.kinds.append(("credit_card", re.compile(CARD), _luhn, ["<CREDIT_CARD>"]))
        if cfg.phones:
            self.kinds.append(("phone", re.compile(PHONE), None, ["<PHONE>"]))
        for name, rx in cfg.patterns.items():
            self.kinds.append((name, re.compile(rx), None, [f"<{name.upper()}>"]))
        self._turn = {k[0]: 0 for k in self.kinds}

    def redact(self, text: str) -> tuple[str, dict[str, int]]:
        counts: dict[str, int] = {}
        for kind, rx, valid, replacements in self.kinds:
            def sub(m: re.Match) -> str:
                if valid is not None and not valid(m.group(0)):
                    return m.group(0)
                counts[kind] = counts.get(kind, 0) + 1
                i = self._turn[kind]  # in turn, like datatrove's replacer
                self._turn[kind] = (i + 1) % len(replacements)
                return replacements[i]

            text = rx.sub(sub, text)
        return text, counts


@dataclass(frozen=True)
class PIITask:
    path: str
    stage_dir: str
    rejected_dir: str
    stage: str
    config: PIIConfig
    fingerprint: str
    config_hash: str


def redact_part(task: PIITask) -> Marker:
    """Write the shard's documents, redacted, as a full shard (a new text base)."""
    t0 = time.time()
    path, stage_dir = Path(task.path), Path(task.stage_dir)
    docs = docshard.read_docs(path)
    redactor = Redactor(task.config)
    texts, per_doc, totals = [], [], {}
    for text in docs.column(docshard.TEXT).to_pylist():
        new, counts = redactor.redact(text)
        texts.append(new)
        per_doc.append(sum(counts.values()))
        for k, v in counts.items():
            totals[k] = totals.get(k, 0) + v
    i = docs.schema.get_field_index(docshard.TEXT)
    new_text = pa.array(texts, docs.schema.field(docshard.TEXT).type)
    docs = docs.set_column(i, docs.schema.field(i), new_text)
    if "n_chars" in docs.column_names:
        j = docs.schema.get_field_index("n_chars")
        docs = docs.set_column(j, docs.schema.field(j), pc.cast(pc.utf8_length(new_text), pa.int64()))
    docs = add_columns(docs, task.stage, {COUNTS: pa.array(per_doc, pa.int32())})
    bytes_out = shardio.write_parquet(stage_dir / f"{path.stem}.parquet", docs)
    shardio.write_parquet(Path(task.rejected_dir) / f"{path.stem}.parquet", empty_rejected())
    counts = {"in": docs.num_rows, "kept": docs.num_rows, "rejected": 0, "quarantined": 0,
              "rejected_by_reason": {}, "quarantined_by_reason": {}, COUNTS: totals,
              "pii_documents": sum(1 for n in per_doc if n)}
    marker = Marker.new(task.fingerprint, task.config_hash, [f"{path.stem}.parquet"], counts, stage=task.stage,
                        bytes_in=path.stat().st_size, bytes_out=bytes_out, seconds=round(time.time() - t0, 3),
                        input=task.path)
    return ledger.write_marker(stage_dir, path.stem, marker, also=[Path(task.rejected_dir) / f"{path.stem}.parquet"])


class PIIStage:
    """Redacts personal data; writes full shards, which later stages use as their text base."""

    # Full shards (the text changes) and an empty rejected file per shard, each shard written by
    # the stage itself as a plain task; `prepare` refuses a bad pattern before any task starts.
    declares = Declares(step=SHARDS, writes=frozenset({FULL_SHARDS, DROPPED_ROWS}), prepares=True)

    def __init__(self, config: PIIConfig, name: str = "pii"):
        self.config = config
        self.name = name

    def prepare(self, run_dir: Path, inputs: list, say) -> Prepared:
        Redactor(self.config)
        return Prepared(self.config)

    def write_shard(self, job) -> Marker:
        """Redact the runner's shard job (input, stage_dir, rejected_dir, fingerprint, config_hash)."""
        return redact_part(PIITask(job.input, job.stage_dir, job.rejected_dir, self.name, self.config,
                                   job.fingerprint, job.config_hash))
