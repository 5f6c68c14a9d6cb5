"""jssl's XLA:CPU flags: added to XLA_FLAGS on import unless the user set them, and in
effect in the programs this process compiles."""

import jax
import jax.numpy as jnp
import pytest
from jax import lax

from jssl import xla_cpu


def test_flags_are_added_once_and_the_users_own_are_kept():
    env = {}
    assert xla_cpu.prefer_cpu_flags(env) == "--xla_cpu_experimental_ynn_fusion_type="
    assert xla_cpu.prefer_cpu_flags(env) == env["XLA_FLAGS"]  # not added twice
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    xla_cpu.prefer_cpu_flags(env)
    assert env["XLA_FLAGS"] == (
        "--xla_force_host_platform_device_count=8 --xla_cpu_experimental_ynn_fusion_type="
    )
    mine = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=+individual_convolution"}
    xla_cpu.prefer_cpu_flags(mine)
    assert mine["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type=+individual_convolution"


def test_flags_are_added_only_on_the_jaxlib_releases_they_were_measured_on():
    # XLA exits on a flag it does not know; a later jaxlib may have renamed this one.
    assert xla_cpu.prefer_cpu_flags({}, jaxlib_version="0.10.2") != ""
    assert xla_cpu.prefer_cpu_flags({}, jaxlib_version="0.13.0") == ""
    assert xla_cpu.prefer_cpu_flags({}, jaxlib_version="") == ""  # no jaxlib distribution


def test_a_compiled_convolution_has_no_ynnpack_fusion():
    """``import jssl`` came before this process's first computation (conftest), so the
    CPU backend compiles with the flags: a convolution and its gradient stay XLA's."""
    if xla_cpu.prefer_cpu_flags({}) == "":
        pytest.skip(f"jssl sets no XLA:CPU flag on jaxlib {xla_cpu._jaxlib_version()}")

    def loss(w, x):
        y = lax.conv_general_dilated(
            x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        return jnp.sum(jax.nn.relu(y) ** 2)

    x, w = jnp.ones((64, 32, 32, 16)), jnp.ones((3, 3, 16, 16))  # large enough for YNNPACK
    program = jax.jit(jax.grad(loss)).lower(w, x).compile().as_text()
    assert "convolution" in program
    assert "ynn_fusion" not in program  # jaxlib 0.10's default fuses this convolution
