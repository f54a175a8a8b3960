"""Adapter training split over devices by viewer (`jax.sharding`) gives one device's numbers.

Runs in a subprocess with four host devices (``XLA_FLAGS=--xla_force_host_platform_device_count
=4``): the flag must be set before JAX starts, and the rest of the suite runs on one device.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

SCRIPT = textwrap.dedent(
    """
    import jax, numpy as np
    from sona_jax.config import SonaConfig
    from sona_jax.data import generate_synthetic
    from sona_jax.model.adapters import train_adapters_of, viewer_mesh
    from sona_jax.model.train import train_model

    assert len(jax.devices()) == 4, jax.devices()
    cfg = SonaConfig().with_overrides(
        {"model": {"embedding_dim": 32}, "lora": {"train_chunk_users": 64, "users_per_step": 16}}
    )
    from sona_jax.model.lora import training_steps
    assert training_steps(64, 16) == 4  # every device's share of each chunk in steps
    data = generate_synthetic(300, 200, events_per_user=25, seed=3)
    model = train_model(data, cfg)
    users = model.users
    rows = np.flatnonzero(users.interaction_count >= cfg.lora.min_events)[:150]
    key = jax.random.PRNGKey(7)
    one = train_adapters_of(
        model.base, users.preference, users.adapter, data.events, rows, cfg, key
    )
    mesh = viewer_mesh(4)
    four = train_adapters_of(
        model.base, users.preference, users.adapter, data.events, rows, cfg, key, mesh=mesh
    )
    assert len(rows) > 100
    np.testing.assert_allclose(
        one.adapters.astype(np.float32), four.adapters.astype(np.float32), rtol=1e-3, atol=1e-3
    )
    np.testing.assert_allclose(one.loss_after, four.loss_after, rtol=1e-5, atol=1e-6)
    assert (one.loss_after < one.loss_before).mean() > 0.5  # it trained something
    # written in place: the same rows, nothing else touched, no copy returned
    written = users.adapter.copy()
    inplace = train_adapters_of(
        model.base, users.preference, written, data.events, rows, cfg, key, in_place=True
    )
    assert inplace.adapters.shape[0] == 0
    np.testing.assert_array_equal(written[rows], one.adapters)
    others = np.setdiff1d(np.arange(len(written)), rows)
    np.testing.assert_array_equal(written[others], users.adapter[others])
    np.testing.assert_array_equal(inplace.loss_after, one.loss_after)
    # the whole model too: the same adapters whether trained on one device or four
    whole = train_model(data, cfg, mesh=mesh)
    np.testing.assert_allclose(
        whole.users.adapter.astype(np.float32),
        model.users.adapter.astype(np.float32),
        rtol=1e-3,
        atol=1e-3,
    )
    print("SHARDED-OK", mesh.devices.shape)
    """
)


def test_train_from_store_over_four_devices(tmp_path):
    """`sona train --from-store --devices 4` on an embedded store seeded with a small demo."""
    seed = textwrap.dedent(
        f"""
        import asyncio
        from service.learning.demo_data import seed_store
        from service.storage import open_store

        async def main():
            store = open_store(None, __import__("pathlib").Path({str(tmp_path)!r}))
            await store.open()
            assert await seed_store(store, "synthetic", None, 120, 90)
            await store.close()

        asyncio.run(main())
        """
    )
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    subprocess.run([sys.executable, "-c", seed], cwd=ROOT, env=env, check=True)
    config = tmp_path / "small.toml"
    config.write_text("[model]\nembedding_dim = 16\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "service.cli",
            "train",
            "--from-store",
            "--data-dir",
            str(tmp_path),
            "--config",
            str(config),
            "--devices",
            "4",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "trained model version 1 from the store" in done.stdout
    assert '"devices": 4' in done.stdout


def test_sharded_training_equals_one_device():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "SHARDED-OK (4,)" in done.stdout
