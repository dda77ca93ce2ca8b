"""Package data: MJCF scenes (``mjcf/``), rendered task pictures (``docs/``) and model presets.

Kept as a package so that ``importlib.resources.files("assets")`` finds the files both in a
source checkout and in an installed wheel.
"""

import os

MODELS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models")  # the embedded default models
