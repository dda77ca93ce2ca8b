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
    from vla_rl.policy.action_tokenizer import ActionTokenizer
    from vla_rl.policy.vla import VLAPolicy
    from vla_rl.qwen.loading import load_model
    from vla_rl.qwen.processor import QwenImageTextProcessor

    model = load_model(tiny_qwen, "--vla_path")
    tokenizer = ActionTokenizer(model.config.get_text_config().vocab_size)
    return VLAPolicy(model, QwenImageTextProcessor.from_pretrained(tiny_qwen), tokenizer, max_batch=4).eval()
