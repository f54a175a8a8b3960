"""A live server compiles a new shape's programs in a child process (`ProgramCompiler`): the set
the child saves is the one the parent's requests look up, so after loading it the parent
compiles nothing, and what it computes is what the parent would have compiled itself."""

from __future__ import annotations

import numpy as np
import pytest

from service.program_compiler import ProgramCompiler
from service.program_store import ProgramStore
from service.runtime import warm_up_apart
from sona_jax.config import SonaConfig
from sona_jax.data import generate_synthetic
from sona_jax.model.train import train_model
from sona_jax.serve.batch import Query
from sona_jax.serve.engine import ServingEngine
from sona_jax.serve.program_plan import program_plan
from sona_jax.serve.programs import ProgramLibrary, ServedShapes
from sona_jax.serve.viewers import empty_profile

CFG = SonaConfig().with_overrides({"model": {"embedding_dim": 16}})
NOW = 1.8e9
SHAPES = ServedShapes(batch_sizes=(1, 4))


@pytest.fixture(scope="module")
def engine():
    model = train_model(generate_synthetic(n_users=60, n_items=120, events_per_user=15, seed=5), CFG)
    return ServingEngine.load(model, CFG).with_headroom()


@pytest.mark.timeout(240)
def test_a_set_compiled_in_a_child_serves_the_parent_without_a_compile(engine, tmp_path):
    library = ProgramLibrary(SHAPES)
    store = ProgramStore(tmp_path / "programs", keep=4)
    store.attach(library)
    compiler = ProgramCompiler(store, timeout_seconds=200)
    compiler.attach(library)
    grown = engine.with_capacity(engine.capacity + 64).served(library)
    assert not grown.programs.planned and grown.programs.compiled <= 1  # its context table

    warm_up_apart(grown)

    assert compiler.compiled_sets == 1 and compiler.failed_sets == 0
    assert grown.programs.planned and grown.programs.loaded >= 2 * len(SHAPES.batch_sizes)
    compiled_here = grown.programs.compiled
    for task in program_plan(grown, NOW):  # every program the plan names is found
        task()
    assert grown.programs.compiled == compiled_here and grown.programs.unplanned == 0
    assert not list((tmp_path / "programs").glob("*.shadow"))  # the shadow is removed

    # The child compiled from zeros; the parent's values go through the same programs.
    query = Query(empty_profile(grown), 5, True, CFG.diversity.mmr_lambda)
    lists, _ = grown.recommend_queries([query] * 3)
    plain, _ = engine.recommend_queries([query] * 3)
    np.testing.assert_array_equal(lists.items[:, :5], plain.items[:, :5])


@pytest.mark.timeout(120)
def test_a_failed_child_leaves_the_set_to_compile_here(engine, tmp_path):
    library = ProgramLibrary(SHAPES)
    store = ProgramStore(tmp_path / "programs", keep=4)
    store.attach(library)
    compiler = ProgramCompiler(store, timeout_seconds=0.01)  # no child compiles that fast
    compiler.attach(library)
    grown = engine.with_capacity(engine.capacity + 128).served(library)

    warm_up_apart(grown)

    assert compiler.failed_sets == 1 and grown.programs.planned
    assert grown.programs.loaded == 0 and grown.programs.compiled >= 2 * len(SHAPES.batch_sizes)
