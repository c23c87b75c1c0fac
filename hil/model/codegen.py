"""Emits the one C file a compiled model consists of: `hil_model.c`.

It defines what device_fw/core/include/hil_model.h declares: `hil_model_info` (name, sha256, arena size,
input and output tensor descriptors), the static 16-byte aligned tensor arena with `hil_model_arena()`, and
`hil_model_invoke()`, which calls the kernels of device_fw/core/kernels in graph order, each followed by
`hil_model_op_done(op index)` (the firmware's per-operator cycle hook). Weights, biases and
requantization parameters are `static const` arrays (flash on the device), one params struct per operator.
The output is deterministic for a given model and meant to be read: every operator is introduced by a
comment naming it and its shapes.

An operator with a specialised kernel (hil.model.lowering.fast) gets that kernel's data and call. Where the
generic kernel is one a port may hand to a vendor library (HIL_USE_ESP_NN, hil_kernels.h), the generic data and
call sit beside them under `#if defined(HIL_USE_ESP_NN)`, so such a build calls the generic entry point with a
filled params struct and a default build compiles only the specialised data.
"""

from __future__ import annotations

import numpy as np

from hil.model.compiler import SCRATCH_ID_BASE, ConstArray, KernelCall, LoweredModel, TensorSummary, scratch_id
from hil.model.lowering.fast import VENDOR_KERNELS

# Code bytes of each kernel function for the lx106 (-O2, literal pools included, with the file-local functions it
# calls), measured from this tree's kernels by measure_kernel_code_bytes(); the estimate in model.json adds the
# distinct kernels a default build calls, the per-call code of hil_model_invoke and the model's small functions.
# tests/test_arena.py re-measures them when the cross compiler is installed. A kernel missing from the table
# counts DEFAULT_KERNEL_CODE_BYTES.
KERNEL_CODE_BYTES: dict[str, int] = {
    "hil_add": 737,
    "hil_add_table": 349,
    "hil_average_pool_2d": 491,
    "hil_concatenation": 111,
    "hil_conv_2d": 613,
    "hil_conv_2d_16x8": 734,
    "hil_conv_2d_1x1": 1745,
    "hil_conv_2d_1x1_16x8": 1587,
    "hil_conv_2d_1x1_u8": 3183,
    "hil_conv_2d_patch": 1976,
    "hil_conv_2d_patch_16x8": 1849,
    "hil_conv_2d_patch_u8": 3478,
    "hil_depthwise_conv_2d": 641,
    "hil_depthwise_conv_2d_16x8": 758,
    "hil_depthwise_conv_2d_3x3": 2548,
    "hil_depthwise_conv_2d_3x3_16x8": 2228,
    "hil_depthwise_conv_2d_taps": 1064,
    "hil_depthwise_conv_2d_taps_16x8": 1304,
    "hil_dequantize": 101,
    "hil_fully_connected": 380,
    "hil_fully_connected_16x8": 490,
    "hil_hard_swish": 639,
    "hil_leaky_relu": 513,
    "hil_leaky_relu_i16": 513,
    "hil_logistic": 968,
    "hil_logistic_i16": 153,
    "hil_max_pool_2d": 356,
    "hil_mean": 607,
    "hil_mean_i16": 607,
    "hil_mul": 572,
    "hil_mul_i16": 572,
    "hil_pad": 181,
    "hil_quantize": 199,
    "hil_relu": 317,
    "hil_relu6": 46,
    "hil_relu6_i16": 39,
    "hil_relu_i16": 317,
    "hil_requantize": 303,
    "hil_softmax": 1800,
    "hil_softmax_i16": 816,
    "hil_strided_slice": 214,
    "hil_strided_slice_i16": 214,
    "hil_sub": 840,
    "hil_sub_i16": 840,
    "hil_tanh": 953,
    "hil_tanh_i16": 155,
}
DEFAULT_KERNEL_CODE_BYTES = 400
CALL_CODE_BYTES = 16  # load three or four arguments, call the kernel, call hil_model_op_done
MODEL_CODE_BYTES = 48  # hil_model_arena, hil_model_invoke's frame

_VALUES_PER_LINE = {"int8_t": 20, "uint8_t": 20, "int16_t": 12, "int32_t": 8, "int64_t": 6}
_DTYPE_C = {
    "int8": ("int8_t", "HIL_DTYPE_INT8"),
    "int16": ("int16_t", "HIL_DTYPE_INT16"),
    "float32": ("float", "HIL_DTYPE_FLOAT32"),
}
# hil_model.h has no float32 code (the protocol has none: device_fw/PROTOCOL.md); a model with a float32 graph
# input or output (QUANTIZE / DEQUANTIZE at the graph's edge) defines one for the host model runner.
_FLOAT32_CODE = (
    "#ifndef HIL_DTYPE_FLOAT32\n"
    "#define HIL_DTYPE_FLOAT32 3 /* float32 graph input/output: host model runner only, not in PROTOCOL.md */\n"
    "#endif\n"
)


def _comment(text: str) -> str:
    """Text safe inside a C block comment (no comment delimiters, no trigraphs under -std=c99)."""
    return text.replace("*/", "* /").replace("/*", "/ *").replace("??", "? ?")


def _c_int(v: int) -> str:
    v = int(v)
    if v == -(2**31):
        return "(-2147483647 - 1)"  # -2147483648 would be the negation of a wider literal
    return str(v)


def _c_float(x: float) -> str:
    s = str(np.float32(x))  # shortest decimal that reads back as the same float32
    if not any(ch in s for ch in ".en"):
        s += ".0"
    return s + "f"


def _c_value(v: object) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, float):
        return _c_float(v)
    if isinstance(v, list | tuple):
        return "{" + ", ".join(_c_int(x) for x in v) + "}"
    return _c_int(int(v))  # type: ignore[call-overload]


def _array(c: ConstArray) -> str:
    per_line = _VALUES_PER_LINE[c.ctype]
    values = [_c_int(v) for v in c.values.reshape(-1)]
    lines = ["    " + ", ".join(values[i : i + per_line]) + "," for i in range(0, len(values), per_line)]
    comment = f" /* {_comment(c.comment)} */" if c.comment else ""
    return f"static const {c.ctype} {c.symbol}[{max(len(values), 1)}] = {{{comment}\n" + "\n".join(lines) + "\n};\n"


def _params_symbol(call: KernelCall, fast: bool) -> str:
    return f"op{call.op_index}_fast" if fast else f"op{call.op_index}_params"


def _params(call: KernelCall, fast: bool = False) -> str:
    width = max(len(k) for k in call.params)
    body = "\n".join(f"    .{k:<{width}} = {_c_value(v)}," for k, v in call.params.items())
    return f"static const {call.params_type} {_params_symbol(call, fast)} = {{\n{body}\n}};\n"


def _vendor(call: KernelCall) -> bool:
    """A generic kernel a port may dispatch to a vendor library: keep its data and call under HIL_USE_ESP_NN."""
    return call.kernel in VENDOR_KERNELS


def measure_kernel_code_bytes(cc: str = "xtensa-lx106-elf-gcc") -> dict[str, int]:
    """Code bytes of every kernel function for the lx106 (how KERNEL_CODE_BYTES was made): each global function
    of device_fw/core/kernels compiled as the firmware's Makefile does (-O2, function sections, literal pools
    beside the code), plus the file-local functions it calls, transitively (what --gc-sections keeps)."""
    import re
    import subprocess
    import tempfile
    from pathlib import Path

    from hil.model.hostrun import INCLUDE, KERNELS

    sizes: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for src in sorted(KERNELS.glob("*.c")):
            obj = Path(tmp) / (src.stem + ".o")
            subprocess.run([cc, "-std=c99", "-O2", "-mtext-section-literals", "-ffunction-sections",
                            "-fdata-sections", "-I", str(INCLUDE), "-c", str(src), "-o", str(obj)],
                           check=True, capture_output=True)  # fmt: skip
            nm = subprocess.run([cc.replace("gcc", "nm"), "-S", str(obj)], check=True, capture_output=True, text=True)
            funcs: dict[str, tuple[int, bool]] = {}
            for line in nm.stdout.splitlines():
                parts = line.split()
                if len(parts) == 4 and parts[2] in "Tt":
                    funcs[parts[3]] = (int(parts[1], 16), parts[2] == "T")
            dump = subprocess.run(
                [cc.replace("gcc", "objdump"), "-dr", str(obj)], check=True, capture_output=True, text=True
            ).stdout
            calls: dict[str, set[str]] = {}
            current = None
            for line in dump.splitlines():
                m = re.match(r"^[0-9a-f]+ <([^>]+)>:", line)
                if m:
                    current = m.group(1)
                    calls.setdefault(current, set())
                    continue
                m = re.search(r"R_XTENSA_\w+\s+\.?(?:text\.)?([A-Za-z_][A-Za-z0-9_]*)", line)
                if current and m and m.group(1) in funcs and m.group(1) != current:
                    calls[current].add(m.group(1))
            for name, (_size, is_global) in funcs.items():
                if not is_global:
                    continue
                seen, todo = {name}, [name]
                while todo:
                    for callee in calls.get(todo.pop(), ()):
                        if callee not in seen and not funcs[callee][1]:
                            seen.add(callee)
                            todo.append(callee)
                sizes[name] = sum(funcs[f][0] for f in seen)
    return dict(sorted(sizes.items()))


def code_bytes_estimate(lowered: LoweredModel) -> int:
    """Code bytes of a default build's model: the distinct kernels it calls, plus per-call and model code."""
    kernels = {lowered.runs(c).kernel for c in lowered.calls if c.kernel is not None}
    n_calls = sum(1 for c in lowered.calls if c.kernel is not None)
    kernel_bytes = sum(KERNEL_CODE_BYTES.get(k, DEFAULT_KERNEL_CODE_BYTES) for k in kernels if k)
    return kernel_bytes + n_calls * CALL_CODE_BYTES + MODEL_CODE_BYTES


def _tensor_info(t: TensorSummary) -> str:
    dims = list(t.shape) + [0] * (4 - len(t.shape))
    return (
        f"    {{ /* {_comment(t.name)} */\n"
        f"        .dtype = {_DTYPE_C[t.dtype][1]},\n"
        f"        .rank = {len(t.shape)},\n"
        f"        .dims = {{{', '.join(str(d) for d in dims)}}},\n"
        f"        .zero_point = {t.zero_point},\n"
        f"        .scale = {_c_float(t.scale)},\n"
        f"        .bytes = {t.bytes},\n"
        f"        .arena_offset = {t.arena_offset},\n"
        f"    }},"
    )


def _c_string(s: str) -> str:
    """A C string literal of the UTF-8 bytes of s."""
    out = []
    for byte in s.encode("utf-8"):
        ch = chr(byte)
        if ch in '"\\?':  # '?' too: "??=" and friends are trigraphs in C99
            out.append("\\" + ch)
        elif 32 <= byte < 127:
            out.append(ch)
        else:
            out.append(f"\\{byte:03o}")  # octal escapes stop after three digits, unlike \\x
    return '"' + "".join(out) + '"'


def generate_c(lowered: LoweredModel, name: str, sha256: str) -> str:
    graph, plan = lowered.graph, lowered.plan
    kernel_calls = [c for c in lowered.calls if c.kernel is not None]
    out: list[str] = []
    out.append(
        f"/* hil_model.c for model '{_comment(name)}', generated by hil.model.compiler from a .tflite with\n"
        f" * sha256 {sha256}. Do not edit: regenerate from the .tflite instead.\n"
        f" *\n"
        f" * {len(lowered.calls)} operators ({len(kernel_calls)} kernel calls), "
        f"{lowered.macs} MACs per inference,\n"
        + (
            f" * {len(lowered.folded)} more folded at compile time (shape arithmetic: "
            f"{', '.join(sorted({op.opcode for op in lowered.folded}))}),\n"
            if lowered.folded
            else ""
        )
        + f" * tensor arena {plan.arena_bytes} bytes, constant data {lowered.weights_bytes} bytes"
        f"{' (specialised kernels)' if lowered.specialised else ' (generic kernels only)'}.\n"
        + (
            " * The inputs stay intact through an inference.\n"
            if plan.inputs_preserved
            else " * An inference may overwrite its inputs in the arena: load them again before the next one.\n"
        )
        + " * Bit-exact with TensorFlow Lite Micro's reference kernels. */\n"
    )
    out.append('#include <stddef.h>\n#include <stdint.h>\n\n#include "hil_kernels.h"\n#include "hil_model.h"\n')
    if any(t.dtype == "float32" for t in (*lowered.inputs, *lowered.outputs)):
        out.append(_FLOAT32_CODE)
    out.append(
        "#if defined(__GNUC__) || defined(__clang__)\n"
        "#define HIL_ARENA_ALIGN __attribute__((aligned(16)))\n"
        "#else\n"
        '#error "hil_model.c needs a compiler extension to align the tensor arena to 16 bytes"\n'
        "#endif\n"
    )

    lines = [
        "/* Tensor arena. Offsets are planned at compile time (hil/model/planner.py); tensors whose",
        " * lifetimes do not overlap share bytes.",
        " *",
    ]
    for buf in sorted(plan.buffers, key=lambda b: (b.offset, b.tensors[0])):
        for t in buf.tensors:
            if t >= SCRATCH_ID_BASE:
                lines.append(f" *   [{buf.offset:>7}, +{buf.size:>6}) scratch of op {t - SCRATCH_ID_BASE}")
                continue
            tensor = graph.tensors[t]
            tname = _comment(tensor.name if len(tensor.name) <= 60 else tensor.name[:57] + "...")
            shape = "x".join(map(str, tensor.shape))
            lines.append(f" *   [{buf.offset:>7}, +{buf.size:>6}) tensor {t:>3} {shape:<14} {tname}")
    lines.append(" */")
    out.append("\n".join(lines))
    out.append(f"static int8_t hil_arena[{plan.arena_bytes}] HIL_ARENA_ALIGN;\n")
    out.append("int8_t *hil_model_arena(void) { return hil_arena; }\n")

    for call in lowered.calls:
        header = f"/* ---- op {call.op_index}: {call.opcode} {_comment(call.summary)} ---- */\n"
        if call.kernel is None:
            out.append(header + "/* No code: the output aliases the input's bytes in the arena. */\n")
            continue
        generic = "".join(_array(c) + "\n" for c in call.consts) + _params(call)
        if call.fast is None:
            out.append(header + generic)
            continue
        fast = (
            f"/* Specialised: {call.fast.kernel} (input zero point folded into the bias, weights in loop order). */\n"
            + "".join(_array(c) + "\n" for c in call.fast.consts)
            + _params(call.fast, fast=True)
        )
        if _vendor(call):
            out.append(header + "#if defined(HIL_USE_ESP_NN)\n" + generic + "#else\n" + fast + "#endif\n")
        else:
            out.append(header + fast)

    def info_array(symbol: str, tensors: list[TensorSummary]) -> str:
        if not tensors:
            return ""
        entries = "\n".join(_tensor_info(t) for t in tensors)
        return f"static const hil_tensor_info_t {symbol}[{len(tensors)}] = {{\n{entries}\n}};\n"

    out.append(info_array("hil_inputs", lowered.inputs) + info_array("hil_outputs", lowered.outputs))
    digest = bytes.fromhex(sha256)
    digest_lines = ",\n".join(
        "        " + ", ".join(f"0x{b:02x}" for b in digest[i : i + 16]) for i in range(0, 32, 16)
    )
    out.append(
        "const hil_model_info_t hil_model_info = {\n"
        f"    .name = {_c_string(name)},\n"
        f"    .sha256 = {{\n{digest_lines},\n    }},\n"
        f"    .arena_bytes = {plan.arena_bytes},\n"
        f"    .n_inputs = {len(lowered.inputs)},\n"
        f"    .n_outputs = {len(lowered.outputs)},\n"
        f"    .inputs = {'hil_inputs' if lowered.inputs else 'NULL'},\n"
        f"    .outputs = {'hil_outputs' if lowered.outputs else 'NULL'},\n"
        f"    .inputs_consumed = {0 if plan.inputs_preserved else 1},\n"
        "};\n"
    )

    def pointer(a: int | str) -> str:
        if not isinstance(a, int):
            return a  # a constant array
        ctype = _DTYPE_C[graph.tensors[a].dtype][0]
        where = f"hil_arena + {plan.offsets[a]}"
        # int16 and float tensors sit at 16-byte aligned offsets (planner.py), so the cast is aligned.
        return where if ctype == "int8_t" else f"({ctype} *)(void *)({where})"

    def call_line(call: KernelCall, fast: bool) -> str:
        args = [f"&{_params_symbol(call, fast)}"]
        for a in list(call.args) + list(call.outputs):
            if isinstance(a, list):  # an array of input pointers (CONCATENATION): a C99 compound literal
                args.append("(const void *const[]){" + ", ".join(pointer(x) for x in a) + "}")
            else:
                args.append(pointer(a))
        if call.scratch_bytes:
            args.append(scratch_pointer(call))
        return f"    {call.kernel}({', '.join(args)});\n"

    def scratch_pointer(call: KernelCall) -> str:
        where = f"hil_arena + {plan.offsets[scratch_id(call)]}"
        return f"(int16_t *)(void *)({where})" if call.kernel.endswith("_16x8") else where

    calls = []
    for call in kernel_calls:
        if call.fast is None:
            code = call_line(call, False)
        elif _vendor(call):
            code = (
                "#if defined(HIL_USE_ESP_NN)\n"
                + call_line(call, False)
                + "#else\n"
                + call_line(call.fast, True)
                + "#endif\n"
            )
        else:
            code = call_line(call.fast, True)
        calls.append(f"    /* op {call.op_index}: {call.opcode} */\n{code}    hil_model_op_done({call.op_index});")
    body = "\n".join(calls) if calls else "    /* no kernels: every output aliases an input */"
    out.append(
        "/* Runs the graph on the inputs already in the arena; the kernels cannot fail (every shape and\n"
        " * parameter was checked by the compiler), so this always returns 0. hil_model_op_done() (hil_model.h)\n"
        " * lets the firmware time each operator. */\n"
        f"int hil_model_invoke(void) {{\n{body}\n    return 0;\n}}\n"
    )
    return "\n".join(out)
