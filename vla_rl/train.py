"""PPO fine-tuning of a VLA policy with an optional process reward model.

Command line (``scripts/train_rl_vllm_ray_fsdp_mini.sh`` passes its arguments here)::

    python -m vla_rl.train --process_reward_model True --prm_reward_weight 0.1 --save_video True

The flags are parsed and validated (paths, ranges, task names) before torch or any model is
imported, so a bad value fails at once with a message naming the flag. The work is done by
:func:`vla_rl.trainer.train`.
"""

from __future__ import annotations

import logging
import sys

from vla_rl.config import parse_config


def main(argv: list[str] | None = None) -> int:
    config = parse_config(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from vla_rl.trainer import train

    try:
        train(config)
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
