"""Connected components of a graph too big for one process: alternating large-star / small-star.

Kiveris et al. 2014, "Connected Components in MapReduce and Beyond" (SoCC): each round is one
map/reduce over edges grouped by node. With Γ(u) the neighbours of u and m the smallest id in a
set,
  large-star(u): emit (v, m(Γ(u) ∪ {u})) for every neighbour v > u,
  small-star(u): N = {v ∈ Γ(u) : v < u}; emit (v, m(N ∪ {u})) for every v ∈ N ∪ {u}.
Both keep connectivity; alternating them reaches, in O(log² n) rounds, a forest of stars whose
centres are each component's smallest node. The run stops when two rounds in a row leave the
edge set unchanged (compared through an order-independent checksum), then labels every node with
the smallest node it touches.

Files: round r reads `<dir>/r<r>/to-<k>/...` (directed edges, u in partition k, both directions
present) and writes round r+1's inbox. Every round is a resumable `common.Step`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from curate.stages import shardio
from curate.stages.base import Executor
from curate.stages.dedup.common import (
    Step,
    fmix64,
    group_starts,
    part_of_uid,
    partition_of,
    read_inbox,
    run_step,
    write_partitioned,
)

EDGE_SCHEMA = pa.schema([pa.field("u", pa.int64(), nullable=False), pa.field("v", pa.int64(), nullable=False)])
LABEL_SCHEMA = pa.schema([pa.field("uid", pa.int64(), nullable=False), pa.field("label", pa.int64(), nullable=False)])
MAX_ROUNDS = 200
# Up to this many undirected edges one task labels the whole graph in memory (16 B per directed
# edge, twice for scipy's CSR: ~0.6 GB at the limit) instead of distributed rounds, each a barrier
# and a shuffle of small files that costs more than the work on a graph this size.
IN_MEMORY_EDGES = 10_000_000


def unique_pairs(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (u, v) pairs sorted by u then v."""
    if len(u) == 0:
        return u.astype(np.int64), v.astype(np.int64)
    order = np.lexsort((v, u))
    u, v = u[order], v[order]
    keep = np.r_[True, (u[1:] != u[:-1]) | (v[1:] != v[:-1])]
    return u[keep], v[keep]


def write_edges(x: np.ndarray, y: np.ndarray, step_dir: Path, src: int, n_parts: int) -> int:
    """Write undirected edges {x, y} as both directed pairs, each to its first node's partition."""
    u = np.concatenate([x, y]).astype(np.int64)
    v = np.concatenate([y, x]).astype(np.int64)
    keep = u != v
    u, v = unique_pairs(u[keep], v[keep])
    table = pa.table({"u": u, "v": v}, schema=EDGE_SCHEMA)
    return write_partitioned(table, partition_of(u, n_parts), step_dir, src)


def large_star(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`u, v` distinct, sorted by (u, v). Returns the new undirected edges."""
    starts = group_starts(u)
    m = np.minimum(u[starts], v[starts])  # smallest of Γ(u) ∪ {u} (v sorted within u)
    m_of_pair = np.repeat(m, np.diff(np.r_[starts, len(u)]))
    big = v > u
    return v[big], m_of_pair[big]


def small_star(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    small = v < u
    u, v = u[small], v[small]
    if len(u) == 0:
        return u, v
    starts = group_starts(u)
    m = v[starts]  # smallest neighbour below u
    m_of_pair = np.repeat(m, np.diff(np.r_[starts, len(u)]))
    rest = v != m_of_pair
    # Every smaller neighbour and u itself attach to m.
    return np.r_[v[rest], u[starts]], np.r_[m_of_pair[rest], m]


def edge_checksum(u: np.ndarray, v: np.ndarray) -> tuple[int, int]:
    """(count, sum of hashes) of the undirected edges whose larger end is in this partition."""
    hi = u > v
    h = fmix64(fmix64(u[hi].astype(np.uint64)) ^ v[hi].astype(np.uint64))
    return int(hi.sum()), int(h.sum(dtype=np.uint64))


@dataclass(frozen=True)
class RoundTask:
    in_dir: str
    out_dir: str
    part: int
    n_src: int
    n_parts: int
    op: str  # "large" | "small" | "label" | "memory"
    offsets: tuple = ()  # for "label"/"memory": part boundaries of uids, labels go to their uid's part


def run_round(task: RoundTask) -> dict:
    t = read_inbox(Path(task.in_dir), task.part, task.n_src, EDGE_SCHEMA)
    u, v = unique_pairs(t.column("u").to_numpy(), t.column("v").to_numpy())
    count, checksum = edge_checksum(u, v)
    if task.op == "label":
        starts = group_starts(u)
        labels = pa.table({"uid": u[starts], "label": np.minimum(u[starts], v[starts])}, schema=LABEL_SCHEMA)
        dest = part_of_uid(u[starts], np.asarray(task.offsets, np.int64))
        write_partitioned(labels, dest, Path(task.out_dir), task.part)
        return {"edges": count, "checksum": checksum, "nodes": labels.num_rows}
    x, y = (large_star if task.op == "large" else small_star)(u, v)
    write_edges(x, y, Path(task.out_dir), task.part, task.n_parts)
    return {"edges": count, "checksum": checksum}


def label_in_memory(task: RoundTask) -> dict:
    """All partitions' edges in one process: scipy's union-find-like labelling (C), then each
    node's label is its component's smallest node, as the distributed rounds give."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components as cc

    parts = [read_inbox(Path(task.in_dir), k, task.n_src, EDGE_SCHEMA) for k in range(task.n_parts)]
    u = np.concatenate([t.column("u").to_numpy() for t in parts]) if parts else np.zeros(0, np.int64)
    v = np.concatenate([t.column("v").to_numpy() for t in parts]) if parts else np.zeros(0, np.int64)
    nodes = np.unique(np.r_[u, v])
    if len(nodes) == 0:
        return {"edges": 0, "nodes": 0}
    iu, iv = np.searchsorted(nodes, u), np.searchsorted(nodes, v)
    graph = csr_matrix((np.ones(len(iu), np.int8), (iu, iv)), shape=(len(nodes), len(nodes)))
    _, comp = cc(graph, directed=False)
    # nodes are sorted, so a component's first node is its smallest.
    first_comp, first_at = np.unique(comp, return_index=True)
    smallest = np.empty(len(first_comp), np.int64)
    smallest[first_comp] = nodes[first_at]
    labels = pa.table({"uid": nodes, "label": smallest[comp]}, schema=LABEL_SCHEMA)
    write_partitioned(labels, part_of_uid(nodes, np.asarray(task.offsets, np.int64)), Path(task.out_dir), 0)
    return {"edges": len(u) // 2, "nodes": len(nodes)}


def connected_components(
    executor: Executor,
    edges_dir: Path,
    n_src: int,
    n_parts: int,
    offsets: np.ndarray,
    work_dir: Path,
    fingerprint: str,
    config_hash: str,
    n_edges: int | None = None,
    in_memory_edges: int = IN_MEMORY_EDGES,
) -> tuple[Path, int]:
    """Label every node that has an edge in `edges_dir` (inbox by node partition, both
    directions) with its component's smallest node. Labels (`LABEL_SCHEMA`) go to the inbox of
    their uid's input part (`offsets`, see `common.part_offsets`) under the returned directory,
    sent by sources 0..n_parts-1. `n_edges` (an upper bound of the undirected edges, when known)
    at most `in_memory_edges`: one task labels them all in memory. Also returns the number of
    distributed rounds run (0 in memory)."""
    work_dir = Path(work_dir)
    if n_edges is not None and n_edges <= in_memory_edges:
        label_dir = work_dir / "labels"
        step = Step(str(label_dir), shardio.stable_hash([fingerprint, "cc-memory"]), config_hash)
        task = RoundTask(str(edges_dir), str(label_dir), 0, n_src, n_parts, "memory", tuple(int(o) for o in offsets))
        run_step(executor, step, label_in_memory, [task], desc="dedup components (in memory)")
        return label_dir, 0
    in_dir, src = Path(edges_dir), n_src
    sums: list[tuple[int, int]] = []
    for r in range(MAX_ROUNDS):
        op = "large" if r % 2 == 0 else "small"
        out_dir = work_dir / f"r{r + 1:03d}"
        step = Step(str(work_dir / f"round-{r:03d}"), shardio.stable_hash([fingerprint, "cc", r]), config_hash)
        tasks = [RoundTask(str(in_dir), str(out_dir), k, src, n_parts, op) for k in range(n_parts)]
        res = run_step(executor, step, run_round, tasks, desc=f"dedup components round {r}")
        sums.append((sum(x["edges"] for x in res), sum(x["checksum"] for x in res) % (1 << 64)))
        # sums[r] describes round r's input; two unchanged rounds in a row (one of each kind)
        # mean a fixed point of both operations.
        if len(sums) >= 3 and sums[-1] == sums[-2] == sums[-3] or sums[-1][0] == 0:
            break
        in_dir, src = out_dir, n_parts
    else:
        raise RuntimeError(f"connected components did not converge in {MAX_ROUNDS} rounds")
    label_dir = work_dir / "labels"
    step = Step(str(label_dir), shardio.stable_hash([fingerprint, "cc-label", len(sums)]), config_hash)
    offs = tuple(int(o) for o in offsets)
    tasks = [RoundTask(str(in_dir), str(label_dir), k, src, n_parts, "label", offs) for k in range(n_parts)]
    run_step(executor, step, run_round, tasks, desc="dedup components labels")
    return label_dir, len(sums)
