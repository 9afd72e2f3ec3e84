"""The MLflow model registry: a search's best model becomes a version with its metrics and an alias.

The run's ``model`` artifact is a gazerm model directory, not an MLflow model flavour, and MLflow 3's
``mlflow.register_model("runs:/…")`` only accepts flavoured or LoggedModel artifacts; so versions are
created from the artifact's URI directly, which the UI shows and links back to the run all the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gazerm.errors import ConfigError

MODEL_ARTIFACT = "model"
REGISTERED_TAG = "gazerm.registered_model"  # on a search's parent run: "name/version" it registered


def register_run_model(
    tracking_uri: str, name: str, run_id: str, metrics: Mapping[str, float], alias: str
) -> Any:
    """Register ``run_id``'s model directory as a new version of ``name``, tagged with its metrics."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    try:
        client.create_registered_model(name)
    except MlflowException as error:
        if error.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    source = f"{client.get_run(run_id).info.artifact_uri}/{MODEL_ARTIFACT}"
    version = client.create_model_version(
        name, source, run_id=run_id, tags={key: str(value) for key, value in metrics.items()}
    )
    client.set_registered_model_alias(name, alias, version.version)
    return client.get_model_version(name, version.version)


def promote(tracking_uri: str, name: str, version: str, alias: str) -> Any:
    """Point ``alias`` (e.g. ``champion``) at ``version``; a ConfigError if that version does not exist."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    try:
        client.get_model_version(name, version)  # fails with a clear message before any alias moves
    except MlflowException as error:
        raise ConfigError(f"model {name!r} version {version}: {error.message}") from error
    client.set_registered_model_alias(name, alias, version)
    return client.get_model_version(name, version)


def model_versions(tracking_uri: str, name: str) -> list[Any]:
    """Every version of ``name``, newest first, each with its ``aliases`` (which a search leaves out)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    found = client.search_model_versions(f"name = '{name}'")
    numbers = sorted((int(version.version) for version in found), reverse=True)
    return [client.get_model_version(name, str(number)) for number in numbers]
