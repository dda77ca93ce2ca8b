"""The VLA policy: action tokenizer (OpenVLA convention), model wrapper, value head."""
