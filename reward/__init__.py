"""Process reward models and the reward wrappers that turn their scores into shaped rewards."""
