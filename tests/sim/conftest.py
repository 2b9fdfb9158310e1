from __future__ import annotations

import pytest

from conceptengine.sim import Oracle, World, build_world


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """One small rendered world for the whole sim test folder (rendering is the slow part)."""
    return build_world(
        tmp_path_factory.mktemp("world"), n_train=40, n_gold=8, seed=7, image_size=128, n_corrupt=3
    )


@pytest.fixture(scope="session")
def oracle(world: World) -> Oracle:
    return Oracle(world.root)
