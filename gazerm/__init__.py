"""gazerm: reward models that learn from implicit (gaze) and explicit human feedback."""

__version__ = "0.1.0"
