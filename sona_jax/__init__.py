"""SONA engine: pure, jitted JAX functions over arrays."""
