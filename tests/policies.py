"""A VLAPolicy on a locally built tiny Qwen2-VL checkpoint, for tests."""


def tiny_vla_policy(checkpoint: str, max_batch: int = 4):
    from vla_rl.policy.action_tokenizer import ActionTokenizer
    from vla_rl.policy.vla import VLAPolicy
    from vla_rl.qwen.loading import load_model
    from vla_rl.qwen.processor import QwenImageTextProcessor

    model = load_model(checkpoint, "--vla_path")
    tokenizer = ActionTokenizer(model.config.get_text_config().vocab_size)
    return VLAPolicy(model, QwenImageTextProcessor.from_pretrained(checkpoint), tokenizer, max_batch=max_batch)
