"""Repeated word n-grams counted as datatrove's Gopher repetition rule counts them, with numbers
in place of strings (scorers/heuristic_rules.py restates the rule and holds `DocFeatures`).

- `groups_of`: equal int64 keys grouped (a numpy sort for few keys, Arrow's hash encoding for
  many); `DocFeatures.tuple_groups` numbers each n-gram from its (n-1)-gram's group and last word.
- `powers`: B**i mod P for the polynomial hash of `"".join` n-grams (`DocFeatures.char_hashes`),
  kept per base and shared between documents.
- `top_ngram_chars` (datatrove's `find_top_duplicate`) and `dup_ngram_exceeds`
  (`find_all_duplicate`, stopping once past the threshold) read those groups; `string_firsts`
  says where the groups of word tuples are the groups of their strings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from curate.scorers.heuristic_rules import DocFeatures


P, B = (1 << 31) - 1, 1_000_003  # a polynomial string hash modulo a prime (only ever compared)


POWERS_KEPT = 1 << 21  # powers remembered per base (16 MB); a longer document computes its own
_power_tables: dict[int, Any] = {}


def powers(base: int, size: int):
    """base**i mod P for i < size (read-only: a view of a table shared between documents)."""
    table = _power_tables.get(base)
    if table is not None and table.size >= size:
        return table[:size]
    if size > POWERS_KEPT:
        return _new_powers(base, size)
    grown = max(size, 2 * (0 if table is None else table.size), 1 << 14)
    table = _power_tables[base] = _new_powers(base, min(POWERS_KEPT, grown))
    return table[:size]


def _new_powers(base: int, size: int):
    import numpy as np

    out = np.empty(size, dtype=np.int64)
    if size:
        out[0], done, mult = 1, 1, base
        while done < size:  # out[done + i] = out[i] * base**done
            take = min(done, size - done)
            out[done:done + take] = out[:take] * mult % P
            mult, done = mult * mult % P, done + take
    return out


HASH_GROUPS_FROM = 2000


def groups_of(keys):
    """Equal int64 keys grouped: (each group's first position, its size, each key's group)."""
    import numpy as np

    if keys.size < HASH_GROUPS_FROM:  # a sort; Arrow's hashing costs less only on more keys
        _, first, group, sizes = np.unique(keys, return_index=True, return_inverse=True, return_counts=True)
        return first, sizes, group
    import pyarrow as pa
    import pyarrow.compute as pc

    # Dictionary codes count up in order of first occurrence, so a key starts its group
    # where its code exceeds every code before it.
    group = pc.dictionary_encode(pa.array(keys)).indices.to_numpy().astype(np.int64)
    opens = np.empty(group.size, dtype=bool)
    opens[0] = True
    np.greater(group[1:], np.maximum.accumulate(group[:-1]), out=opens[1:])
    return np.flatnonzero(opens), np.bincount(group), group


def top_ngram_chars(feats: DocFeatures, n: int) -> int | None:
    """datatrove's `find_top_duplicate(get_n_grams(words, n))`; None when there is no n-gram."""
    if n not in feats._top:
        feats._top[n] = _top_ngram_chars(feats, n)
    return feats._top[n]


def _top_ngram_chars(feats: DocFeatures, n: int) -> int | None:
    words = feats.words
    if len(words) < n:
        return None
    if not feats.spaceless:
        from datatrove.pipeline.filters.gopher_repetition_filter import find_top_duplicate, get_n_grams

        return find_top_duplicate(get_n_grams(words, n))
    first, sizes, _ = feats.tuple_groups(n)  # no word holds a space: `" ".join` n-grams group as tuples do
    most = int(sizes.max())
    top = int(first[sizes == most].min())  # the top n-gram that occurs first
    starts = feats.joined[1]
    return (starts[top + n] - starts[top] + n - 1) * most


def string_firsts(feats: DocFeatures, n: int):
    """Each n-gram's first position as a `"".join` string (what `find_all_duplicate` compares),
    from the word-tuple groups where those group as the strings do: equal tuples make equal
    strings, and different tuples must differ in their strings' (length, polynomial hash) ("ab c"
    and "a bc" do not); else None, and the strings themselves are compared."""
    first, _, group = feats.tuple_groups(n)
    starts, prefix, inverse_powers = feats.char_hashes
    a, b = starts[first], starts[first + n]
    if groups_of((b - a) * P + (prefix[b] - prefix[a]) % P * inverse_powers[a] % P)[0].size != first.size:
        return None
    return first[group]


def dup_ngram_exceeds(feats: DocFeatures, n: int, limit: Callable[[int], bool]) -> bool:
    """Whether datatrove's `find_all_duplicate(words, n)` passes `limit` (a test monotone in
    the count): the same left-to-right scan, visiting only n-grams that occurred earlier."""
    import numpy as np

    joined, starts = feats.joined
    positions = len(starts) - n  # len(words) - n + 1
    if positions <= 0:
        return limit(0)
    firsts = string_firsts(feats, n)
    if firsts is None:
        grams = [joined[a:b] for a, b in zip(starts, starts[n:])]
        first = dict(zip(reversed(grams), range(positions - 1, -1, -1)))  # each n-gram's first position
        firsts = np.fromiter(map(first.__getitem__, grams), dtype=np.int64, count=positions)
    seen_before = np.flatnonzero(firsts != np.arange(positions))
    skipped = bytearray(positions)  # positions the scan jumped over
    added: set[int] = set()  # n-grams (by first position) the scan added at a later occurrence
    repeated, idx = 0, 0
    for p, f in zip(seen_before.tolist(), firsts[seen_before].tolist()):
        if p < idx:
            continue
        # A first occurrence the scan visited was new there, so it is in datatrove's set.
        if not skipped[f] or f in added:
            repeated += starts[p + n] - starts[p]
            if limit(repeated):
                return True
            end = min(p + n, positions)
            skipped[p + 1:end] = b"\x01" * (end - p - 1)
            idx = p + n
        else:
            added.add(f)
            idx = p + 1
    return limit(repeated)
