"""The vLLM backends' request building and output parsing, checked on CPU without vLLM: outputs
are built in vLLM's shape from the real transformers model's log-probabilities, and parsing them
must reproduce the transformers backends' numbers."""

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from reward.qwen_prm import QwenProcessRM
from reward.vllm_prm import parse_prm_outputs, prm_sampling_kwargs
from tests.policies import tiny_vla_policy
from vla_rl.checkpointing import apply_lora
from vla_rl.policy.vllm_rollout import action_sampling_kwargs, merged_named_tensors, parse_action_outputs
from vla_rl.qwen import vllm_engine

RNG = np.random.default_rng(1)
FRAMES = RNG.integers(0, 256, (5, 56, 56, 3), dtype=np.uint8)
TEXTS = ["touch the red block", "push the blue block onto the green target"] * 2 + ["touch the cyan block"]


def vllm_output(token_ids, per_position: list[dict]):
    """A vLLM ``RequestOutput``'s shape: ``outputs[0].token_ids`` and ``.logprobs``."""
    logprobs = [{t: SimpleNamespace(logprob=lp, rank=1) for t, lp in pos.items()} for pos in per_position]
    return SimpleNamespace(outputs=[SimpleNamespace(token_ids=list(token_ids), logprobs=logprobs)])


@pytest.fixture(scope="module")
def policy(tiny_qwen):
    return tiny_vla_policy(tiny_qwen, max_batch=8)


def test_requests_carry_the_chat_prompt_with_one_placeholder_and_the_frame(policy):
    processor = policy.processor
    extra = np.array([[7, 8]] * len(FRAMES))
    built = vllm_engine.requests(processor, FRAMES, TEXTS, extra)
    for request, frame, text in zip(built, FRAMES, TEXTS, strict=True):
        ids = request["prompt_token_ids"]
        assert ids[-2:] == [7, 8] and ids.count(processor.image_token_id) == 1
        placeholder = ids.index(processor.image_token_id)
        expanded = ids[:placeholder] + [processor.image_token_id] * 4 + ids[placeholder + 1 : -2]
        assert expanded == processor.prompt_ids(text, 4)  # what the transformers backend feeds the model
        np.testing.assert_array_equal(np.asarray(request["multi_modal_data"]["image"]), frame)
    with pytest.raises(ValueError, match="5 frames but 4 texts"):
        vllm_engine.requests(processor, FRAMES, TEXTS[:4])


def test_prm_parsing_reproduces_the_transformers_scores_for_every_prompt(tiny_qwen):
    prm = QwenProcessRM(tiny_qwen, device="cpu")
    expected = prm.score(FRAMES, TEXTS)
    inputs = prm.processor(FRAMES, prm.prompts(TEXTS))
    with torch.no_grad():
        full = torch.log_softmax(prm.model(**inputs, logits_to_keep=1).logits[:, -1].float(), -1)  # raw mode
    positive, negative = prm.answer_ids
    raw = [vllm_output([positive], [{positive: float(r[positive]), negative: float(r[negative])}]) for r in full]
    np.testing.assert_allclose(parse_prm_outputs(raw, prm.answer_ids), expected, atol=1e-5)
    two = torch.log_softmax(full[:, prm.answer_ids], -1)  # processed mode: normalised over the two tokens
    processed = [vllm_output([negative], [{positive: float(a), negative: float(b)}]) for a, b in two]
    np.testing.assert_allclose(parse_prm_outputs(processed, prm.answer_ids), expected, atol=1e-5)
    assert len(set(np.round(expected, 6))) > 1  # the prompts differ: each output is read, not the first
    kwargs = prm_sampling_kwargs(prm.answer_ids)
    assert kwargs["allowed_token_ids"] == prm.answer_ids and kwargs["logprobs"] == 2 and kwargs["max_tokens"] == 1
    with pytest.raises(ValueError, match="answer token ids .* are not among"):
        parse_prm_outputs([vllm_output([positive], [{positive: -0.1}])], prm.answer_ids)


def test_action_parsing_sums_token_log_probs_like_the_policy(policy):
    torch.manual_seed(0)
    sampled = policy.act(FRAMES, TEXTS, temperature=0.8)
    logits, _ = policy.forward_actions(FRAMES, TEXTS, sampled["token_ids"])
    per_token = torch.log_softmax(logits.detach() / 0.8, -1)
    first = policy.action_tokenizer.first_id
    outputs = []
    for ids, rows in zip(sampled["token_ids"].tolist(), per_token, strict=True):
        outputs.append(vllm_output(ids, [{t: float(row[t - first])} for t, row in zip(ids, rows, strict=True)]))
    token_ids, logprobs = parse_action_outputs(outputs, 7, first)
    np.testing.assert_array_equal(token_ids, sampled["token_ids"].numpy())
    np.testing.assert_allclose(logprobs, sampled["logprobs"].numpy(), atol=1e-4)
    kwargs = action_sampling_kwargs(first, policy.action_tokenizer.vocab_size, 7, 0.8)
    assert kwargs["allowed_token_ids"] == list(range(first, first + 256))
    assert kwargs["min_tokens"] == kwargs["max_tokens"] == 7 and kwargs["temperature"] == 0.8
    with pytest.raises(ValueError, match="expected 7 action-bin ids"):
        parse_action_outputs([vllm_output([3] * 7, [{3: -1.0}] * 7)], 7, first)


def test_weights_sent_to_vllm_have_the_lora_merged_and_the_trainer_model_stays_unmerged(policy):
    lora_policy = copy.deepcopy(policy)
    apply_lora(lora_policy, rank=4, alpha=8)
    for name, parameter in lora_policy.model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.05)  # a trained adapter (B starts at zero)
    before = lora_policy.evaluate(FRAMES[:2], TEXTS[:2], torch.full((2, 7), policy.action_tokenizer.first_id))
    merged = dict(merged_named_tensors(lora_policy.model))
    reference = copy.deepcopy(lora_policy.model).merge_and_unload().state_dict()
    assert merged.keys() == reference.keys() and not any("lora" in k for k in merged)
    changed = 0
    for name, tensor in reference.items():
        torch.testing.assert_close(merged[name], tensor)
        changed += int(not torch.equal(tensor, policy.model.state_dict()[name]))
    assert changed > 0  # the adapter moved some weights
    after = lora_policy.evaluate(FRAMES[:2], TEXTS[:2], torch.full((2, 7), policy.action_tokenizer.first_id))
    torch.testing.assert_close(after["logprobs"], before["logprobs"])  # unmerged again: same function
