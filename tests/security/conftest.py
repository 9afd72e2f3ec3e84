"""The serving tests' tiny saved model and its scorer."""

from tests.serve.conftest import model_dir, scorer  # noqa: F401
