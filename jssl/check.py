"""``python -m jssl.check``: is this machine computing the right thing, and how fast?

    python -m jssl.check                                     # SimCLR, digits preset
    python -m jssl.check --config=configs/dino.py:cifar10 --out=check.json
    python -m jssl.check --config=configs/simclr.py:digits --config.batch_size=128

The command to run first on a new machine: 20 s for the digits presets on a 2-core CPU;
SimCLR's ResNet-18 CIFAR preset (batch 512) took 25 min and 21 GB there (2026-12-06),
most of it its float64 gradients: one, and two more where the gradient is beyond 1e-4
(the conditioning probe), one more where N devices differ from 1 beyond 1e-5 (on a GPU
they run on the card; on a TPU, which has no float64, on the host's CPU). It builds the
config's real train step on every local device and prints one line per verdict, then
writes them all to ``--out`` (JSON):

- machine: backend, device kind and count, processes, library versions;
- numerics: the step's gradient against the same program computed in float64
  (``jssl.reference``) on the same batch, and the state after one SGD step on the
  N local devices against one device (every leaf: parameters, optimiser, BatchNorm
  statistics, method state); "ok" within float32 rounding of a well-conditioned step,
  "--" within float32 rounding of long sums that nearly cancel, or of a step whose
  float64 gradient itself moves that much when its float32 inputs move by one unit in
  the last place (measured), "FAIL" beyond;
- speed: compile time, step time and images/s, XLA's FLOP count of the step, the
  FLOP rate it reaches and its share of the device's peak (a table of dense peaks for
  common GPUs and TPUs; on a CPU, a matmul rate measured here);
- memory: the compiled step's buffers against the device's memory;
- input: the configured data source's host rate (read, decode, batch; measured alone)
  against the step's rate, with a verdict;
- program: host callbacks or transfers inside the step, whether the state's buffers
  are donated to the step's outputs, and the collectives each device runs per step with
  the bytes of their results (all-reduce, all-gather, ...).

The functions below are the checks themselves; the tests call them directly.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import re
import resource
import sys
import tempfile
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jssl import cli, reference, run_info
from jssl.train_step import TrainState, loss_and_grads, step_views

# How far a float32 step may be from the same step in float64 (``leaf_errors``), and the
# state after one step on N devices from 1 device. Up to ``PRECISE``: float32 rounding
# of a well-conditioned step (4e-7 to 4e-6 on the smoke presets' ConvNets and MAE, 4.4e-5
# on DINO's ViT, whose teacher temperature 0.04 sharpens the softmax). Up to ``LIMIT``:
# still float32 rounding, of long sums that nearly cancel (a BatchNorm network's
# per-channel gradient sums over batch x height x width: 5.4e-4 on SimCLR's digits
# preset, batch 256 at 16 px, with conv_impl=xla and no YNNPACK fusions, 2026-12-05;
# benchmarks/float32_gradient.py),
# reported but not failed. Beyond ``LIMIT`` (a 1% error is 10x it): a wrong step.
PRECISE = 1e-4
LIMIT = 1e-3
# How closely the state after one step on N devices must agree with 1 device, leaf by leaf
# in root mean square (``leaf_errors(rms=True)``): the sums run in another order, and the
# equivalence tests' presets differ by 2e-7 (MAE) to 7e-6 (BYOL's Adam second moment)
# with YNNPACK fusions, 4e-7 to 4.5e-5 (SeLa's) without them at the suite's compile
# settings.
# Where the layouts' float32 gradients are themselves further from float64 (DINO's ViT,
# 5e-5; SeLa's digits ConvNet on 1 device without YNNPACK fusions, 1.6e-5, and 2 devices
# from it 2.5e-5 in the gradient, 4.5e-5 in Adam's second moment), they may differ by
# the sum of their distances, and an Adam state, whose second moment is the gradient
# squared, by twice that (``layout_limit``): no layout can be asked to agree beyond
# float32's precision.
EQUAL = 1e-5
# A leaf is judged against at least this share of the largest leaf of its group
# (``leaf_errors``): float32 noise in a gradient that is zero in exact arithmetic.
FLOOR = 1e-2
# Beyond ``LIMIT``, the gradient is judged against its own conditioning (``sensitivity``):
# how far the float64 gradient moves when every float32 input moves by one unit in the
# last place. Float32 rounds every intermediate value as well, not only the inputs, so its
# error may be up to ``CONDITION`` times that (SimCLR's ResNet-18 CIFAR preset at batch
# 64: error 4.5e-2 against a sensitivity of 5.1e-2); a wrong step on a well-conditioned
# batch is far beyond it (a 1% error against sensitivities of 1e-6).
CONDITION = 10.0

# Dense (no sparsity) peak TFLOP/s per chip as (bfloat16, float32) from the vendors'
# data sheets; the first name found in jax's device_kind wins.
PEAK_TFLOPS = {
    "H200": (989.0, 67.0),
    "H100 PCIe": (756.0, 51.0),
    "H100": (989.0, 67.0),
    "GH200": (989.0, 67.0),
    "B200": (2250.0, 80.0),
    "A100": (312.0, 19.5),
    "L40S": (362.0, 91.6),
    "L4": (121.0, 30.3),
    "A10": (125.0, 31.2),
    "V100": (125.0, 15.7),
    "T4": (65.0, 8.1),
    "TPU v6": (918.0, None),
    "TPU v5p": (459.0, None),
    "TPU v5 lite": (197.0, None),
    "TPU v5e": (197.0, None),
    "TPU v4": (275.0, None),
    "TPU v3": (123.0, None),
    "TPU v2": (45.0, None),
}

_HOST_CALLBACKS = re.compile(r'custom_call_target="[^"]*(callback|host)[^"]*"')
_TRANSFERS = re.compile(r"\b(send|recv|infeed|outfeed)(-done|-start)?\(")
# A collective of the (per-device) optimised HLO and its result type: one array, or a tuple
# of arrays reduced together. An asynchronous one counts at its -done, whose type is the
# result (its -start's tuple also holds the operands and, for some kinds, contexts).
_COLLECTIVE = re.compile(
    r"= (\([^=]*?\)|\S+) "
    r"(all-gather|all-reduce|reduce-scatter|all-to-all|collective-permute)(-done)?\("
)
_ARRAY = re.compile(r"\b(pred|[suf]\d+|bf16|c64|c128)\[([\d,]*)\]")
_ITEM_BYTES = {"pred": 1, "bf16": 2, "c64": 8, "c128": 16}


def _array_bytes(dtype: str, dims: str) -> int:
    size = _ITEM_BYTES.get(dtype) or int(dtype[1:]) // 8
    return size * math.prod(int(d) for d in dims.split(",") if d)


def collectives(text: str) -> dict[str, dict[str, int]]:
    """Each kind of collective in a compiled program's text: how many, and the bytes of
    their results on one device."""
    found: dict[str, dict[str, int]] = {}
    for m in _COLLECTIVE.finditer(text):
        entry = found.setdefault(m.group(2), {"count": 0, "bytes": 0})
        entry["count"] += 1
        entry["bytes"] += sum(_array_bytes(*a) for a in _ARRAY.findall(m.group(1)))
    return found


@dataclasses.dataclass
class Verdict:
    """One line of the report: ``name: text``, and whether it passed (None: a figure)."""

    name: str
    text: str
    ok: bool | None = None
    values: dict[str, Any] = dataclasses.field(default_factory=dict)

    def line(self) -> str:
        mark = {True: "ok", False: "FAIL", None: "--"}[self.ok]
        return f"{mark:>4}  {self.name}: {self.text}"


# ----------------------------------------------------------------------------- numerics


def leaf_errors(
    got, want, *, roots=(), floor: float = FLOOR, rms: bool = False
) -> dict[str, float]:
    """Per leaf of two trees of the same structure: max |got - want| / scale, where scale is
    the leaf's max |want|, but at least ``floor`` times the largest max |want| of its group.
    With ``rms``, root mean squares in place of the maxima (a norm-wise relative error).

    A gradient that is zero in exact arithmetic (a bias before a normalisation, the key
    bias of attention) is float32 rounding noise, different for every order of the sums;
    the floor judges such a leaf against the size of the gradients around it. A group is
    the leaves whose paths agree up to the first name in ``roots`` (the parameters' top
    names: "backbone", "head", ...), e.g. every ``opt_state/0/mu/...``; with no roots,
    the whole tree. Integer leaves must be equal (else 1.0).
    """
    size = _rms if rms else (lambda x: float(np.max(np.abs(x))))
    flat = jax.tree_util.tree_flatten_with_path(got)[0]
    pairs = [
        (_names(path), np.asarray(a), np.asarray(b))
        for (path, a), b in zip(flat, jax.tree.leaves(want), strict=True)
    ]

    def group(names):
        if not roots:
            return ()
        return names[: next((i for i, n in enumerate(names) if n in roots), len(names))]

    largest: dict[tuple, float] = {}
    for names, _, b in pairs:
        if b.dtype.kind in "fc" and b.size:
            key = group(names)
            largest[key] = max(largest.get(key, 0.0), size(b))
    out = {}
    for names, a, b in pairs:
        name = "/".join(names)
        if b.dtype.kind not in "fc":
            out[name] = 0.0 if np.array_equal(a, b) else 1.0
            continue
        if not b.size:
            out[name] = 0.0
            continue
        diff = size(a.astype(np.float64) - b.astype(np.float64))
        scale = max(size(b), floor * largest.get(group(names), 0.0))
        out[name] = diff / scale if scale > 0 else (0.0 if diff == 0 else math.inf)
    return out


def _rms(x) -> float:
    return float(np.sqrt(np.mean(np.square(np.asarray(x, np.float64)))))


def layout_limit(
    float64_error: float, other: float | None = None, *, optimizer: str = "sgd"
) -> float:
    """How far (``leaf_errors(rms=True)``) the state after a step on N devices may be from
    1 device, given the two layouts' float32 gradients' distances from float64
    (``other``: the second one's where measured, else taken as alike): ``EQUAL``, or
    their sum where larger, twice it for an Adam ``optimizer`` (config.optim.name), whose
    second moment holds the gradient squared."""
    other = float64_error if other is None else other
    squared = "adam" in optimizer
    return max(EQUAL, (2.0 if squared else 1.0) * (float64_error + other))


def worst(errors: dict[str, float]) -> tuple[str, float]:
    """(leaf, error) of the largest error; ("", 0.0) for none."""
    return max(errors.items(), key=lambda kv: kv[1], default=("", 0.0))


def _names(path) -> tuple[str, ...]:
    return tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def _views(exp, state, batch):
    return jax.jit(functools.partial(step_views, method=exp.method, config=exp.config))(
        state, batch
    )


def _grads_fn(exp):
    return functools.partial(
        loss_and_grads, method=exp.method, model=exp.model, config=exp.config, run=exp.run
    )


def gradient_check(
    exp, state: TrainState, batch, *, against=None, conditioning: bool | None = False
) -> dict[str, Any]:
    """The step's float32 gradient against the same program in float64 on the same views.

    ``against``: the Experiment whose program is computed in float64 (default ``exp``;
    the tests pass a correct one to show that a wrong ``exp`` fails). Where the error is
    beyond ``PRECISE``, or with ``conditioning`` (a layout that differs from 1 device
    beyond ``EQUAL`` is judged by it), also the gradient's conditioning
    (``sensitivity_of``); never with ``conditioning=None``. Returns
    loss, loss_float64, errors (per leaf), worst_leaf, max_relative_error, sensitivity
    and sensitive_leaf (None where not measured).
    """
    views, key = _views(exp, state, batch)
    (loss, _), grads = jax.jit(_grads_fn(exp))(state, views, key)
    host = jax.device_get((state, views, key))
    grads64_fn = _float64_grads(against or exp)
    loss64, grads64 = grads64_fn(*host)
    errors = leaf_errors(jax.device_get(grads), grads64)
    leaf, err = worst(errors)
    result = {
        "loss": float(loss),
        "loss_float64": float(loss64),
        "errors": errors,
        "worst_leaf": leaf,
        "max_relative_error": err,
        "sensitivity": None,
        "sensitive_leaf": None,
    }
    if conditioning is not None and (err > PRECISE or conditioning):
        moved, moved_err = worst(sensitivity_of(grads64_fn, host, grads64))
        result.update(sensitivity=moved_err, sensitive_leaf=moved)
    return result


def _float64_grads(exp):
    """(state, views, key) on the host -> (loss, gradients) of ``exp``'s step in float64,
    on the accelerator where it has float64 (GPUs), else on the CPU (TPUs)."""
    device = jax.local_devices()[0]
    if device.platform == "tpu":
        device = jax.local_devices(backend="cpu")[0]
    fn = reference.in_float64(_grads_fn(exp))

    def grads64(state, views, key):
        with jax.default_device(device):
            (loss, _), grads = fn(state, views, key)
        return loss, jax.device_get(grads)

    return grads64


def one_ulp_apart(tree, seed: int = 0, *, mirror: bool = False):
    """``tree`` with every float32 value moved by one unit in the last place, up or down
    at random (``seed``); with ``mirror``, each the other way. Other leaves as they are."""
    rng = np.random.default_rng(seed)

    def move(x):
        x = np.asarray(x)
        if x.dtype != np.float32:
            return x
        up = rng.integers(0, 2, x.shape).astype(bool) != mirror
        return np.nextafter(x, np.where(up, np.float32(np.inf), np.float32(-np.inf)))

    return jax.tree.map(move, tree)


def sensitivity_of(grads64_fn, host, grads64) -> dict[str, float]:
    """Per leaf, how far the float64 gradient moves when the float32 parameters and views
    move by one unit in the last place (``one_ulp_apart``), the larger of one random
    direction and its mirror: the accuracy to which the float32 inputs determine the
    gradient at all. Large where the step's sums nearly cancel (a network at
    initialisation whose features are nearly alike), and where a ReLU's input is within
    float32 rounding of 0: the mirrored pair moves every value both ways, so one of the
    two takes it across the kink whenever the moves reach that far, where one random
    direction would half the time."""
    state, views, key = host
    worst_of = {}
    for mirror in (False, True):
        moved = state.replace(params=one_ulp_apart(state.params, mirror=mirror))
        _, grads = grads64_fn(moved, one_ulp_apart(views, seed=1, mirror=mirror), key)
        for leaf, err in leaf_errors(grads, grads64).items():
            worst_of[leaf] = max(err, worst_of.get(leaf, 0.0))
    return worst_of


def one_step(exp, host_state: TrainState, step: int = 0):
    """The state (on the host) after ``exp``'s train step from ``host_state`` on the
    global batch of ``step``."""
    state = jax.device_put(host_state, exp.state_sharding)
    new, metrics = exp.train_step(state, exp.global_batch(step))
    return jax.device_get(new), jax.device_get(metrics)


def devices_check(one, many, host_state: TrainState) -> dict[str, Any]:
    """The state after one step of Experiment ``many`` (N devices) against Experiment
    ``one`` (1 device), from the same ``host_state`` on the same global batch: every
    leaf of the new state. Returns devices, optimizer (the config's), errors, worst_leaf,
    max_relative_error, and rms_errors, worst_rms_leaf, rms_relative_error
    (``leaf_errors(rms=True)``)."""
    want, _ = one_step(one, host_state)
    got, _ = one_step(many, host_state)
    roots = set(host_state.params)
    errors = leaf_errors(got, want, roots=roots)
    rms_errors = leaf_errors(got, want, roots=roots, rms=True)
    leaf, err = worst(errors)
    rms_leaf, rms = worst(rms_errors)
    return {
        "devices": many.mesh.devices.size,
        "optimizer": one.config.optim.name,
        "errors": errors,
        "worst_leaf": leaf,
        "max_relative_error": err,
        "rms_errors": rms_errors,
        "worst_rms_leaf": rms_leaf,
        "rms_relative_error": rms,
    }


# ----------------------------------------------------------------------------- speed


def matmul_rate(device, n: int = 2048, dtype=jnp.float32, seconds: float = 1.0) -> float:
    """Measured FLOP/s of an n x n matmul on ``device`` (steady state, at least
    ``seconds`` of runs)."""
    a = jax.device_put(jnp.ones((n, n), dtype), device)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    runs, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or runs < 3:
        f(a).block_until_ready()
        runs += 1
    return 2.0 * n**3 * runs / elapsed


def peak_flops(device) -> tuple[float | None, float | None]:
    """(bfloat16, float32) dense peak FLOP/s of ``device`` from PEAK_TFLOPS, or None."""
    kind = device.device_kind
    for name, (bf16, f32) in PEAK_TFLOPS.items():
        if name.lower() in kind.lower():
            return bf16 * 1e12, (f32 * 1e12 if f32 else None)
    return None, None


def _cost(compiled) -> dict:
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    return dict(cost or {})


def program_check(compiled, state) -> dict[str, Any]:
    """Host callbacks, transfers and donation in a compiled step's optimized HLO."""
    text = compiled.as_text()
    header = text.split("\n", 1)[0]
    aliased = len(re.findall(r"\((\d+), \{[^}]*\}, (may|must)-alias\)", header))
    return {
        "host_callbacks": sorted(set(m.group(0) for m in _HOST_CALLBACKS.finditer(text))),
        "transfers": sorted(set(m.group(1) for m in _TRANSFERS.finditer(text))),
        "aliased_outputs": aliased,
        "state_leaves": len(jax.tree.leaves(state)),
        "collectives": collectives(text),
    }


def speed_check(exp, state: TrainState, *, steps: int = 5) -> dict[str, Any]:
    """Compile time, step time (median of ``steps`` timed steps, each waited for), images/s,
    XLA's FLOPs per step (all devices), memory analysis and the compiled program's
    checks. ``state`` is donated to the steps; the last state is returned as "state"."""
    batch = exp.global_batch(0)
    start = time.perf_counter()
    compiled = exp.train_step.lower(state, batch).compile()
    compile_s = time.perf_counter() - start
    n_devices = exp.mesh.devices.size
    flops = _cost(compiled).get("flops", float("nan")) * n_devices
    memory = compiled.memory_analysis()
    program = program_check(compiled, state)
    state, metrics = compiled(state, batch)  # the first run pays for loading
    jax.block_until_ready(metrics)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        state, metrics = compiled(state, batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    step_s = float(np.median(times))
    memory_fields = (
        "argument_size_in_bytes",
        "output_size_in_bytes",
        "alias_size_in_bytes",
        "temp_size_in_bytes",
        "generated_code_size_in_bytes",
    )
    return {
        "compile_seconds": compile_s,
        "step_seconds": step_s,
        "step_times": times,
        "images_per_second": exp.config.batch_size / step_s,
        "flops_per_step": flops,
        "flops_per_second": flops / step_s,
        "memory": {f: int(getattr(memory, f, 0) or 0) for f in memory_fields} if memory else {},
        "program": program,
        "state": state,
    }


def device_memory(device) -> int | None:
    """Bytes of memory the device has (the host's RAM for a CPU device), or None."""
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    if device.platform == "cpu":
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return None


# ----------------------------------------------------------------------------- input


def input_check(exp, *, batches: int = 8, seconds: float = 20.0) -> dict[str, Any]:
    """The host's rate of the configured data source (read, decode, batch; this
    process's slice) measured alone: images/s and the CPU cores it kept busy."""
    local = exp.config.batch_size // jax.process_count()
    stream = exp.host_batches(0)
    next(stream)  # start-up (threads, workers, first decode) is not the rate
    cpu0, start, n = _cpu_seconds(), time.perf_counter(), 0
    for _ in stream:
        n += 1
        if n >= batches or time.perf_counter() - start > seconds:
            break
    elapsed = time.perf_counter() - start
    stream.close()
    cores = (_cpu_seconds() - cpu0) / elapsed if elapsed > 0 else float("nan")
    rate = n * local / elapsed if elapsed > 0 else float("inf")
    return {
        "images_per_second": rate,
        "cores_busy": cores,
        "images_per_second_per_core": rate / cores if cores > 0 else float("nan"),
        "streamed": getattr(exp.train, "load", None) is not None,
    }


def _cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (grain workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


# ----------------------------------------------------------------------------- the report


def run_checks(config, *, steps: int = 5, workdir: str | None = None):
    """Every check of the module docstring for ``config`` on this process's devices:
    yields each Verdict as soon as it is known."""
    from jssl import validation
    from jssl.trainer import open_run

    devices = jax.local_devices()
    validation.validate(config, None, devices=devices)
    yield _machine_verdict(devices)
    with tempfile.TemporaryDirectory(prefix="jssl-check-") as tmp:
        exp, _ = open_run(config, workdir or tmp, devices=devices)
        state = exp.init_state()
        batch = exp.global_batch(0)
        # The layouts first: where they differ beyond EQUAL, the one float64 pass of the
        # gradient check also measures the conditioning that judges them.
        d = None
        if len(devices) > 1 and jax.process_count() == 1:
            d = _devices_sgd(config, devices, workdir or tmp)
        beyond = d is not None and d["rms_relative_error"] > EQUAL
        g = gradient_check(exp, state, batch, conditioning=beyond)
        yield _gradient_verdict(g)
        if d is not None:
            yield _devices_verdict(d, g)
        elif len(devices) == 1:
            yield Verdict("numerics", "1 local device: no N-device comparison to make", None)
        speed = speed_check(exp, state, steps=steps)
        yield from _speed_verdicts(speed, exp, devices)
        yield _input_verdict(input_check(exp), speed["images_per_second"])
        yield _program_verdict(speed["program"])


def _devices_sgd(config, devices, workdir: str) -> dict:
    """``devices_check`` with the config's optimiser replaced by SGD at its learning rate:
    Adam's first update is about lr * sign(g), so it turns the rounding noise of a gradient
    that is zero in exact arithmetic (attention's key bias, a bias before a normalisation)
    into whole, order-dependent updates; SGD keeps each leaf a function of the gradient."""
    from jssl.trainer import open_run

    sgd = config.copy_and_resolve_references()
    sgd.optim.name = "sgd"
    one, _ = open_run(sgd, workdir, devices=devices[:1])
    many, _ = open_run(sgd, workdir, devices=devices)
    host = jax.device_get(one.init_state())
    result = {**devices_check(one, many, host), "float64_error": None}
    if result["rms_relative_error"] > EQUAL:  # how far the 1-device layout is from float64
        state = jax.device_put(host, one.state_sharding)
        g = gradient_check(one, state, one.global_batch(0), conditioning=None)
        result["float64_error"] = g["max_relative_error"]
    return result


def _machine_verdict(devices) -> Verdict:
    v = run_info.versions()
    text = (
        f"{jax.default_backend()}, {run_info.devices_text(devices)}, "
        f"{jax.process_count()} process(es); jax {v.get('jax')}, jaxlib {v.get('jaxlib')}, "
        f"flax {v.get('flax')}"
    )
    values = {
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "local_devices": len(devices),
        "devices": jax.device_count(),
        "processes": jax.process_count(),
        "versions": v,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }
    return Verdict("machine", text, None, values)


def _judge(err: float, sensitivity: float | None = None) -> bool | None:
    """True (precise), None (float32 rounding of long sums, or of an ill-conditioned step:
    reported) or False (wrong)."""
    if err <= PRECISE:
        return True
    return None if err <= max(LIMIT, CONDITION * (sensitivity or 0.0)) else False


_LEVELS = {
    True: "",
    None: "; float32 rounding of long sums, not a wrong step (benchmarks/float32_gradient.py)",
    False: (
        "; beyond float32 rounding of long sums: a wrong step, or one so ill-conditioned that "
        "float32 loses this much (compare layouts: benchmarks/float32_gradient.py)"
    ),
}


def _gradient_verdict(g: dict) -> Verdict:
    err = g["max_relative_error"]
    ok = _judge(err, g.get("sensitivity"))
    text = (
        f"gradient vs float64: max relative error {err:.1e} ({g['worst_leaf']}), limits "
        f"{PRECISE:.0e} / {LIMIT:.0e}; loss {g['loss']:.6f} vs {g['loss_float64']:.6f}"
    )
    return Verdict("numerics", text + _judged(err, ok, g), ok, dict(g))


def _devices_verdict(d: dict, g: dict) -> Verdict:
    """Precise where every leaf is within ``layout_limit`` in root mean square (of the
    distances from float64 of the gradient check ``g``, on the N devices, and, where
    measured, of the 1-device layout, ``float64_error``; for ``d``'s optimiser) and
    ``PRECISE`` at its largest difference; beyond, float32 rounding of long sums up to
    ``LIMIT``, or of an ill-conditioned step up to ``CONDITION`` times ``g``'s
    sensitivity (where measured), else wrong."""
    err, rms = d["max_relative_error"], d["rms_relative_error"]
    limit = layout_limit(
        g["max_relative_error"], d.get("float64_error"), optimizer=d.get("optimizer", "sgd")
    )
    ok = _judge(max(err, rms), g.get("sensitivity"))
    if ok and rms > limit:
        ok = None
    one = d.get("float64_error")
    text = (
        f"{d['devices']} devices vs 1, every leaf after one SGD step: relative error "
        f"{rms:.1e} in RMS ({d['worst_rms_leaf']}), limit {limit:.0e}"
        + (f" (1 device {one:.1e} from float64)" if one is not None else "")
        + f"; at most {err:.1e} ({d['worst_leaf']}), limits {PRECISE:.0e} / {LIMIT:.0e}"
    )
    values = {**d, "limit": limit, "sensitivity": g.get("sensitivity")}
    return Verdict("numerics", text + _judged(max(err, rms), ok, g), ok, values)


def _judged(err: float, ok: bool | None, g: dict) -> str:
    """The end of a numerics line: the step's conditioning where measured (gradient check
    ``g``), and what ``ok`` means for an error ``err``."""
    moved = g.get("sensitivity")
    if moved is None:
        return _LEVELS[ok]
    text = (
        f"; 1-ulp changes of the float32 inputs move the float64 gradient by {moved:.1e} "
        f"({g['sensitive_leaf']})"
    )
    if err <= LIMIT:
        return text + _LEVELS[ok]
    return text + (
        f"; within {CONDITION:g}x of that: an ill-conditioned step, float32 cannot be "
        "judged closer here, not a wrong step"
        if ok is None
        else f"; beyond {CONDITION:g}x of that: a wrong step"
    )


def _speed_verdicts(s: dict, exp, devices) -> list[Verdict]:
    device = devices[0]
    dtype = str(exp.config.model.get("dtype", "float32"))
    flops_rate = s["flops_per_second"]
    values = {k: v for k, v in s.items() if k not in ("state", "program", "memory")}
    text = (
        f"compile {s['compile_seconds']:.1f} s; step {s['step_seconds'] * 1e3:.1f} ms = "
        f"{s['images_per_second']:.0f} img/s (batch {exp.config.batch_size}); "
        f"{s['flops_per_step'] / 1e9:.2f} GFLOP per step = {flops_rate / 1e9:.1f} GFLOP/s"
    )
    if device.platform == "cpu":
        rate = matmul_rate(device)
        values["matmul_flops_per_second"] = rate
        values["utilisation"] = flops_rate / rate
        text += (
            f", {100 * flops_rate / rate:.1f}% of a float32 matmul here ({rate / 1e9:.0f} GFLOP/s)"
        )
    else:
        bf16, f32 = peak_flops(device)
        peak = bf16 if dtype == "bfloat16" or f32 is None else f32
        if peak:
            mfu = flops_rate / (peak * len(devices))
            values.update(peak_flops_per_device=peak, mfu=mfu)
            text += (
                f", MFU {100 * mfu:.1f}% of {peak / 1e12:.0f} TFLOP/s x {len(devices)} "
                f"({dtype} peak)"
            )
        else:
            text += f"; no peak known for {device.device_kind!r}"
    verdicts = [Verdict("speed", text, None, values)]
    mem = s["memory"]
    if mem:
        need = mem["argument_size_in_bytes"] + mem["output_size_in_bytes"]
        need += mem["temp_size_in_bytes"] - mem["alias_size_in_bytes"]
        have = device_memory(device)
        share = f" of {have / 2**30:.1f} GiB ({100 * need / have:.1f}%)" if have else ""
        ok = None if not have else need < have
        verdicts.append(
            Verdict(
                "memory",
                f"the step's buffers {need / 2**20:.0f} MiB per device{share}: arguments "
                f"{mem['argument_size_in_bytes'] / 2**20:.0f} MiB, temporaries "
                f"{mem['temp_size_in_bytes'] / 2**20:.0f} MiB",
                ok,
                {**mem, "device_bytes": have},
            )
        )
    return verdicts


def _input_verdict(i: dict, step_rate: float) -> Verdict:
    rate = i["images_per_second"]
    headroom = rate / step_rate
    text = (
        f"host input {rate:.0f} img/s on {i['cores_busy']:.1f} cores "
        f"({i['images_per_second_per_core']:.0f} img/s per core, measured alone) vs the "
        f"step's {step_rate:.0f} img/s: "
    )
    if headroom >= 1.0:
        text += f"not input-bound ({headroom:.1f}x headroom)"
    else:
        fix = (
            "raise data.num_workers or data.num_threads, or prepare the data at a smaller size"
            if i["streamed"]
            else "hold the data on the device or lower data work per image"
        )
        text += f"input-bound: {1 / headroom:.1f}x short; {fix}"
    return Verdict("input", text, headroom >= 1.0, {**i, "step_images_per_second": step_rate})


def _program_verdict(p: dict) -> Verdict:
    problems = []
    if p["host_callbacks"]:
        problems.append(f"host callbacks inside the step: {', '.join(p['host_callbacks'])}")
    if p["transfers"]:
        problems.append(f"transfers inside the step: {', '.join(p['transfers'])}")
    if p["aliased_outputs"] == 0:
        problems.append("the state's buffers are not donated (no input/output aliasing)")
    text = "; ".join(problems) or (
        f"no host callbacks or transfers inside the step; {p['aliased_outputs']} output "
        f"buffers reuse the donated state's ({p['state_leaves']} state leaves)"
    )
    # What the devices exchange each step: data parallel, the gradients' all-reduce; an
    # all-gather copies every device's part of an array to each.
    text += "; per step and device: " + (
        ", ".join(
            f"{k} {v['count']} ({v['bytes'] / 1e6:.2f} MB)" for k, v in p["collectives"].items()
        )
        or "no collectives"
    )
    return Verdict("program", text, not problems, p)


def write_json(verdicts: list[Verdict], path: str) -> None:
    """The verdicts as JSON (written whole, then renamed into place)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump([dataclasses.asdict(v) for v in verdicts], f, indent=2, default=_jsonable)
    os.replace(tmp, path)


def _jsonable(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


# ----------------------------------------------------------------------------- command

DEFAULT_CONFIG = os.path.join(cli.ROOT, "configs", "simclr.py")


def main(argv=None) -> int:
    """``python -m jssl.check``: prints one line per verdict; exit status 0 when no check
    failed, 2 when one did, 1 on a bad flag, config or data set."""
    argv = list(sys.argv if argv is None else argv)
    if not any(a.startswith(("--config=", "-config=")) for a in argv[1:]):
        argv.insert(1, f"--config={DEFAULT_CONFIG}:digits")

    def define(fv):
        from absl import flags

        flags.DEFINE_string("out", None, "Write the verdicts to this JSON file.", flag_values=fv)
        flags.DEFINE_integer("steps", 5, "Timed steps of the speed check.", flag_values=fv)

    parsed = cli.parse_config_flags(
        argv, usage="python -m jssl.check [--config=FILE:PRESET] [--out=F]", define=define
    )
    if parsed is None:
        return 1
    config, fv = parsed
    verdicts = []
    try:
        for verdict in run_checks(config, steps=fv.steps):
            print(verdict.line(), flush=True)
            verdicts.append(verdict)
    except cli.user_error_types() as e:
        cli.print_error(e)
        return 1
    if fv.out:
        write_json(verdicts, fv.out)
        print(f"wrote {fv.out}")
    failed = [v for v in verdicts if v.ok is False]
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
