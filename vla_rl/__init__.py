"""vla-rl: reinforcement-learning fine-tuning of vision-language-action policies.

Importing this package is cheap: heavy dependencies load in the modules that need them.
"""

__version__ = "0.1.0"
