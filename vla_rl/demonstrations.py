"""Expert demonstrations as cloning samples: every (frame, proprioceptive state, instruction,
action) of one or more directories that :mod:`envs.demos` recorded, and their extension by
DAgger's expert-labelled policy states (:mod:`vla_rl.dagger`)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from vla_rl import keys


@dataclass
class Demonstrations:
    """All (frame, state, instruction, action) samples of one or more demo directories."""

    images: np.ndarray  # (N, H, W, 3) uint8
    states: np.ndarray  # (N, 8) float32
    actions: np.ndarray  # (N, 7) float32
    instructions: list[str]
    tasks: list[str]
    image_size: int
    colour_positions: np.ndarray | None = None  # (N, C, 3) where every episode recorded them
    camera: str = keys.FRONT_CAMERA  # the view the frames come from (keys.VIEWS)

    def extended(self, samples: dict) -> Demonstrations:
        """These samples followed by ``samples`` (arrays as returned by :func:`vla_rl.dagger.collect`)."""
        colours = self.colour_positions
        if colours is not None:
            colours = np.concatenate([colours, samples["colour_positions"].astype(np.float32)])
        return replace(
            self,
            images=np.concatenate([self.images, samples["images"]]),
            states=np.concatenate([self.states, samples["states"].astype(np.float32)]),
            actions=np.concatenate([self.actions, samples["actions"].astype(np.float32)]),
            instructions=self.instructions + list(samples["instructions"]),
            colour_positions=colours,
        )

    @classmethod
    def load(
        cls, directories: list[str], labels: str = "expert", tasks: list[str] | None = None, relabel: bool = False
    ) -> Demonstrations:
        """``labels="expert"``: the expert's noise-free actions where recorded (DART-style: the
        states come from noisy execution, the labels say how to recover); ``"executed"``: the
        actions taken. ``tasks`` (short names) keeps only those tasks' episodes. ``relabel``
        adds the recorded counterfactual samples (the same frame with an instruction naming
        another object, labelled with the expert's action for it; frames whose label the expert
        left out, NaN, are skipped), which make the instruction matter; episodes without them
        contribute their own samples only."""
        import envs
        from envs.demos import iter_episodes, read_meta

        wanted = None if not tasks else {envs.task_id(task) for task in tasks}
        images, states, actions, instructions, found, sizes, cameras = [], [], [], [], set(), set(), set()
        colours = []
        for directory in directories:
            meta = read_meta(directory)
            sizes.add(int(meta["image_size"]))
            cameras.add(meta.get("camera", keys.FRONT_CAMERA))  # recorded before cameras: the front one
            for record, episode in iter_episodes(directory):
                if wanted is not None and record["task"] not in wanted:
                    continue
                found.add(record["task"])
                steps = len(episode.actions)
                images.append(episode.images[:steps])
                states.append(episode.states[:steps])
                clean = episode.expert_actions if labels == "expert" else None
                actions.append(episode.actions if clean is None else clean)
                instructions.extend([str(episode.instruction)] * steps)
                colours.append(None if episode.colour_positions is None else episode.colour_positions[:steps])
                if relabel and episode.alternative_actions is not None:
                    frame_colours = colours[-1]  # the same frames: the same objects
                    for k, text in enumerate(episode.alternative_instructions):
                        counterfactual = episode.alternative_actions[:steps, k]
                        labelled = ~np.isnan(counterfactual).any(axis=1)
                        images.append(episode.images[:steps][labelled])
                        states.append(episode.states[:steps][labelled])
                        actions.append(counterfactual[labelled])
                        instructions.extend([str(text)] * int(labelled.sum()))
                        colours.append(None if frame_colours is None else frame_colours[labelled])
        if not found:
            raise ValueError(f"--data {directories} holds no episodes of --tasks {tasks}.")
        if len(sizes) != 1:
            raise ValueError(f"--data directories have different image sizes {sorted(sizes)}; record them alike.")
        if len(cameras) != 1:
            raise ValueError(f"--data directories come from different cameras {sorted(cameras)}; record them alike.")
        return cls(
            np.concatenate(images),
            np.concatenate(states),
            np.concatenate(actions),
            instructions,
            sorted(found),
            sizes.pop(),
            None if any(c is None for c in colours) else np.concatenate(colours).astype(np.float32),
            cameras.pop(),
        )
