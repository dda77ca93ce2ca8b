"""The training configuration: small component configs composed into one, validated before
anything heavy loads, and the command line that fills it.

Every flag of ``python -m vla_rl.train`` (and of ``scripts/train_rl_vllm_ray_fsdp_mini.sh``,
which passes its arguments through) is one field below (the PRM's: :mod:`vla_rl.prm_config`);
``--help`` lists them with their defaults. Booleans are written as values (``--process_reward_model True``).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field, fields

from assets import MODELS
from vla_rl.cli import require_at_least, require_between, require_frame_side, require_positive, str2bool
from vla_rl.prm_config import PRMConfig

DEFAULT_VLA = os.path.join(MODELS, "vla-small")
TASK_SUITES = {
    "default": ["reach", "push"],
    "all": ["reach", "push", "pick_place", "stack"],
    "reach": ["reach"],
    "push": ["push"],
    "pick_place": ["pick_place"],
    "stack": ["stack"],
}


@dataclass
class PolicyConfig:
    vla_path: str = field(default=DEFAULT_VLA, metadata={"help": "policy checkpoint, run or iter_N dir"})
    lora_rank: int = field(default=0, metadata={"help": "LoRA rank on the policy's language model (0: full)"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha"})
    freeze_vision: bool = field(
        default=False,
        metadata={"help": "fix the vision tower in full fine-tuning (True/False; LoRA always does)"},
    )
    temperature: float = field(default=1.0, metadata={"help": "rollout sampling temperature"})
    local_rollout_forward_batch_size: int = field(
        default=16, metadata={"help": "frames per policy forward pass (rollout and update)"}
    )
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda[:i]"})

    def validate(self) -> None:
        from vla_rl.checkpointing import resolve_policy_path
        from vla_rl.qwen.loading import pick_device, read_checkpoint_config

        self.vla_path = resolve_policy_path(self.vla_path)  # a run or training checkpoint: its policy
        read_checkpoint_config(self.vla_path, "--vla_path")
        require_positive(self.temperature, "--temperature")
        require_at_least(self.local_rollout_forward_batch_size, 1, "--local_rollout_forward_batch_size")
        require_at_least(self.lora_rank, 0, "--lora_rank")
        pick_device(self.device)


@dataclass
class EnvConfig:
    task_suite_name: str = field(default="default", metadata={"help": f"task suite: {sorted(TASK_SUITES)}"})
    task_ids: list = field(default_factory=list, metadata={"help": "tasks (overrides --task_suite_name)"})
    num_envs: int = field(default=8, metadata={"help": "parallel envs (split evenly over the tasks)"})
    max_env_length: int = field(default=0, metadata={"help": "episode step limit (0: each task's own)"})
    image_size: int = field(default=0, metadata={"help": "frame side in pixels (0: the policy's)"})
    handover_probability: float = field(
        default=0.0,
        metadata={
            "help": "reverse curriculum: chance that a training episode starts part-way along the scripted expert's "
            "trajectory, falling linearly to 0 over --handover_anneal of the run (0: off; evaluation never hands over)"
        },
    )
    handover_max_steps: int = field(
        default=30, metadata={"help": "the most expert steps before a hand-over (uniform in 1..N)"}
    )
    handover_tasks: list = field(default_factory=list, metadata={"help": "tasks that hand over (default: every task)"})
    handover_anneal: float = field(
        default=1.0,
        metadata={"help": "fraction of --total_episodes over which the hand-over probability falls to 0 (0: constant)"},
    )
    handover_action_noise: float = field(default=0.0, metadata={"help": "std of the expert's action noise"})

    @property
    def tasks(self) -> list[str]:
        return list(self.task_ids) if self.task_ids else list(TASK_SUITES[self.task_suite_name])

    def handover(self) -> dict | None:
        """The sub-envs' :class:`envs.wrappers.ExpertHandover` options, ``None`` when off."""
        if not self.handover_probability:
            return None
        tasks = list(self.handover_tasks) if self.handover_tasks else self.tasks
        return {"tasks": tasks, "max_steps": self.handover_max_steps, "action_noise": self.handover_action_noise}

    def handover_probability_at(self, episodes: int, total_episodes: int) -> float:
        """The hand-over probability after ``episodes`` of ``total_episodes`` finished episodes."""
        if not self.handover_anneal:
            return self.handover_probability
        left = 1.0 - episodes / (self.handover_anneal * total_episodes)
        return self.handover_probability * min(1.0, max(0.0, left))

    def validate(self) -> None:
        import envs

        if not self.task_ids and self.task_suite_name not in TASK_SUITES:
            raise ValueError(f"--task_suite_name {self.task_suite_name!r} is not one of {sorted(TASK_SUITES)}.")
        for task in self.tasks:
            try:
                envs.task_id(task)
            except ValueError as error:
                raise ValueError(f"--task_ids: {error}") from None
        require_at_least(self.num_envs, len(self.tasks), "--num_envs (one env per task at least)")
        require_at_least(self.max_env_length, 0, "--max_env_length")
        require_frame_side(self.image_size, "--image_size")
        for name in ("handover_probability", "handover_anneal"):
            require_between(getattr(self, name), 0, 1, f"--{name}")
        require_at_least(self.handover_max_steps, 1, "--handover_max_steps")
        require_at_least(self.handover_action_noise, 0.0, "--handover_action_noise")
        unknown = [t for t in self.handover_tasks if t not in self.tasks]
        if unknown:
            raise ValueError(f"--handover_tasks {unknown} are not among the run's tasks {self.tasks}.")
        scripted = TASK_SUITES["all"]
        if self.handover_probability and any(t not in scripted for t in self.handover()["tasks"]):
            raise ValueError(
                f"--handover_probability needs a scripted expert: only the built-in tasks {scripted} have one; "
                "name them with --handover_tasks."
            )


@dataclass
class PPOConfig:
    num_steps: int = field(default=32, metadata={"help": "rollout steps per env per iteration (gae)"})
    advantage_estimator: str = field(
        default="gae",
        metadata={
            "help": "gae (value head, num_steps per env) | grpo | rloo (one episode per env per iteration, "
            "advantages relative to --group_size episodes from the same initial state)"
        },
    )
    group_size: int = field(default=4, metadata={"help": "grpo/rloo: episodes per initial state (divides num_envs)"})
    loss_aggregation: str = field(
        default="sample",
        metadata={"help": "grpo/rloo: sample (every action weighs the same) | episode (every episode does)"},
    )
    group_credit: str = field(
        default="episode",
        metadata={
            "help": "grpo/rloo: episode (every step gets its episode's advantage) | to_go (each step's "
            "reward-to-go against the group: the PRM's shaping credits the steps after which it rose)"
        },
    )
    total_episodes: int = field(default=400, metadata={"help": "stop after this many finished episodes"})
    max_iterations: int = field(default=0, metadata={"help": "stop after this many iterations (0: no limit)"})
    num_epochs: int = field(default=2, metadata={"help": "PPO epochs per iteration"})
    num_minibatches: int = field(default=4, metadata={"help": "minibatches per epoch"})
    learning_rate: float = field(default=3e-5, metadata={"help": "policy learning rate"})
    anneal_lr: bool = field(default=False, metadata={"help": "policy lr falls linearly to 0 at --total_episodes"})
    value_learning_rate: float = field(default=1e-3, metadata={"help": "value head learning rate"})
    gamma: float = field(default=0.99, metadata={"help": "discount"})
    gae_lambda: float = field(default=0.95, metadata={"help": "GAE lambda"})
    clip_coef: float = field(default=0.2, metadata={"help": "PPO ratio clip"})
    value_clip: float = field(default=0.2, metadata={"help": "value clip (0: none)"})
    value_coef: float = field(default=0.5, metadata={"help": "value loss coefficient"})
    entropy_coef: float = field(default=0.0, metadata={"help": "entropy bonus coefficient"})
    kl_coef: float = field(default=0.0, metadata={"help": "KL penalty to the frozen initial policy (0: off)"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm"})
    norm_adv: bool = field(default=True, metadata={"help": "normalise advantages (True/False)"})
    skip_rewardless_batches: bool = field(
        default=True, metadata={"help": "no policy step on a rollout without any reward (True/False)"}
    )
    value_trunk_grad: bool = field(default=False, metadata={"help": "value loss trains the shared trunk too"})
    target_kl: float = field(default=0.0, metadata={"help": "stop an iteration's epochs above this KL (0: off)"})

    @property
    def grouped(self) -> bool:
        """Advantages from comparing the episodes of a group (grpo, rloo), whose returns are
        undiscounted episode sums, rather than from the value head (gae)."""
        return self.advantage_estimator != "gae"

    def learning_rate_at(self, episodes: int) -> float:
        """The policy's learning rate after ``episodes`` finished episodes."""
        left = max(0.0, 1.0 - episodes / self.total_episodes) if self.anneal_lr else 1.0
        return self.learning_rate * left

    def validate(self) -> None:
        from vla_rl.ppo import ADVANTAGE_ESTIMATORS, GROUP_CREDITS

        require_at_least(self.num_steps, 1, "--num_steps")
        if self.advantage_estimator not in ADVANTAGE_ESTIMATORS:
            raise ValueError(
                f"--advantage_estimator must be one of {', '.join(ADVANTAGE_ESTIMATORS)}, "
                f"got {self.advantage_estimator!r}."
            )
        require_at_least(self.group_size, 2, "--group_size")
        if self.loss_aggregation not in (("sample", "episode") if self.grouped else ("sample",)):
            raise ValueError(
                f"--loss_aggregation must be sample, or episode with --advantage_estimator grpo|rloo; "
                f"got {self.loss_aggregation!r} with {self.advantage_estimator}."
            )
        if self.group_credit not in (GROUP_CREDITS if self.grouped else ("episode",)):
            raise ValueError(
                f"--group_credit must be one of {', '.join(GROUP_CREDITS)}, and to_go needs --advantage_estimator "
                f"grpo|rloo; got {self.group_credit!r} with {self.advantage_estimator}."
            )
        require_at_least(self.total_episodes, 1, "--total_episodes")
        require_at_least(self.max_iterations, 0, "--max_iterations")
        require_at_least(self.num_epochs, 1, "--num_epochs")
        require_at_least(self.num_minibatches, 1, "--num_minibatches")
        require_positive(self.learning_rate, "--learning_rate")
        require_positive(self.value_learning_rate, "--value_learning_rate")
        for name in ("gamma", "gae_lambda"):
            require_between(getattr(self, name), 0, 1, f"--{name}")
        require_positive(self.clip_coef, "--clip_coef")
        for name in ("value_clip", "value_coef", "entropy_coef", "kl_coef", "target_kl"):
            require_at_least(getattr(self, name), 0.0, f"--{name}")
        require_positive(self.max_grad_norm, "--max_grad_norm")


@dataclass
class ScaleConfig:
    use_ray: str = field(default="auto", metadata={"help": "env workers as Ray actors: auto | True | False"})
    ray_address: str = field(default="", metadata={"help": "Ray cluster to join (default: $RAY_ADDRESS, else local)"})
    num_env_workers: int = field(default=0, metadata={"help": "Ray env worker actors (0: one per CPU, <= num_envs)"})
    prm_server_batch_size: int = field(default=64, metadata={"help": "most frames per PRM server call"})
    prm_server_wait_ms: float = field(default=5.0, metadata={"help": "longest wait for a PRM server batch to fill"})
    rollout_backend: str = field(default="auto", metadata={"help": "VLA rollout engine: auto | hf | vllm"})
    prm_backend: str = field(default="auto", metadata={"help": "PRM engine: auto | hf | vllm"})
    fsdp: str = field(default="auto", metadata={"help": "FSDP training across torchrun ranks: auto | True | False"})
    fsdp_ranks: int = field(
        default=0, metadata={"help": "FSDP ranks to launch as Ray Train workers from this process (0: torchrun's)"}
    )
    vllm_gpu_memory_utilization: float = field(default=0.3, metadata={"help": "GPU memory share of each vLLM engine"})

    def validate(self) -> None:
        from vla_rl.distributed.backends import resolve_backends

        require_at_least(self.num_env_workers, 0, "--num_env_workers")
        require_at_least(self.prm_server_batch_size, 1, "--prm_server_batch_size")
        require_at_least(self.prm_server_wait_ms, 0.0, "--prm_server_wait_ms")
        if not 0.0 < self.vllm_gpu_memory_utilization <= 1.0:
            share = self.vllm_gpu_memory_utilization
            raise ValueError(f"--vllm_gpu_memory_utilization must be in (0, 1], got {share}.")
        self.backends = resolve_backends(
            self.use_ray, self.rollout_backend, self.prm_backend, self.fsdp, self.ray_address, self.fsdp_ranks
        )


@dataclass
class RunConfig:
    run_root_dir: str = field(default="runs", metadata={"help": "runs are written under this directory"})
    exp_name: str = field(default="", metadata={"help": "run name (default: derived from the flags)"})
    seed: int = field(default=0, metadata={"help": "seed of everything"})
    save_freq: int = field(default=5, metadata={"help": "checkpoint every N iterations (and at the end)"})
    resume: bool = field(default=False, metadata={"help": "continue the run's latest checkpoint (True/False)"})
    save_video: bool = field(default=False, metadata={"help": "write annotated rollout videos (True/False)"})
    video_every: int = field(default=10, metadata={"help": "save every N-th finished training episode"})
    max_videos: int = field(default=20, metadata={"help": "training videos at most"})
    eval_episodes: int = field(default=20, metadata={"help": "held-out seeds per task in the final eval (0: none)"})
    eval_videos: int = field(default=2, metadata={"help": "eval videos per task"})
    eval_temperature: float = field(
        default=0.0,
        metadata={
            "help": "final eval: 0 decodes deterministically (each action token the bin nearest its expected bin); "
            "> 0 samples at this temperature"
        },
    )
    use_wandb: bool = field(default=False, metadata={"help": "log to Weights & Biases (True/False)"})
    wandb_offline: bool = field(default=True, metadata={"help": "keep wandb offline (True/False)"})
    wandb_project: str = field(default="vla-rl", metadata={"help": "wandb project"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0: torch's default)"})
    progress: bool = field(default=True, metadata={"help": "show progress bars (True/False)"})

    def validate(self) -> None:
        require_at_least(self.save_freq, 1, "--save_freq")
        require_at_least(self.video_every, 1, "--video_every")
        require_at_least(self.max_videos, 0, "--max_videos")
        require_at_least(self.eval_episodes, 0, "--eval_episodes")
        require_at_least(self.eval_videos, 0, "--eval_videos")
        require_at_least(self.eval_temperature, 0.0, "--eval_temperature")
        require_at_least(self.threads, 0, "--threads")
        if self.exp_name and (os.sep in self.exp_name or self.exp_name in (".", "..")):
            raise ValueError(f"--exp_name must be a plain name, got {self.exp_name!r}.")


@dataclass
class TrainConfig:
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    prm: PRMConfig = field(default_factory=PRMConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    run: RunConfig = field(default_factory=RunConfig)
    scale: ScaleConfig = field(default_factory=ScaleConfig)

    def validate(self) -> TrainConfig:
        for part in (self.run, self.env, self.ppo, self.prm, self.policy, self.scale):
            part.validate()
        if self.scale.num_env_workers > self.env.num_envs:
            raise ValueError(f"--num_env_workers ({self.scale.num_env_workers}) must be <= --num_envs.")
        if self.ppo.grouped and self.env.handover_probability:
            raise ValueError(
                f"--handover_probability needs --advantage_estimator gae: a group of {self.ppo.advantage_estimator} "
                "shares one initial state, and a hand-over would give its episodes different ones."
            )
        if self.ppo.grouped:
            groups, remainder = divmod(self.env.num_envs, self.ppo.group_size)
            if remainder or groups < len(self.env.tasks):
                raise ValueError(
                    f"--advantage_estimator {self.ppo.advantage_estimator}: --num_envs ({self.env.num_envs}) must be a "
                    f"multiple of --group_size ({self.ppo.group_size}) with one group per task at least "
                    f"({len(self.env.tasks)} tasks): try --num_envs {self.ppo.group_size * len(self.env.tasks)}."
                )
        return self

    @property
    def run_name(self) -> str:
        if self.run.exp_name:
            return self.run.exp_name
        prm = "prm" if self.prm.process_reward_model else "noprm"
        return f"ppo-{'-'.join(self.env.tasks)}-{prm}-seed{self.run.seed}"

    @property
    def run_dir(self) -> str:
        return os.path.join(self.run.run_root_dir, self.run_name)

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


COMPONENTS = {  # name: (component config, its section of --help)
    "policy": (PolicyConfig, "policy"),
    "env": (EnvConfig, "environments"),
    "prm": (PRMConfig, "process reward model"),
    "ppo": (PPOConfig, "PPO"),
    "run": (RunConfig, "run"),
    "scale": (ScaleConfig, "scale-out (Ray, vLLM, FSDP)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m vla_rl.train",
        description="PPO fine-tuning of a VLA policy in the simulated tasks, with an optional process reward model.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for name, (component, title) in COMPONENTS.items():
        group = parser.add_argument_group(title)
        for f in fields(component):
            default = f.default_factory() if callable(f.default_factory) else f.default
            kwargs = {"default": default, "help": f.metadata.get("help", ""), "dest": f"{name}.{f.name}"}
            if isinstance(default, bool):
                kwargs.update(type=str2bool, metavar="True|False")
            elif isinstance(default, list):
                kwargs.update(nargs="+", metavar=f.name.upper())
            else:
                kwargs.update(type=type(default), metavar=f.name.upper())
            group.add_argument(f"--{f.name}", **kwargs)
    return parser


def parse_config(argv: list[str] | None = None) -> TrainConfig:
    """Parse and validate; errors name the flag (argparse exits with status 2)."""
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    parts = {name: {} for name in COMPONENTS}
    for key, value in args.items():
        part, name = key.split(".", 1)
        parts[part][name] = value
    config = TrainConfig(**{name: COMPONENTS[name][0](**values) for name, values in parts.items()})
    try:
        return config.validate()
    except (ValueError, FileNotFoundError, TypeError) as error:
        parser.error(str(error))
