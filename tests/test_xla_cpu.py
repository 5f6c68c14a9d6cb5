"""jssl's XLA:CPU flags: added to XLA_FLAGS on import unless the user set them, and in
effect in the programs this process compiles."""

import os

import jax
import jax.numpy as jnp
import pytest
from jax import lax

from jssl import xla_cpu


def test_flags_are_added_once_and_the_users_own_are_kept():
    v = "0.10.2"
    env = {}
    assert xla_cpu.prefer_cpu_flags(env, v) == "--xla_cpu_experimental_ynn_fusion_type="
    assert xla_cpu.prefer_cpu_flags(env, v) == env["XLA_FLAGS"]  # not added twice
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    xla_cpu.prefer_cpu_flags(env, v)
    assert env["XLA_FLAGS"] == (
        "--xla_force_host_platform_device_count=8 --xla_cpu_experimental_ynn_fusion_type="
    )
    mine = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=+individual_convolution"}
    xla_cpu.prefer_cpu_flags(mine, v)
    assert mine["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type=+individual_convolution"
    # The name inside another flag's value is not the flag.
    dump = {"XLA_FLAGS": "--xla_dump_to=/tmp/xla_cpu_experimental_ynn_fusion_type"}
    assert xla_cpu.prefer_cpu_flags(dump, v).endswith(" --xla_cpu_experimental_ynn_fusion_type=")


def test_flags_are_added_only_on_the_jaxlib_releases_they_were_measured_on():
    # XLA exits on a flag it does not know; a later jaxlib may have renamed this one.
    assert xla_cpu.prefer_cpu_flags({}, jaxlib_version="0.10.2") != ""
    assert xla_cpu.prefer_cpu_flags({}, jaxlib_version="0.13.0") == ""
    assert xla_cpu.prefer_cpu_flags({}, jaxlib_version="") == ""  # no jaxlib distribution
    untouched = {}
    xla_cpu.prefer_cpu_flags(untouched, jaxlib_version="0.13.0")
    assert "XLA_FLAGS" not in untouched


def test_a_compiled_convolution_has_no_ynnpack_fusion():
    """``import jssl`` came before this process's first computation (collecting the test
    modules imports it; conftest only imports jax), so the CPU backend compiles with the
    flags: a convolution and its gradient stay XLA's."""
    if "--xla_cpu_experimental_ynn_fusion_type= " not in os.environ["XLA_FLAGS"] + " ":
        pytest.skip("XLA_FLAGS keeps YNNPACK fusions (an older or newer jaxlib, or the user's)")

    def loss(w, x):
        y = lax.conv_general_dilated(
            x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        return jnp.sum(jax.nn.relu(y) ** 2)

    x, w = jnp.ones((64, 32, 32, 16)), jnp.ones((3, 3, 16, 16))  # large enough for YNNPACK
    program = jax.jit(jax.grad(loss)).lower(w, x).compile().as_text()
    assert "convolution" in program
    assert "ynn_fusion" not in program  # jaxlib 0.10's default fuses this convolution
