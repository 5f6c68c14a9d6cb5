"""A function's own program run in float64: the reference a float32 computation is judged by.

``in_float64(fn)(*args)`` traces ``fn`` at its (float32) arguments, exactly as the
float32 run does, and evaluates the traced program with every float32 value carried
in float64: the same operations in the same order, each rounded to float64 instead of
float32. Random draws are the float32 run's own (a uniform draw is made from the same
bits as a float32 number, then widened), so a step's augmentation decisions, masks and
SIGReg directions are identical and only the rounding differs. No jssl code changes
for it and no global flag is touched outside the call (``jax.enable_x64`` is a context).

Higher-order primitives are evaluated through their bodies: calls (``jit``, custom
derivatives, remat) inline, ``scan``, ``while`` and ``cond`` as ``lax`` loops over
float64 bodies, and the scalar combiners of scatters and reductions retraced in float64.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.extend.core as jcore
import numpy as np
from jax import lax

_F32 = np.dtype(np.float32)
_F64 = np.dtype(np.float64)

# Primitives whose body is a call: evaluated inline, with the parameter holding the body.
_CALLS = {
    "jit": "jaxpr",
    "pjit": "jaxpr",
    "closed_call": "call_jaxpr",
    "core_call": "call_jaxpr",
    "custom_jvp_call": "call_jaxpr",
    "custom_vjp_call": "call_jaxpr",
    "custom_vjp_call_jaxpr": "fun_jaxpr",
    "checkpoint": "jaxpr",
    "remat": "jaxpr",
}


def in_float64(fn: Callable) -> Callable:
    """``fn`` computed in float64: ``(*args) -> fn(*args)`` with float32 widened.

    The arguments are those of the float32 call (float32 arrays stay float32 when
    tracing, so the program is the float32 one); the results are float64 where
    ``fn``'s are float32. Runs jitted on the default device.
    """

    @functools.wraps(fn)
    def reference(*args):
        with jax.enable_x64(False):
            closed, shapes = jax.make_jaxpr(fn, return_shape=True)(*args)
        leaves = jax.tree.leaves(args)
        with jax.enable_x64(True):
            run = jax.jit(lambda consts, xs: evaluate(closed.jaxpr, consts, xs))
            out = run([_widen(c) for c in closed.consts], [_widen(x) for x in leaves])
        return jax.tree.unflatten(jax.tree.structure(shapes), out)

    return reference


def evaluate(jaxpr: jcore.Jaxpr, consts: Sequence, args: Sequence) -> list:
    """The outputs of ``jaxpr`` at (``consts``, ``args``), float32 carried in float64.
    Call it under ``jax.enable_x64(True)``, traced or not."""
    env: dict = {}

    def read(v):
        return _widen(v.val) if isinstance(v, jcore.Literal) else env[v]

    for v, x in zip(jaxpr.constvars, consts, strict=True):
        env[v] = _widen(x)
    for v, x in zip(jaxpr.invars, args, strict=True):
        env[v] = _widen(x)
    for eqn in jaxpr.eqns:
        outs = _apply(eqn, [read(v) for v in eqn.invars])
        if not eqn.primitive.multiple_results:
            outs = [outs]
        for v, x in zip(eqn.outvars, outs, strict=True):
            if not isinstance(v, jcore.DropVar):
                env[v] = x
    return [read(v) for v in jaxpr.outvars]


def _widen(x):
    """float32 (array, scalar or tracer) -> float64; anything else unchanged."""
    dtype = getattr(x, "dtype", None)
    if dtype is None and isinstance(x, float):
        return np.float64(x)
    if dtype != _F32:
        return x
    return x.astype(_F64) if hasattr(x, "astype") else np.asarray(x, _F64)


def _swap(value):
    """A parameter naming float32 (a result or accumulation dtype) names float64."""
    if isinstance(value, np.dtype) and value == _F32:
        return _F64
    if value is np.float32:
        return np.float64
    return value


def _closed(body) -> tuple[jcore.Jaxpr, list]:
    if isinstance(body, jcore.ClosedJaxpr):
        return body.jaxpr, list(body.consts)
    return body, []


def _run(body, args) -> list:
    jaxpr, consts = _closed(body)
    return evaluate(jaxpr, consts, args)


def _apply(eqn, ins: list):
    name = eqn.primitive.name
    params = eqn.params
    if name in _CALLS and _CALLS[name] in params:
        outs = _run(params[_CALLS[name]], ins)
        return outs if eqn.primitive.multiple_results else outs[0]
    if name == "scan":
        return _scan(params, ins)
    if name == "while":
        return _while(params, ins)
    if name == "cond":
        return _cond(params, ins)
    if name == "reduce_precision":  # a rounding to float32 (or less) that float64 skips
        return ins[0]
    if name == "bitcast_convert_type":  # bits <-> float32: the float32 value, then widened
        x = ins[0]
        if x.dtype == _F64 and eqn.invars[0].aval.dtype == _F32:
            x = x.astype(_F32)
        return _widen(eqn.primitive.bind(x, **params))
    return eqn.primitive.bind(*ins, **{k: _param(v) for k, v in params.items()})


def _param(value):
    """A parameter in float64: a dtype swapped, a combiner body (scatter-add's, reduce's)
    retraced over float64 values."""
    if isinstance(value, (jcore.Jaxpr, jcore.ClosedJaxpr)):
        return _widened(value)
    if isinstance(value, tuple) and any(
        isinstance(v, (jcore.Jaxpr, jcore.ClosedJaxpr)) for v in value
    ):
        return tuple(_param(v) for v in value)
    return _swap(value)


def _widened(body):
    jaxpr, consts = _closed(body)
    avals = [jax.ShapeDtypeStruct(v.aval.shape, _swap(v.aval.dtype)) for v in jaxpr.invars]
    closed = jax.make_jaxpr(lambda *xs: evaluate(jaxpr, consts, xs))(*avals)
    if isinstance(body, jcore.ClosedJaxpr):
        return closed
    if closed.consts:
        raise NotImplementedError("jssl.reference: a body with constants where none may be")
    return closed.jaxpr


def _scan(params, ins):
    n_consts, n_carry = params["num_consts"], params["num_carry"]
    consts, carry, xs = (
        ins[:n_consts],
        ins[n_consts : n_consts + n_carry],
        ins[n_consts + n_carry :],
    )

    def body(carry, x):
        outs = _run(params["jaxpr"], [*consts, *carry, *x])
        return outs[:n_carry], outs[n_carry:]

    carry, ys = lax.scan(
        body,
        carry,
        xs,
        length=params["length"],
        reverse=params["reverse"],
        unroll=params["unroll"],
    )
    return [*carry, *ys]


def _while(params, ins):
    nc, nb = params["cond_nconsts"], params["body_nconsts"]
    cond_consts, body_consts, init = ins[:nc], ins[nc : nc + nb], ins[nc + nb :]
    return lax.while_loop(
        lambda c: _run(params["cond_jaxpr"], [*cond_consts, *c])[0],
        lambda c: _run(params["body_jaxpr"], [*body_consts, *c]),
        list(init),
    )


def _cond(params, ins):
    index, ops = ins[0], ins[1:]
    branches = [functools.partial(_run, b) for b in params["branches"]]
    return lax.switch(index, [lambda *o, f=f: f(list(o)) for f in branches], *ops)
