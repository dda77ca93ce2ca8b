"""DAgger: the policy's own states, labelled by the scripted expert, join the cloning data."""

import numpy as np
import pytest

from envs.scene import COLOUR_NAMES
from vla_rl.dagger import collect

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def reach_policy(tiny_qwen):
    from tests.policies import tiny_vla_policy
    from vla_rl.policy.action_tokenizer import ActionStats

    policy = tiny_vla_policy(tiny_qwen, max_batch=4).eval()
    policy.state_stats = ActionStats.from_actions(np.random.default_rng(0).uniform(-0.3, 0.3, (64, 8)))
    return policy


def test_beta_one_executes_the_expert_and_labels_every_state(reach_policy):
    samples = collect(reach_policy, ["reach"], 2, 56, seed=0, beta=1.0, max_steps=60)
    assert samples["success_rate"] == 1.0  # the scripted expert always touches the block
    n = len(samples["actions"])
    assert samples["images"].shape == (n, 56, 56, 3) and samples["states"].shape == (n, 8)
    assert samples["colour_positions"].shape == (n, len(COLOUR_NAMES), 3) and len(samples["instructions"]) == n
    assert np.abs(samples["actions"]).max() <= 1.0 and np.abs(samples["actions"][:, :2]).max() > 0.5


def test_beta_zero_runs_the_policy_and_the_expert_labels_its_states(reach_policy):
    samples = collect(reach_policy, ["reach"], 3, 56, seed=1, beta=0.0, max_steps=4, num_envs=2)
    assert len(samples["actions"]) == 3 * 4  # an untrained policy does not finish reach in 4 steps
    assert samples["success_rate"] == 0.0
    # Labels point from the gripper towards the named block in x/y (the expert's first phase).
    named = [COLOUR_NAMES.index(text.split()[2]) for text in samples["instructions"]]  # "touch the <colour> block"
    towards = samples["colour_positions"][np.arange(len(named)), named, :2] - samples["states"][:, :2]
    far = np.abs(towards) > 0.03
    assert np.all(np.sign(samples["actions"][:, :2][far]) == np.sign(towards[far]))
    with pytest.raises(ValueError, match="--dagger_beta"):
        collect(reach_policy, ["reach"], 1, 56, seed=0, beta=1.5)


def test_episodes_run_to_the_tasks_own_step_limit_by_default(reach_policy):
    import gymnasium as gym

    import envs

    limit = gym.spec(envs.task_id("reach")).max_episode_steps
    samples = collect(reach_policy, ["reach"], 1, 56, seed=2, beta=0.0)  # an untrained policy never touches
    assert samples["success_rate"] == 0.0 and len(samples["actions"]) == limit
    with pytest.raises(ValueError, match="--dagger_max_steps"):
        collect(reach_policy, ["reach"], 1, 56, seed=0, beta=0.5, max_steps=-1)
