# The MLflow tracking server of k8s/mlflow.yaml: MLflow with the PostgreSQL driver and boto3 for
# S3 artifacts, run as a non-root user. Build:
#   docker build -f k8s/images/mlflow.Dockerfile -t registry.example.com/gazerm-mlflow:3.17.2 k8s/images
FROM python:3.11-slim@sha256:0000000000000000000000000000000000000000000000000000000000000000

RUN pip install --no-cache-dir mlflow==3.17.2 psycopg2-binary boto3 \
    && useradd --uid 1000 --create-home mlflow
# The basic-auth app's settings (no credentials; k8s/mlflow.yaml sets MLFLOW_AUTH_CONFIG_PATH).
COPY mlflow-basic-auth.ini /etc/mlflow/basic_auth.ini
# The root file system is read-only in the pod; /tmp is an emptyDir.
ENV HOME=/tmp
USER 1000
ENTRYPOINT ["mlflow"]
