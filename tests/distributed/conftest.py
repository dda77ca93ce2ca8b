"""A local Ray cluster shared by the tests of this folder, and the tiny VLA policy."""

import pytest

ray = pytest.importorskip("ray", reason="Ray is installed by the dist extra (scripts/setup.sh --dev)")


@pytest.fixture(scope="session")
def ray_cluster():
    from vla_rl.distributed.ray_setup import init_ray

    description = init_ray(num_cpus=2)
    yield description
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_policy(tiny_qwen):
    from tests.policies import tiny_vla_policy

    return tiny_vla_policy(tiny_qwen, max_batch=4).eval()
