"""Tokenizers (a Hugging Face tokenizer.json, a sentencepiece model loaded or trained here) and
the `tokenize` stage: exact `n_tokens` per document.

A folder holding `tokenizer.json` (Llama-3, Qwen2.5, SmolLM2, Mistral as they ship) is read
through the `tokenizers` library (stages/tokens/hf_tokenizer.py), with the ids transformers gives; a
`.model` through sentencepiece. Both answer the same calls (`encode`, `get_piece_size`, `bos_id`,
`eos_id`, `pad_id`), so the stage, packing and scoring take either.

A trained model's tokenization is lossless: byte fallback gives every byte an id, normalization is `identity` and
whitespace is never collapsed, so `decode(encode(text)) == text` for any UTF-8 text (tested).
`n_tokens` counts the text's tokens only; BOS/EOS are added when documents go into the token
files (`pipeline/commands/pack.py`): every document is followed by EOS, preceded by BOS when
`add_bos` is set, by default when the tokenizer itself adds BOS to a text (Llama-3 does).

The stage's work function, `encode_shard`, runs once per input shard (stages/tokens/stage.py
is the stage kind the runner serves): it assigns each document to its mixture group with DuckDB (the plan's first-match `CASE`),
encodes the texts, and writes `tokenize/<part>.parquet` (the document table + `n_tokens` +
`group`), the shard's token ids (`tokenize/_ids/<part>.bin`, documents back to back in table
order) and its marker, last. The runner skips a shard whose marker matches and whose files are intact.
"""

from __future__ import annotations

import functools
import itertools
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.records.marker import Marker
from curate.stages import docshard, ledger, shardio
from curate.stages.tokens.megatron import token_dtype
from curate.stages.shardio import AtomicFile

STAGE = "tokenize"
MODEL_TYPES = ("bpe", "unigram")


def _spm():
    try:
        import sentencepiece as spm
    except ImportError as e:  # pragma: no cover - sentencepiece is a core dependency
        raise ImportError("sentencepiece is needed to tokenize: pip install sentencepiece") from e
    return spm


@dataclass
class TokenizerConfig:
    """How the tokenizer is trained when no existing model is given."""

    vocab_size: int = 32000
    """Number of pieces, including the 4 specials and the 256 byte-fallback pieces."""
    model_type: str = "bpe"
    """Sentencepiece algorithm: "bpe" or "unigram"."""
    train_chars: int = 20_000_000
    """Characters of the run's documents sampled (evenly over shards) to train on."""
    input_sentence_size: int = 300_000
    """Cap on training pieces; a seeded sample of this many when there are more (keeps training fast)."""
    max_sentence_length: int = 4192
    """Longest training piece in bytes; sentencepiece skips longer ones, so documents are cut to fit."""
    character_coverage: float = 0.9995
    """Share of characters covered by pieces; the rest are encoded as bytes."""
    num_threads: int = 0
    """Training threads; 0 = all CPUs."""

    def __post_init__(self) -> None:
        if not 300 <= self.vocab_size <= 1 << 22:
            raise ValueError(f"vocab_size must be in [300, 4194304] (256 bytes + specials + pieces), got {self.vocab_size}")
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"model_type must be one of {MODEL_TYPES}, got {self.model_type!r}")
        if self.train_chars < 1000:
            raise ValueError(f"train_chars must be >= 1000, got {self.train_chars}")
        if self.input_sentence_size < 1000:
            raise ValueError(f"input_sentence_size must be >= 1000, got {self.input_sentence_size}")
        if not 64 <= self.max_sentence_length <= 1 << 20:
            raise ValueError(f"max_sentence_length must be in [64, 1048576] bytes, got {self.max_sentence_length}")
        if not 0.9 <= self.character_coverage <= 1.0:
            raise ValueError(f"character_coverage must be in [0.9, 1.0], got {self.character_coverage}")
        if self.num_threads < 0:
            raise ValueError(f"num_threads must be >= 0 (0 = all CPUs), got {self.num_threads}")


@dataclass(frozen=True)
class TokenizerInfo:
    """What the packer and the trainer need to know about a model."""

    path: str
    vocab_size: int
    bos_id: int
    eos_id: int
    pad_id: int  # the model's pad piece, else EOS (padding is masked by segment 0 anyway)
    digest: str
    add_bos: bool = False  # whether the tokenizer itself puts BOS before a text (Llama-3 does, Qwen does not)

    @property
    def dtype(self) -> np.dtype:
        return token_dtype(self.vocab_size)


SP_FILE = "tokenizer.model"
HF_FILE = "tokenizer.json"
# The files a Hugging Face folder's tokenizer may consist of: copied together, byte for byte,
# into the run (RUN/tokens/tokenizer/) and into every checkpoint, so AutoTokenizer loads any of them.
HF_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                      "vocab.json", "merges.txt", "tokenizer.model", "chat_template.jinja")


def resolve_model_path(path: str | os.PathLike) -> Path:
    """The tokenizer at `path`: a sentencepiece `.model`, a `tokenizer.json`, or a folder holding
    either (a Hugging Face model folder). A folder with both is read through tokenizer.json, as
    `transformers.AutoTokenizer` reads it (the fast tokenizer); returned as the folder then."""
    p = Path(path)
    if p.is_dir():
        if (p / HF_FILE).is_file():
            return p
        if not (p / SP_FILE).is_file():
            raise FileNotFoundError(f"{path} is a folder with neither {HF_FILE} (a Hugging Face tokenizer) nor "
                                    f"{SP_FILE} (a sentencepiece model)")
        return p / SP_FILE
    if not p.is_file():
        raise FileNotFoundError(f"tokenizer {path} does not exist (give a sentencepiece .model, a tokenizer.json, "
                                f"or a folder holding one)")
    return p.parent if p.name == HF_FILE else p


def is_hf(path: str | os.PathLike) -> bool:
    """Whether a resolved tokenizer path (`resolve_model_path`) is a Hugging Face tokenizer folder."""
    return Path(path).is_dir()


def load_tokenizer(path: str | os.PathLike):
    """A `SentencePieceProcessor`, or an `HFTokenizer` (the same method names) for a tokenizer.json."""
    p = resolve_model_path(path)
    # A folder's config.json may name BOS/EOS ids (stages/tokens/hf_tokenizer.py), so it is part of the key.
    files = [p / n for n in (*HF_TOKENIZER_FILES, "config.json") if (p / n).is_file()] if is_hf(p) else [p]
    return _load(str(p), tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files))


@functools.lru_cache(maxsize=4)
def _load(p: str, stamp: tuple):
    # Cached per process (keyed by each file's size and mtime, so a replaced file is reloaded): a
    # worker tokenizing many shards loads the model once.
    if is_hf(p):
        from curate.stages.tokens.hf_tokenizer import HFTokenizer

        return HFTokenizer(Path(p))
    sp = _spm().SentencePieceProcessor()
    try:
        sp.Load(str(p))
    except (OSError, RuntimeError) as e:
        raise ValueError(f"{p} is not a sentencepiece model: {e}") from e
    return sp


def tokenizer_digest(p: Path) -> str:
    """Digest of a resolved tokenizer: the .model's bytes, or every tokenizer file of a folder."""
    if not is_hf(p):
        return shardio.file_digest(p)
    return shardio.stable_hash({n: shardio.file_digest(p / n) for n in HF_TOKENIZER_FILES if (p / n).is_file()})


def tokenizer_info(path: str | os.PathLike) -> TokenizerInfo:
    p = resolve_model_path(path)
    tok = load_tokenizer(p)
    where = p / "tokenizer_config.json" if is_hf(p) else p
    if tok.eos_id() < 0:
        raise ValueError(f"{where} has no EOS token (eos_token); documents are separated by EOS, so one is required")
    pad = tok.pad_id() if tok.pad_id() >= 0 else tok.eos_id()
    add_bos = bool(getattr(tok, "add_bos", False))
    return TokenizerInfo(str(p), tok.get_piece_size(), tok.bos_id(), tok.eos_id(), pad, tokenizer_digest(p), add_bos)


def training_pieces(texts: Iterable[str], max_bytes: int) -> Iterator[str]:
    """Cut documents into training pieces of at most `max_bytes` UTF-8 bytes, at line ends if possible.

    Sentencepiece silently drops training sentences longer than `max_sentence_length`, which would
    drop most of a corpus of long documents; lines are gathered into pieces up to the limit instead.
    """
    max_chars = max(1, max_bytes // 4)  # UTF-8 uses at most 4 bytes per character
    for text in texts:
        buf: list[str] = []
        size = 0
        for line in text.splitlines(keepends=True):
            while len(line) > max_chars:
                if buf:
                    yield "".join(buf)
                    buf, size = [], 0
                yield line[:max_chars]
                line = line[max_chars:]
            if size + len(line) > max_chars and buf:
                yield "".join(buf)
                buf, size = [], 0
            buf.append(line)
            size += len(line)
        if buf:
            yield "".join(buf)


def sample_texts(parts: list[Path], max_chars: int) -> Iterator[str]:
    """Texts from every shard, an equal character budget each, in table order (deterministic)."""
    if not parts:
        return
    share = max(1, max_chars // len(parts))
    for part in parts:
        used = 0
        for batch in docshard.iter_docs(part, 1024, columns=["text"]):
            for text in batch.column(0).to_pylist():
                if text:
                    yield text
                    used += len(text)
                if used >= share:
                    break
            if used >= share:
                break


def train_tokenizer(texts: Iterable[str], cfg: TokenizerConfig, out_path: Path) -> TokenizerInfo:
    """Train a byte-fallback sentencepiece model on `texts`; write it atomically to `out_path`."""
    import io

    spm = _spm()
    buf = io.BytesIO()
    pieces = list(training_pieces(texts, cfg.max_sentence_length))
    if len(pieces) > cfg.input_sentence_size:
        # Sentencepiece's own sample of `input_sentence_size` pieces differs from run to run
        # (0.2.x, even with one thread and `set_random_generator_seed`), and so would the model
        # and every token id after it: a seeded sample here keeps a retrained tokenizer the same.
        keep = np.sort(np.random.default_rng(0).choice(len(pieces), cfg.input_sentence_size, replace=False))
        pieces = [pieces[i] for i in keep]
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(pieces),
            model_writer=buf,
            vocab_size=cfg.vocab_size,
            model_type=cfg.model_type,
            byte_fallback=True,
            # Lossless round trips: no NFKC, no whitespace collapsing (code keeps its indentation).
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            add_dummy_prefix=True,  # as Llama's tokenizer, so HF LlamaTokenizer reads the model the same way
            allow_whitespace_only_pieces=True,  # runs of spaces (indentation) become single pieces
            split_digits=True,
            user_defined_symbols=["\n", "\t"],
            character_coverage=cfg.character_coverage,
            input_sentence_size=cfg.input_sentence_size,
            shuffle_input_sentence=True,
            max_sentence_length=cfg.max_sentence_length,
            num_threads=cfg.num_threads or os.cpu_count() or 1,
            unk_id=0,
            bos_id=1,
            eos_id=2,
            pad_id=3,
            minloglevel=2,
        )
    except RuntimeError as e:
        raise ValueError(
            f"sentencepiece training failed ({e}); with little text, lower vocab_size (now {cfg.vocab_size})"
        ) from e
    shardio.atomic_write_bytes(out_path, buf.getvalue())
    return tokenizer_info(out_path)


@dataclass(frozen=True)
class TokenizeTask:
    """One shard's work; plain data so it pickles into a Ray task."""

    input: str
    stage_dir: str
    model: str
    group_sql: str  # SQL expression giving each document's group name (NULL = unassigned)
    config_hash: str
    threads: int = 1
    batch_chars: int = 4_000_000  # characters encoded per sentencepiece call (bounds memory)
    stage: str = STAGE  # the stage's name in the run (its folder, the markers' `stage`)

    @property
    def part(self) -> str:
        return Path(self.input).stem

    @property
    def output(self) -> Path:
        return Path(self.stage_dir) / f"{self.part}.parquet"

    @property
    def ids(self) -> Path:
        return ids_path(self.stage_dir, self.part)


def ids_path(stage_dir: str | os.PathLike, part: str) -> Path:
    return Path(stage_dir) / "_ids" / f"{part}.bin"


_DUCK: list = []  # this process's DuckDB connection, made on first use
_DUCK_LOCK = threading.Lock()


def assign_groups(table: pa.Table, group_sql: str) -> pa.Array:
    """Each row's group, from an in-memory DuckDB over the shard (row order kept).

    One connection per worker process, reused across shards: connecting costs ~20 ms, which
    is several percent of a small shard's encode time. Each shard is registered, queried and
    unregistered under a lock, so nothing carries over from one shard to the next.
    """
    import duckdb

    with _DUCK_LOCK:
        if not _DUCK:
            # One thread: the shard is small for DuckDB, and the worker's CPU belongs to the encoder.
            _DUCK.append(duckdb.connect(config={"threads": 1, "preserve_insertion_order": True}))
        con = _DUCK[0]
        con.register("docs", table)  # zero-copy: predicates may use any column, text included
        try:
            out = con.sql(f"SELECT CAST(({group_sql}) AS VARCHAR) AS g FROM docs").to_arrow_table()
        except duckdb.Error as e:
            raise ValueError(f"group predicate failed on {table.column_names}: {e}") from None
        finally:
            con.unregister("docs")
    return out.column("g").combine_chunks().cast(pa.string())


def encode_to_file(sp, texts: list[str], f: AtomicFile, dtype: np.dtype, threads: int, batch_chars: int) -> np.ndarray:
    """Encode `texts`, append their ids to `f`; returns the token count of each text.

    Batches are bounded by characters, not documents: sentencepiece returns Python lists
    (~36 bytes per token), so a batch of a few long documents could otherwise take gigabytes.
    """
    counts = np.zeros(len(texts), dtype=np.int64)
    ends = np.cumsum(np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)))
    start = 0
    while start < len(texts):
        base = ends[start - 1] if start else 0
        stop = max(start + 1, int(np.searchsorted(ends, base + batch_chars, side="right")))
        ids = sp.encode(texts[start:stop], num_threads=threads)
        n = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        counts[start:stop] = n
        f.write(np.fromiter(itertools.chain.from_iterable(ids), dtype=dtype, count=int(n.sum())))
        start = stop
    return counts


def tokenize_shard(task: TokenizeTask) -> dict:
    """One shard on its own, outside a run (tests, benchmarks): skipped, as the runner skips it,
    when its marker matches and its files are intact; returns the shard's marker."""
    fingerprint = shardio.file_digest(Path(task.input))
    marker = ledger.current(Path(task.stage_dir), task.part, fingerprint, task.config_hash)
    if marker is not None:
        return {**marker.to_dict(), "skipped": True}
    return encode_shard(task, fingerprint)


def encode_shard(task: TokenizeTask, fingerprint: str) -> dict:
    """Tokenize one shard whose content digest is `fingerprint`: its delta shard, its ids, and
    its marker, written last; returns the marker."""
    started = time.time()
    table = docshard.read_docs(Path(task.input), with_row=True)
    own = [c for c in ("n_tokens", "group") if c in table.column_names]
    table = table.drop_columns(own)  # this stage owns these columns: recompute, never keep stale ones
    groups = assign_groups(table, task.group_sql)
    sp = load_tokenizer(task.model)
    dtype = token_dtype(sp.get_piece_size())
    texts = table.column("text").to_pylist()
    with AtomicFile(task.ids) as f:
        counts = encode_to_file(sp, texts, f, dtype, task.threads, task.batch_chars)
    out = table.append_column("n_tokens", pa.array(counts, pa.int64())).append_column("group", groups)
    doc_schema = docshard.document_schema(Path(task.input))
    bytes_out = docshard.write_delta(task.output, docshard.base_ref(Path(task.input), fingerprint),
                                     pa.schema([f for f in doc_schema if f.name not in own]), out)

    agg = pa.table({"g": pc.fill_null(groups.cast(pa.string()), ""), "n": counts}).group_by("g").aggregate(
        [("n", "count"), ("n", "sum")])
    per_group = {g: {"docs": d, "tokens": t} for g, d, t in zip(
        agg.column("g").to_pylist(), agg.column("n_count").to_pylist(), agg.column("n_sum").to_pylist())}
    n_docs = table.num_rows
    shard_counts = {"in": n_docs, "kept": n_docs, "rejected": 0, "quarantined": 0, "rejected_by_reason": {},
                    "quarantined_by_reason": {}, "tokens": int(counts.sum()),
                    "unassigned_docs": per_group.get("", {}).get("docs", 0)}
    # Outputs relative to the stage folder, like every stage's; "" is the key of documents no group claims.
    marker = Marker.new(fingerprint, task.config_hash, [task.output.name, task.ids.relative_to(task.stage_dir).as_posix()],
                        shard_counts, stage=task.stage, input=str(task.input), groups=per_group, dtype=dtype.name,
                        bytes_in=Path(task.input).stat().st_size, bytes_out=bytes_out + task.ids.stat().st_size,
                        text_bytes=int(pc.sum(pc.binary_length(table.column("text"))).as_py() or 0),
                        seconds=round(time.time() - started, 3))
    return ledger.write_marker(Path(task.stage_dir), task.part, marker).to_dict()
