"""The grounding and relation losses: colour words found in real prompts, targets and loss by hand."""

import numpy as np
import pytest
import torch

from envs.scene import COLOUR_NAMES
from vla_rl.grounding import (
    GroundingLoss,
    RelationLoss,
    colour_token_ids,
    compress,
    default_layer,
    grounding_targets,
    relation_targets,
)
from vla_rl.qwen.processor import QwenImageTextProcessor


@pytest.fixture(scope="module")
def processor(tiny_qwen):
    return QwenImageTextProcessor.from_pretrained(tiny_qwen)


def test_every_colour_word_is_one_distinct_token(processor):
    ids = colour_token_ids(processor.tokenizer)
    assert len(ids) == len(COLOUR_NAMES) == len(set(ids))


def test_colour_words_are_found_where_the_prompt_has_them(processor):
    texts = ["touch the red block", "push the blue block onto the green target"]
    inputs = processor(np.zeros((2, 56, 56, 3), np.uint8), texts)
    loss = GroundingLoss(processor.tokenizer, 8, layer=1)
    colours = loss.colours(inputs["input_ids"])
    tokens = [processor.tokenizer.convert_ids_to_tokens(row) for row in inputs["input_ids"].tolist()]
    found = [
        [(tokens[b][i].lstrip("Ġ"), COLOUR_NAMES[c]) for i, c in enumerate(row) if c >= 0]
        for b, row in enumerate(colours.tolist())
    ]
    assert found == [[("red", "red")], [("blue", "blue"), ("green", "green")]]


def test_loss_is_the_mse_against_the_named_objects_and_skips_absent_colours(processor):
    texts = ["touch the red block", "push the blue block onto the green target"]
    input_ids = processor(np.zeros((2, 56, 56, 3), np.uint8), texts)["input_ids"]
    loss = GroundingLoss(processor.tokenizer, 8, layer=1)
    with torch.no_grad():
        loss.head.weight.zero_()
        loss.head.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))
    where = torch.full((2, len(COLOUR_NAMES), 3), float("nan"))
    red, blue, green = (COLOUR_NAMES.index(c) for c in ("red", "blue", "green"))
    where[0, red] = torch.tensor([0.1, 0.2, 0.02])
    where[1, blue] = torch.tensor([-0.05, 0.0, 0.02])  # green is absent from the second frame
    grippers = torch.tensor([[0.0, 0.0], [0.05, 0.1]])
    hidden = (torch.zeros(2, input_ids.shape[1], 8), torch.randn(2, input_ids.shape[1], 8))
    value = loss(hidden, input_ids, where, grippers)
    # Targets: (x, y) relative per 10 cm, then absolute per 15 cm; the head answers (1, 0, 0, 0).
    targets = torch.tensor([[1.0, 2.0, 0.1 / 0.15, 0.2 / 0.15], [-1.0, -1.0, -0.05 / 0.15, 0.0]])
    expected = ((targets - torch.tensor([1.0, 0.0, 0.0, 0.0])) ** 2).mean()
    torch.testing.assert_close(value, expected)
    where[0, red] = float("nan")
    where[1, blue] = float("nan")
    assert loss(hidden, input_ids, where, grippers) is None  # nothing named is in view


def test_targets_are_clipped_and_the_default_layer_is_mid_stack():
    far = grounding_targets(torch.tensor([[1.0, -1.0]]), torch.zeros(1, 2))
    assert far.tolist() == [[4.0, -4.0, 4.0, -4.0]]
    assert [default_layer(n) for n in (1, 2, 4, 5)] == [1, 1, 2, 3]


def test_relation_targets_by_hand():
    block = torch.tensor([[0.10, 0.0, 0.02]])
    destination = torch.tensor([[0.10, 0.03, 0.0]])
    gripper = torch.tensor([[0.10, -0.04, 0.05]])
    targets = relation_targets(block, destination, gripper)
    log = np.log1p
    # gripper -> block (0, 4 cm, -3 cm); block -> destination (0, 3 cm, -2 cm); distances 5 cm and sqrt(13) cm
    expected = [0.0, log(4.0), -log(3.0), 0.0, log(3.0), -log(2.0), log(5.0), log(np.sqrt(13.0))]
    np.testing.assert_allclose(targets[0].numpy(), expected, rtol=1e-5, atol=1e-6)
    # compression keeps the sign and is finer near zero than far away
    values = compress(torch.tensor([-0.3, -0.01, 0.0, 0.01, 0.02, 0.3, 0.31]))
    assert values[2] == 0 and values[0] == -values[5] and values[1] == -values[3]
    assert values[4] - values[3] > 10 * (values[6] - values[5])  # 1 cm near 0 counts more than 1 cm far out


def test_relation_loss_reads_the_answer_position_and_the_named_pair(processor):
    texts = ["touch the red block", "push the blue block onto the green target", "what is this"]
    input_ids = processor(np.zeros((3, 56, 56, 3), np.uint8), texts)["input_ids"]
    loss = RelationLoss(processor.tokenizer, 8, layer=1)
    red, blue, green = (COLOUR_NAMES.index(c) for c in ("red", "blue", "green"))
    assert loss.named(input_ids).tolist() == [[red, red], [blue, green], [-1, -1]]
    with torch.no_grad():
        loss.head.weight.zero_()
        loss.head.bias.zero_()
        loss.head.weight[0, 0] = 1.0  # the first output copies hidden unit 0
    where = torch.full((3, len(COLOUR_NAMES), 3), float("nan"))
    where[0, red] = torch.tensor([0.1, 0.2, 0.02])
    where[1, blue] = torch.tensor([-0.05, 0.0, 0.02])
    where[1, green] = torch.tensor([0.05, 0.0, 0.0])
    grippers = torch.tensor([[0.0, 0.0, 0.1], [0.05, 0.1, 0.1], [0.0, 0.0, 0.1]])
    hidden = torch.zeros(3, input_ids.shape[1], 8)
    hidden[:, -1, 0] = 7.0  # the answer position; other positions must not matter
    hidden[:, 0, 0] = -100.0
    value = loss((torch.randn_like(hidden), hidden), input_ids, where, grippers)
    targets = torch.cat(
        [
            relation_targets(where[0, red][None], where[0, red][None], grippers[0][None]),
            relation_targets(where[1, blue][None], where[1, green][None], grippers[1][None]),
        ]
    )
    answers = torch.zeros_like(targets)
    answers[:, 0] = 7.0
    torch.testing.assert_close(value, ((targets - answers) ** 2).mean())  # the third prompt names nothing
    where[1, green] = float("nan")  # the destination is out of view: that row is skipped too
    where[0, red] = float("nan")
    assert loss((hidden, hidden), input_ids, where, grippers) is None
