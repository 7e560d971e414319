import jax
import jax.numpy as jnp

import lumina_jax


def test_real_package_imported_and_float64_enabled():
    # guards against the tests/lumina_jax folder shadowing the package (pytest import modes)
    assert lumina_jax.__file__.endswith("lumina_jax/__init__.py")
    assert jax.config.jax_enable_x64
    assert jnp.ones(1).dtype == jnp.float64
