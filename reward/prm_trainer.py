"""The pieces the Hugging Face ``Trainer`` needs to train a process reward model: frames of a
PRM dataset as examples (:class:`FrameDataset`), their collation into model inputs
(:class:`FrameCollator`), ``ProcessRewardTrainer`` (:func:`make_trainer_class`) and the frame
metrics it reports (:func:`compute_metrics`). The command line is :mod:`reward.train_prm`."""

from __future__ import annotations

import os

from reward import labels as L

GROUNDING_HEAD_FILE = "grounding_head.pt"
RELATION_HEAD_FILE = "relation_head.pt"


class FrameDataset:
    """Rows of one split as training examples (the image is read when the item is); with
    ``grounding`` (needed by the grounding and relation losses), each item also carries where
    every palette colour's object and the gripper are. With ``colour_permutation`` > 0, that
    fraction of the items is recoloured by a random permutation of the palette, instruction and
    colour positions alike (:mod:`reward.augment`; same label), drawn from ``seed``."""

    def __init__(
        self,
        rows: list[dict],
        target: str,
        progress_weight: float,
        prompt_template: str,
        grounding: bool = False,
        colour_permutation: float = 0.0,
        seed: int = 0,
    ):
        import numpy as np

        self.rows = rows
        self.targets = [L.target_probability(target, row, progress_weight) for row in rows]
        self.prompt_template = prompt_template
        self.prompts = [prompt_template.format(instruction=row["instruction"]) for row in rows]
        self.grounding = grounding
        self.colour_permutation = colour_permutation
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        from reward.dataset import load_image

        row = self.rows[index]
        item = {"image": load_image(row["image_path"]), "prompt": self.prompts[index], "target": self.targets[index]}
        positions = row.get("colour_positions")
        if self.colour_permutation and self.rng.random() < self.colour_permutation:
            from reward import augment

            permutation = self.rng.permutation(len(augment.COLOUR_NAMES))
            item["image"] = augment.recolour(item["image"], permutation)
            instruction = augment.rename_colours(row["instruction"], permutation)
            item["prompt"] = self.prompt_template.format(instruction=instruction)
            positions = positions and augment.permute_positions(positions, permutation)
        if self.grounding:
            item["colour_positions"] = [[float("nan")] * 3 if p is None else p for p in positions]
            item["gripper"] = row["gripper"]
        return item

    def class_weights(self) -> tuple[float, float]:
        """(positive, negative) weights giving each class half of the total weight."""
        positives = sum(t >= 0.5 for t in self.targets)
        negatives = len(self.targets) - positives
        if not positives or not negatives:
            return 1.0, 1.0
        return len(self.targets) / (2 * positives), len(self.targets) / (2 * negatives)


class FrameCollator:
    """Stacks frames and prompts into model inputs plus ``targets`` and ``weights``."""

    def __init__(self, processor, weights: tuple[float, float]):
        self.processor = processor
        self.weights = weights

    def __call__(self, items: list[dict]) -> dict:
        import numpy as np
        import torch

        batch = self.processor(np.stack([i["image"] for i in items]), [i["prompt"] for i in items])
        targets = torch.tensor([i["target"] for i in items], dtype=torch.float32)
        batch["targets"] = targets
        batch["weights"] = torch.where(targets >= 0.5, self.weights[0], self.weights[1]).float()
        if "colour_positions" in items[0]:
            batch["colour_positions"] = torch.tensor([i["colour_positions"] for i in items], dtype=torch.float32)
            batch["grippers"] = torch.tensor([i["gripper"] for i in items], dtype=torch.float32)
        return batch


def make_trainer_class():
    """``ProcessRewardTrainer`` (built on first use so that importing this module stays cheap)."""
    import torch
    from transformers import Trainer

    class ProcessRewardTrainer(Trainer):
        """A ``transformers.Trainer`` whose loss is the weighted cross-entropy between the 2-way
        softmax over the answer tokens at the answer position and the target probability.

        Auxiliary losses on privileged simulator labels, training batches only: with
        ``grounding`` (a :class:`vla_rl.grounding.GroundingLoss`), ``grounding_weight`` times its
        loss at the instruction's colour words; with ``relation`` (a
        :class:`vla_rl.grounding.RelationLoss`), ``relation_weight`` times its loss at the answer
        position. Their heads are optimised with the model, saved in every ``checkpoint-N/`` and
        restored on resume, and are not part of the final checkpoint. Evaluation losses are the
        PRM loss alone."""

        def __init__(
            self,
            *args,
            answer_ids: list[int],
            grounding=None,
            grounding_weight: float = 0.0,
            relation=None,
            relation_weight: float = 0.0,
            **kwargs,
        ):
            super().__init__(*args, **kwargs)
            self.answer_ids = list(answer_ids)
            # name -> (loss module, weight, checkpoint file)
            self.auxiliary = {
                name: (module, weight, filename)
                for name, module, weight, filename in (
                    ("grounding_loss", grounding, grounding_weight, GROUNDING_HEAD_FILE),
                    ("relation_loss", relation, relation_weight, RELATION_HEAD_FILE),
                )
                if module is not None
            }
            self._auxiliary_losses: dict[str, list[float]] = {name: [] for name in self.auxiliary}
            self._last_evaluation = None  # (global step, EvalLoopOutput) of the latest evaluation pass

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inputs = dict(inputs)
            targets, weights = inputs.pop("targets"), inputs.pop("weights")
            where, grippers = inputs.pop("colour_positions", None), inputs.pop("grippers", None)
            auxiliary = bool(self.auxiliary) and where is not None and model.training
            outputs = model(**inputs, logits_to_keep=1, use_cache=False, output_hidden_states=auxiliary)
            pair = outputs.logits[:, -1, self.answer_ids].float()
            logp = torch.log_softmax(pair, dim=-1)
            per_frame = -(targets * logp[:, 0] + (1.0 - targets) * logp[:, 1])
            loss = (weights * per_frame).sum() / weights.sum()
            if auxiliary:
                for name, (module, weight, _) in self.auxiliary.items():
                    aux = module(outputs.hidden_states, inputs["input_ids"], where, grippers)
                    if aux is not None:
                        loss = loss + weight * aux
                        self._auxiliary_losses[name].append(float(aux.detach()))
            return (loss, {"logits": pair}) if return_outputs else loss

        def log(self, logs: dict, *args, **kwargs) -> None:
            if "loss" in logs:
                for name, values in self._auxiliary_losses.items():
                    if values:
                        logs[name] = round(sum(values) / len(values), 4)
                        values.clear()
            super().log(logs, *args, **kwargs)

        def create_optimizer(self, *args, **kwargs):
            fresh = self.optimizer is None  # the Trainer builds it once and returns it afterwards
            optimizer = super().create_optimizer(*args, **kwargs)
            if fresh:
                for module, _, _ in self.auxiliary.values():
                    optimizer.add_param_group({"params": list(module.parameters()), "weight_decay": 0.0})
            return optimizer

        def save_model(self, output_dir=None, _internal_call=False):
            super().save_model(output_dir, _internal_call)
            if output_dir is not None and self.args.should_save:
                for module, _, filename in self.auxiliary.values():
                    torch.save(module.state_dict(), os.path.join(output_dir, filename))

        def restore_auxiliary_heads(self, checkpoint: str) -> None:
            """Load the auxiliary heads that :meth:`save_model` wrote into ``checkpoint`` (those that exist)."""
            for module, _, filename in self.auxiliary.values():
                path = os.path.join(checkpoint, filename)
                if os.path.isfile(path):
                    module.load_state_dict(torch.load(path, weights_only=True))

        def evaluation_loop(self, *args, **kwargs):
            output = super().evaluation_loop(*args, **kwargs)
            self._last_evaluation = (self.state.global_step, output)
            return output

        def final_evaluation(self):
            """The trained model's validation predictions and ``eval_`` metrics. With step-based
            evaluation the Trainer has already evaluated at the last step, with these weights: that
            pass is reused; otherwise (a resumed run that had nothing left to train) a new one is made."""
            step, output = self._last_evaluation or (None, None)
            if step != self.state.global_step or output is None or output.predictions is None:
                output = self.predict(self.eval_dataset, metric_key_prefix="eval")
            metrics = {k: v for k, v in output.metrics.items() if k.startswith("eval_")}  # not the logged epoch
            return output.predictions, metrics

        def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
            inputs = self._prepare_inputs(inputs)
            with torch.no_grad():
                loss, outputs = self.compute_loss(model, inputs, return_outputs=True)
            p_positive = torch.softmax(outputs["logits"], dim=-1)[:, :1]
            return loss.detach(), p_positive.detach(), inputs["targets"].detach()

    return ProcessRewardTrainer


def compute_metrics(eval_prediction) -> dict:
    """Frame-level metrics of P(positive) against the hard label (target >= 0.5)."""
    from reward.prm_metrics import frame_metrics

    scores = eval_prediction.predictions.reshape(-1)
    labels = eval_prediction.label_ids.reshape(-1) >= 0.5
    metrics = frame_metrics(scores, labels)
    return {k: metrics[k] for k in ("f1", "precision", "recall", "balanced_hmean", "ece", "brier")}


def tune_threshold(scores, rows: list[dict], max_window: int = 1) -> tuple[int, float, float] | None:
    """(score window, threshold, F1) of the best frame-level F1 of ``scores`` on the validation
    ``rows``, over causal score windows 1..``max_window`` (``reward.prm_metrics``); ``None``
    when they hold no completed frame to tune on."""
    from reward.dataset import episode_key
    from reward.prm_metrics import best_window_threshold

    labels = [bool(row["completion"]) for row in rows]
    if not any(labels):
        print("[PRM train] no completed frame in the validation split: decision threshold left at 0.5")
        return None
    episodes = [episode_key(row) for row in rows]
    frames = [row["frame"] for row in rows]
    return best_window_threshold(scores, labels, episodes, frames, range(1, max_window + 1))
