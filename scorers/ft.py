"""fastText helpers shared by language ID, the quality classifier and the domain tagger.

fastText is imported lazily. Four facts about it shape this module:
- fastText reads one line per example, so newlines are replaced by spaces before training and
  prediction (the same function serves both, so train and test see the same text).
- With NumPy 2, `model.predict("one string")` raises; `predict([text, ...])` works and is faster
  (one C++ call per batch), so every prediction here goes through lists.
- A model is loaded once per process and cached; `MODEL_LOADS` counts real loads per path so
  tests can assert that a Ray actor loads its model once, not once per batch.
- fastText 0.9.3 leaves most of a new model's input matrix uninitialised when it trains on fewer
  than 10 threads, so training runs with zeroed allocations (`zeroed_allocations`): the same
  examples and seed give the same model in any process.
- Scoring needs only predictions, so the stages load a supervised model projected onto its labels
  (`load_predictor`): the same predictions from an input matrix of `labels` columns instead of
  `dim`, about twice as fast at DCLM's dim 100 (docs/annotate.md).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import secrets
import stat
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

@dataclass
class FastTextParams:
    """Hyper-parameters of `fasttext.train_supervised` (DCLM's defaults, Li et al. 2024)."""

    wordNgrams: int = 2
    dim: int = 100
    epoch: int = 5
    lr: float = 0.1
    minCount: int = 1
    bucket: int = 200_000
    """Hash buckets for word n-grams. fastText's default (2M) makes an 850 MB model at dim 100;
    200k keeps it near 100 MB, plenty for the bigrams of a reference set of this size."""

    def __post_init__(self):
        for k in ("wordNgrams", "dim", "epoch", "minCount", "bucket"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k}: must be >= 1, got {getattr(self, k)}")
        if not 0 < self.lr <= 10:
            raise ValueError(f"lr: must be in (0, 10], got {self.lr}")


MODEL_LOADS: Counter[str] = Counter()
_CACHE: dict[tuple[str, str], tuple[tuple[int, int, int], Any]] = {}  # (path, kind) -> ((inode, mtime_ns, size), model)
_LOCK = threading.Lock()
_PERTURB_LOCK = threading.Lock()


def import_fasttext():
    try:
        import fasttext
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("fastText is missing: pip install fasttext") from e
    return fasttext


def load_model(path: str | os.PathLike) -> Any:
    """The fastText model at `path`, loaded once per process and again when the file changes (a
    model retrained in place, as `curate train-quality` does, is never served stale)."""
    return _cached(path, "model", lambda key: import_fasttext().load_model(key))


def load_predictor(path: str | os.PathLike) -> Any:
    """The model at `path` for `predict` only, cached as `load_model` is: a supervised model's
    input matrix projected onto its output rows (`project_onto_labels`), so each word and n-gram
    adds `labels` numbers to the hidden vector instead of `dim`. Quantized and unsupervised
    models, and models with no fewer output rows than dimensions, come as loaded."""
    return _cached(path, "predictor", lambda key: project_onto_labels(import_fasttext().load_model(key)))


def project_onto_labels(model: Any) -> Any:
    """`model`, changed in place to predict the same with a smaller input matrix.

    fastText's supervised output is a function of `W_out . mean(W_in[ids])` (every loss: softmax,
    one-vs-all, hierarchical softmax and negative sampling read the hidden vector only through
    rows of `W_out`). That product equals `mean((W_in . W_out^T)[ids])`, so the model with input
    matrix `W_in . W_out^T` (rows x labels) and the identity as output matrix predicts the same
    labels and probabilities, up to float32 rounding (the sums run in another order). The
    tokenizer, dictionary and n-gram hashing are fastText's own, untouched. At dim 100 and two
    labels each token reads 8 bytes instead of 400: predict runs about twice as fast and the
    model in memory is 1/50 the size (bench/README.md, "Quality scoring")."""
    args = model.f.getArgs()
    if model.f.isQuant() or args.model.name != "supervised":
        return model
    w_in, w_out = np.asarray(model.f.getInputMatrix()), np.asarray(model.f.getOutputMatrix())
    if w_out.shape[0] >= w_in.shape[1]:
        return model
    projected = np.ascontiguousarray(w_in @ w_out.T, dtype=np.float32)
    model.set_matrices(projected, np.eye(w_out.shape[0], dtype=np.float32))
    return model


def _cached(path: str | os.PathLike, kind: str, load) -> Any:
    key = str(Path(path).resolve())
    try:
        st = os.stat(key)
    except FileNotFoundError:
        st = None
    if st is None or not stat.S_ISREG(st.st_mode):
        raise FileNotFoundError(f"fastText model not found: {path}" + (" (a directory, not a model file)" if st else ""))
    version = (st.st_ino, st.st_mtime_ns, st.st_size)  # saving replaces the file: a new inode
    with _LOCK:
        cached = _CACHE.get((key, kind))
        if cached is None or cached[0] != version:
            cached = (version, load(key))
            _CACHE[(key, kind)] = cached
            MODEL_LOADS[key] += 1
        return cached[1]


def loads_of(path: str | os.PathLike) -> int:
    """How many times this process has loaded the model at `path` from disk."""
    return MODEL_LOADS[str(Path(path).resolve())]


def one_line(text: str, max_chars: int | None = None) -> str:
    """fastText input: a single line, optionally truncated. Only `\\n` is replaced: fastText ends
    a line there (and its Python binding refuses it), while `\\r`, tabs and the other blanks are
    word separators to its tokenizer like a space (`Dictionary::readWord`)."""
    if max_chars is not None and len(text) > max_chars:
        text = text[:max_chars]
    return text.replace("\n", " ")


def predict_labels(model: Any, texts: Sequence[str], k: int = 1) -> tuple[list[list[str]], list[np.ndarray]]:
    """Top-`k` labels and probabilities for already single-line texts (one C++ call)."""
    if not texts:
        return [], []
    try:
        return model.predict(list(texts), k=k)
    except RuntimeError as e:
        if "NaN" not in str(e):
            raise
        raise ValueError(f"fastText predicts NaN on these {len(texts)} texts: the model's weights blew up in "
                         f"training; train it again (at a lower learning rate)") from None


def top1(model: Any, texts: Sequence[str]) -> tuple[list[str | None], list[float]]:
    """Top label (without `__label__`; None when the model gives none) and its probability per
    already single-line text. fastText's softmax can return a hair above 1, so it is clipped."""
    labels, probs = predict_labels(model, texts, k=1)
    out_l = [ls[0].removeprefix("__label__") if len(ls) else None for ls in labels]
    out_p = [min(1.0, float(ps[0])) if len(ps) else 0.0 for ps in probs]
    return out_l, out_p


def label_probability(model: Any, texts: Sequence[str], label: str) -> np.ndarray:
    """P(`label`) per text over all of the model's labels (exact, not top-1 only)."""
    model_labels = model.get_labels()
    if len(model_labels) == 2 and label in model_labels:
        # Binary softmax: the top label and its probability say everything; k=1 keeps the
        # per-document Python work to one comparison.
        labels, probs = predict_labels(model, texts, k=1)
        top = np.array([p[0] if len(p) else 0.5 for p in probs], dtype=np.float64)
        is_label = np.array([bool(ls) and ls[0] == label for ls in labels])
        out = np.where(is_label, top, 1.0 - top)
    else:
        labels, probs = predict_labels(model, texts, k=len(model_labels))
        out = np.zeros(len(texts), dtype=np.float64)
        for i, (ls, ps) in enumerate(zip(labels, probs)):
            for lab, p in zip(ls, ps):
                if lab == label:
                    out[i] = float(p)
                    break
    # fastText's softmax can return probabilities a hair above 1.
    return np.clip(out, 0.0, 1.0)


def write_training_file(path: Path, examples: Sequence[tuple[str, str]]) -> None:
    """`__label__<label> <text>` lines, the format `fasttext.train_supervised` reads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for label, text in examples:
            f.write(f"__label__{label} {one_line(text)}\n")


def train_supervised(train_file: Path, *, seed: int = 0, threads: int = 1, **params: Any) -> Any:
    """`fasttext.train_supervised` with the given hyper-parameters.

    One thread by default: fastText's Hogwild training is only deterministic with one thread,
    and the models here are small enough that it does not matter. Allocations are zeroed while
    it trains (`zeroed_allocations`), so the same examples and seed give the same model.

    A run that diverges, stopping with fastText's "Encountered NaN." or finishing with weights
    that blew up (which then predicts NaN on some texts), is run again at half the learning rate,
    up to `LR_HALVINGS` times, as fastText's own advice goes ("lower the learning rate");
    `trained_lr(model)` says the rate the model was trained at.
    """
    ft = import_fasttext()
    lr = float(params.pop("lr", 0.1))
    for _ in range(LR_HALVINGS + 1):
        try:
            with zeroed_allocations():
                model = ft.train_supervised(input=str(train_file), seed=seed, thread=threads, verbose=0, lr=lr, **params)
            if not diverged(model):
                return model
        except RuntimeError as e:
            if "NaN" not in str(e):
                raise
        lr /= 2
    raise ValueError(f"fastText training diverged (NaN or exploding weights) down to a learning rate of {lr * 2:g} "
                     f"({LR_HALVINGS} halvings): lower it further or change the seed")


@contextlib.contextmanager
def zeroed_allocations() -> Iterator[None]:
    """Every C allocation zeroed while fastText trains.

    fastText 0.9.3 initialises its input matrix with `DenseMatrix::uniform`, which fills one
    tenth of it per training thread (`uniformThread` writes block `i` of 10 for threads `i` < 10)
    and leaves the rest as `posix_memalign` returned it, uninitialised. In a fresh process that
    memory comes zeroed from the kernel; after other allocations were freed it holds whatever
    they held: another model's weights, NaN. Then the same examples and seed gave other models
    from process to process and, now and then, "Encountered NaN." even at a learning rate of 1e-9.
    glibc's `M_PERTURB` set to 255 fills each allocation with zeros (255 ^ 0xff), so the rows
    fastText leaves are zero, as in a fresh process. Elsewhere than glibc this does nothing.
    """
    mallopt = _mallopt()
    if mallopt is None:
        yield
        return
    with _PERTURB_LOCK:  # one setting per process: trainings in two threads take turns
        mallopt(M_PERTURB, 255)
        try:
            yield
        finally:
            mallopt(M_PERTURB, 0)


@functools.lru_cache(maxsize=1)
def _mallopt():
    import ctypes

    try:
        return ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return None


def diverged(model: Any) -> bool:
    """A finished supervised model whose weights blew up: healthy ones stay within a few units,
    diverged ones reach 1e30 and predict NaN where they overflow."""
    return any(not np.isfinite(m).all() or np.abs(m).max(initial=0.0) > MAX_WEIGHT
               for m in (np.asarray(model.f.getInputMatrix()), np.asarray(model.f.getOutputMatrix())))


def trained_lr(model: Any) -> float:
    """The learning rate a model in memory was trained at (a saved model does not keep it)."""
    return float(model.f.getArgs().lr)


def lr_warning(model: Any, asked: float) -> str | None:
    """The metadata's warning when training had to lower the learning rate, else None."""
    got = trained_lr(model)
    return None if got == asked else (f"fastText diverged at lr {asked:g}; the model was trained at lr {got:g} "
                                      f"(params.lr says so): more or cleaner examples allow the rate asked for")


LR_HALVINGS = 3
M_PERTURB = -6  # glibc's malloc.h
MAX_WEIGHT = 1e6


def train_on_examples(examples: Sequence[tuple[str, str]], model_dir: Path, *, seed: int = 0, threads: int = 1,
                      **params: Any) -> Any:
    """Train on (label, text) pairs through a temporary training file next to the model."""
    import tempfile

    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=model_dir) as tmp:
        train_file = Path(tmp) / "train.txt"
        write_training_file(train_file, examples)
        return train_supervised(train_file, seed=seed, threads=threads, **params)


def split_holdout(items: list, fraction: float, seed: int) -> tuple[list, list]:
    """Deterministic shuffle, then (train, held-out)."""
    items = list(items)
    random.Random(seed).shuffle(items)
    n_hold = max(1, int(round(len(items) * fraction))) if len(items) > 1 else 0
    return items[n_hold:], items[:n_hold]


def _temp_next_to(path: Path) -> Path:
    # A unique name in the target's directory: two trainings writing the same model never share
    # a temporary file, and os.replace stays a rename on one file system. Created as the run's
    # shards are (stages.shardio, which scorers sit below): mode 0o666 so the umask applies, where
    # mkstemp's 0o600 would hide the model from other users; O_EXCL makes the name ours.
    while True:
        tmp = path.parent / f".tmp-{path.name}.{secrets.token_hex(4)}"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


def save_model(model: Any, path: str | os.PathLike, meta: dict) -> None:
    """Write `meta` to `path` with suffix .json, then the model to `path`, each atomically.

    Metadata goes first: a crash in between leaves the old model (or none) beside new metadata,
    never a new model beside stale bucket thresholds, and a reader that finds the model finds
    its metadata.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for target, write in ((path.with_suffix(".json"),
                           lambda t: t.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")),
                          (path, lambda t: model.save_model(str(t)))):
        tmp = _temp_next_to(target)
        try:
            write(tmp)
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
