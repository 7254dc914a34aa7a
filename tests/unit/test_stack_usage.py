"""Worst-case stack from a hand-written GCC call graph (-fcallgraph-info=su format)."""
from __future__ import annotations

from harness.targets.mcu.stack_usage import EXCEPTION_FRAME_BYTES, EXCEPTION_FRAME_FPU_BYTES, estimate_stack, parse_callgraph

CALLGRAPH = r'''graph: { title: "main.c"
node: { title: "Reset_Handler" label: "Reset_Handler\nstartup.c:60:6\n8 bytes (static)" }
node: { title: "main" label: "main\nmain.c:101:5\n72 bytes (static)" }
node: { title: "main.c:send_hello" label: "send_hello\nmain.c:40:13\n112 bytes (static)" }
node: { title: "hil_send_frame" label: "hil_send_frame\nprotocol.c:1:1\n40 bytes (static)" }
node: { title: "hil_model_encode" label: "hil_model_encode\nmodel.c:1:1\n200 bytes (static)" }
node: { title: "memcpy" label: "__builtin_memcpy\n<built-in>" shape : ellipse }
node: { title: "SysTick_Handler" label: "SysTick_Handler\ntimer.c:1:1\n0 bytes (static)" }
edge: { sourcename: "Reset_Handler" targetname: "main" label: "startup.c:70:5" }
edge: { sourcename: "main" targetname: "main.c:send_hello" label: "main.c:106:5" }
edge: { sourcename: "main" targetname: "hil_model_encode" label: "main.c:88:18" }
edge: { sourcename: "main.c:send_hello" targetname: "hil_send_frame" label: "main.c:70:5" }
edge: { sourcename: "main.c:send_hello" targetname: "memcpy" }
}
'''


def test_deepest_path_plus_interrupt_frame() -> None:
    estimate = estimate_stack(parse_callgraph(CALLGRAPH))
    # Reset_Handler 8 + main 72 + max(send_hello 112 + send_frame 40, model 200) = 280, + SysTick 0 + 32.
    assert estimate.max_bytes == 8 + 72 + 200 + EXCEPTION_FRAME_BYTES
    assert estimate.unknown_callees == ("memcpy",)
    assert not estimate.bounded


def test_fpu_exception_frame() -> None:
    estimate = estimate_stack(parse_callgraph(CALLGRAPH), fpu=True)
    assert estimate.max_bytes == 8 + 72 + 200 + EXCEPTION_FRAME_FPU_BYTES


def test_recursion_and_dynamic_frames_are_flagged() -> None:
    text = r'''node: { title: "Reset_Handler" label: "R\nx\n16 bytes (dynamic,bounded)" }
edge: { sourcename: "Reset_Handler" targetname: "Reset_Handler" }'''
    estimate = estimate_stack(parse_callgraph(text))
    assert estimate.max_bytes == 16
    assert estimate.recursive == ("Reset_Handler",)
    assert estimate.dynamic == ("Reset_Handler",)
    assert not estimate.bounded
