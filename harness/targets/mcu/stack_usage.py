"""Worst-case stack estimate from GCC's per-function stack usage and call graph.

GCC's ``-fstack-usage`` writes each function's frame size to a ``.su`` file; ``-fcallgraph-info=su``
writes the same sizes plus the call edges to a ``.ci`` file (VCG format). Frame sizes alone say
nothing about depth, so the estimate walks the call graph: the deepest path from the reset
handler, plus the deepest interrupt handler and the hardware exception frame it stacks.

The result is a lower bound, flagged as such, when the graph has recursion, dynamically sized
frames, or callees without stack figures (library code compiled without ``-fstack-usage``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

_NODE = re.compile(r'node: \{ title: "(?P<title>[^"]+)" label: "(?P<label>[^"]*)"')
_EDGE = re.compile(r'edge: \{ sourcename: "(?P<source>[^"]+)" targetname: "(?P<target>[^"]+)"')
_FRAME = re.compile(r"\\n(?P<bytes>\d+) bytes \((?P<kind>[a-z,]+)\)")

# Cortex-M exception entry pushes 8 words; with an active FPU context, 26 words.
EXCEPTION_FRAME_BYTES = 32
EXCEPTION_FRAME_FPU_BYTES = 104


@dataclass
class CallGraph:
    """Functions' own frame sizes and who calls whom, merged from ``.ci`` files."""

    frames: dict[str, int] = field(default_factory=dict)
    dynamic: set[str] = field(default_factory=set)  # frames sized at run time
    calls: dict[str, set[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class StackEstimate:
    """Worst-case stack bytes and what makes it uncertain."""

    max_bytes: int
    bounded: bool  # False: recursion, dynamic frames or unknown callees; max_bytes is a lower bound
    unknown_callees: tuple[str, ...]
    recursive: tuple[str, ...]
    dynamic: tuple[str, ...]


def parse_callgraph(text: str, graph: CallGraph | None = None) -> CallGraph:
    """Add the nodes and edges of one ``.ci`` file's text to ``graph`` (a new one if None)."""
    graph = graph if graph is not None else CallGraph()
    for node in _NODE.finditer(text):
        frame = _FRAME.search(node["label"])
        if frame:  # nodes without a frame are only declarations of callees
            graph.frames[node["title"]] = int(frame["bytes"])
            if "dynamic" in frame["kind"]:
                graph.dynamic.add(node["title"])
    for edge in _EDGE.finditer(text):
        graph.calls.setdefault(edge["source"], set()).add(edge["target"])
    return graph


def load_callgraph(ci_files: list[Path]) -> CallGraph:
    """Merge several ``.ci`` files into one call graph."""
    graph = CallGraph()
    for path in ci_files:
        parse_callgraph(path.read_text(), graph)
    return graph


def _function_name(title: str) -> str:
    """Static functions are titled ``file:name``; the name is what matters for reporting."""
    return title.rsplit(":", 1)[-1]


def estimate_stack(graph: CallGraph, entry: str = "Reset_Handler", fpu: bool = False) -> StackEstimate:
    """Deepest stack from ``entry`` plus the deepest ``*_Handler`` interrupt on top of it."""
    unknown: set[str] = set()
    recursive: set[str] = set()
    dynamic: set[str] = set()
    memo: dict[str, int] = {}

    def depth(title: str, on_path: frozenset[str]) -> int:
        if title in memo:
            return memo[title]
        if title in on_path:
            recursive.add(_function_name(title))
            return 0
        if title not in graph.frames:
            unknown.add(_function_name(title))
            return 0
        if title in graph.dynamic:
            dynamic.add(_function_name(title))
        deepest_callee = max(
            (depth(callee, on_path | {title}) for callee in graph.calls.get(title, ())), default=0
        )
        memo[title] = graph.frames[title] + deepest_callee
        return memo[title]

    thread_bytes = depth(entry, frozenset())
    handlers = [t for t in graph.frames if t.endswith("_Handler") and _function_name(t) != entry]
    handler_bytes = max((depth(h, frozenset()) for h in handlers), default=0)
    if handlers:
        handler_bytes += EXCEPTION_FRAME_FPU_BYTES if fpu else EXCEPTION_FRAME_BYTES
    return StackEstimate(
        max_bytes=thread_bytes + handler_bytes,
        bounded=not (unknown or recursive or dynamic),
        unknown_callees=tuple(sorted(unknown)),
        recursive=tuple(sorted(recursive)),
        dynamic=tuple(sorted(dynamic)),
    )
