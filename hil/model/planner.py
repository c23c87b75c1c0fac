"""Static arena plan: where each activation tensor lives in the single, statically allocated tensor arena.

Every non-constant tensor (graph inputs and outputs included) gets an offset. A buffer is live from the step
that writes it to the last step that reads it; graph inputs and outputs are live for the whole inference.
Keeping the inputs intact costs their size in arena bytes but makes INFER repeatable: a host that retries a
lost reply, or runs N inferences on one loaded input (as MLPerf Tiny's energy mode does), gets the same result.
Buffers whose lifetimes overlap must not overlap in memory; an operator's inputs and outputs are both live
at its step, so no kernel ever runs in place. Placement is greedy in the style of TFLM's
GreedyMemoryPlanner: largest buffers first, each at the lowest 16-byte aligned offset that fits between the
buffers already placed whose lifetimes intersect its own.

Tensors that alias each other (RESHAPE and friends, which only relabel bytes) form one buffer whose
lifetime is the union of its members'.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ALIGNMENT = 16


def align_up(n: int, alignment: int = ALIGNMENT) -> int:
    return (n + alignment - 1) // alignment * alignment


@dataclass
class Buffer:
    tensors: list[int]  # tensor indices sharing these bytes; the first is the representative
    size: int
    first_use: int  # step index; -1 for graph inputs (written before step 0)
    last_use: int
    offset: int = -1

    def overlaps_in_time(self, other: Buffer) -> bool:
        return self.first_use <= other.last_use and other.first_use <= self.last_use


@dataclass
class ArenaPlan:
    offsets: dict[int, int]  # tensor index -> byte offset
    arena_bytes: int
    buffers: list[Buffer] = field(default_factory=list)


def plan_arena(
    sizes: dict[int, int],
    steps: list[tuple[list[int], list[int]]],
    graph_inputs: list[int],
    graph_outputs: list[int],
    aliases: list[tuple[int, int]] | None = None,
) -> ArenaPlan:
    """Plans the arena.

    sizes: bytes of every arena tensor. steps: (read tensors, written tensors) per kernel call, in order.
    aliases: (source, alias) pairs; the alias shares the source's bytes.
    """
    # Union-find over aliases so chains (reshape of a reshape) collapse to one buffer.
    parent = {t: t for t in sizes}

    def find(t: int) -> int:
        while parent[t] != t:
            parent[t] = parent[parent[t]]
            t = parent[t]
        return t

    for src, alias in aliases or []:
        ra, rb = find(src), find(alias)
        if ra != rb:
            parent[rb] = ra

    n_steps = len(steps)
    first: dict[int, int] = {}
    last: dict[int, int] = {}

    def touch(t: int, step: int) -> None:
        r = find(t)
        first[r] = min(first.get(r, step), step)
        last[r] = max(last.get(r, step), step)

    for t in graph_inputs:
        touch(t, -1)
        touch(t, n_steps)  # never overwritten: INFER must be repeatable on the loaded input
    for i, (reads, writes) in enumerate(steps):
        for t in list(reads) + list(writes):
            touch(t, i)
    for t in graph_outputs:
        touch(t, n_steps)

    groups: dict[int, list[int]] = {}
    for t in sizes:
        groups.setdefault(find(t), []).append(t)

    buffers: list[Buffer] = []
    for root, members in groups.items():
        if root not in first:  # a tensor nobody reads or writes still gets (unshared) space
            first[root], last[root] = -1, n_steps
        buffers.append(
            Buffer(
                tensors=sorted(members, key=lambda t: (t != root, t)),
                size=max(sizes[t] for t in members),
                first_use=first[root],
                last_use=last[root],
            )
        )

    # Largest first; ties by first use, then tensor index, so the plan is deterministic.
    order = sorted(buffers, key=lambda b: (-b.size, b.first_use, b.tensors[0]))
    placed: list[Buffer] = []
    for buf in order:
        conflicts = sorted((p for p in placed if p.overlaps_in_time(buf)), key=lambda p: p.offset)
        offset = 0
        for p in conflicts:
            if offset + buf.size <= p.offset:
                break  # fits in the gap below p
            offset = max(offset, align_up(p.offset + p.size))
        buf.offset = offset
        placed.append(buf)

    offsets = {t: b.offset for b in buffers for t in b.tensors}
    arena_bytes = align_up(max((b.offset + b.size for b in buffers), default=0))
    return ArenaPlan(offsets=offsets, arena_bytes=max(arena_bytes, ALIGNMENT), buffers=buffers)
