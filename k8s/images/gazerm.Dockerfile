# The image the Ray head, the GPU workers and the RayJob submitter run (k8s/raycluster.yaml,
# k8s/rayjob.yaml, k8s/rayservice.yaml): Ray's GPU image plus the CUDA build of torch and gazerm
# with its dependencies, from a checkout at /home/ray/gazerm (the RayJob's working_dir). Build from
# the repository root:
#   docker build -f k8s/images/gazerm.Dockerfile -t registry.example.com/gazerm:0.1.0-ray2.60.0-cu128 .
# Keep the Ray version equal to rayVersion in the manifests and to the Ray of any client that
# submits jobs.
FROM rayproject/ray:2.60.0-py311-gpu@sha256:0000000000000000000000000000000000000000000000000000000000000000

WORKDIR /home/ray/gazerm
COPY --chown=ray:users pyproject.toml README.md constraints.txt ./
COPY --chown=ray:users gazerm ./gazerm
COPY --chown=ray:users jobs ./jobs
# torch's CUDA wheels bring their own CUDA runtime; the nodes need only the NVIDIA driver.
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128 \
    && pip install --no-cache-dir -c constraints.txt .
USER ray
