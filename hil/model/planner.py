"""Static arena plan: where each activation tensor lives in the single, statically allocated tensor arena.

Every non-constant tensor (graph inputs and outputs included) gets an offset. A buffer is live from the step
that writes it to the last step that reads it; graph inputs are written before the first step and graph outputs
are read after the last. Buffers whose lifetimes overlap must not overlap in memory. Placement is greedy in the
style of TFLM's GreedyMemoryPlanner: largest buffers first, each at the lowest 16-byte aligned offset that fits
between the buffers already placed whose lifetimes intersect its own.

Graph inputs live, like any tensor, until their last reader: later tensors may take their bytes, so an
inference may overwrite its inputs, as in TFLM. `preserve_inputs=True` keeps them intact for the whole
inference instead (INFER repeatable on one loaded input, at the cost of their size in arena bytes);
`ArenaPlan.inputs_preserved` says whether a plan leaves every input intact, which the firmware needs to know
(device_fw/PROTOCOL.md: a second INFER then needs a new LOAD_INPUT).

Three ways to share bytes:
- aliases (RESHAPE and friends only relabel bytes): one buffer whose lifetime is the union of its members';
- in place: a kernel that reads each element before it writes the same position (elementwise ops,
  activations, a slice copying rows forward) may write its output over an input whose last reader it is;
  the caller lists such (step, input, output) candidates and the planner takes those where the input dies at
  that step and is neither a graph output nor a preserved graph input;
- scratch: a kernel's temporary buffer lives at its own step only.
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
    in_place: bool = False  # a kernel writes into it while it holds an earlier member's value

    def overlaps_in_time(self, other: Buffer) -> bool:
        return self.first_use <= other.last_use and other.first_use <= self.last_use

    def overlaps_in_memory(self, other: Buffer) -> bool:
        return self.offset < other.offset + other.size and other.offset < self.offset + self.size


@dataclass
class ArenaPlan:
    offsets: dict[int, int]  # tensor index (or scratch id) -> byte offset
    arena_bytes: int
    buffers: list[Buffer] = field(default_factory=list)
    inputs_preserved: bool = True  # no graph input's bytes are written during an inference
    in_place: list[tuple[int, int, int]] = field(default_factory=list)  # (step, input, output) taken


def plan_arena(
    sizes: dict[int, int],
    steps: list[tuple[list[int], list[int]]],
    graph_inputs: list[int],
    graph_outputs: list[int],
    aliases: list[tuple[int, int]] | None = None,
    *,
    preserve_inputs: bool = False,
    in_place: list[tuple[int, int, int]] | None = None,
    scratch: dict[int, int] | None = None,
) -> ArenaPlan:
    """Plans the arena.

    sizes: bytes of every arena tensor (and of every scratch id). steps: (read tensors, written tensors) per
    kernel call, in order. aliases: (source, alias) pairs; the alias shares the source's bytes. in_place:
    (step, input, output) candidates. scratch: scratch id -> the step that uses it.
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
        if preserve_inputs:
            touch(t, n_steps)  # never overwritten: INFER repeatable on the loaded input
    for i, (reads, writes) in enumerate(steps):
        for t in list(reads) + list(writes):
            touch(t, i)
    for t in graph_outputs:
        touch(t, n_steps)
    for sid, step in (scratch or {}).items():
        touch(sid, step)

    outputs_roots = {find(t) for t in graph_outputs}
    inputs_roots = {find(t) for t in graph_inputs}
    written_in_place: set[int] = set()
    taken: list[tuple[int, int, int]] = []
    for step, src, dst in sorted(in_place or []):
        ri, ro = find(src), find(dst)
        if ri == ro or last.get(ri) != step or first.get(ro) != step or ri in outputs_roots:
            continue
        if preserve_inputs and ri in inputs_roots:
            continue
        members_size = max(sizes[t] for t in sizes if find(t) == ro)
        if members_size > max(sizes[t] for t in sizes if find(t) == ri):
            continue
        parent[ro] = ri
        last[ri] = max(last[ri], last[ro])
        if ro in outputs_roots:
            outputs_roots.add(ri)
        written_in_place.add(ri)
        taken.append((step, src, dst))

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
                in_place=root in written_in_place,
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
    by_tensor = {t: b for b in buffers for t in b.tensors}
    preserved = True
    for t in graph_inputs:
        mine = by_tensor[t]
        if mine.in_place or any(b is not mine and b.overlaps_in_memory(mine) for b in buffers):
            preserved = False
    return ArenaPlan(
        offsets=offsets,
        arena_bytes=max(arena_bytes, ALIGNMENT),
        buffers=buffers,
        inputs_preserved=preserved,
        in_place=taken,
    )
