# One image for the three processes: katalyst-agent, katalyst-controller and
# katalyst-scheduler-extender (deploy/helm/katalyst picks the command).
#   docker build -t ghcr.io/katalyst-py/katalyst:0.1.0 .
# The base is pinned to an exact Python and Debian release; pin its digest too
# when you mirror it (`--build-arg PYTHON_IMAGE=registry/python@sha256:...`).
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
# The wheel is built alone first, so that a code change reuses the dependency layer.
COPY pyproject.toml README.md ./
COPY katalyst ./katalyst
COPY agent ./agent
COPY controllers ./controllers
COPY scheduler_plugins ./scheduler_plugins
RUN python -m venv /opt/katalyst \
 && /opt/katalyst/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/katalyst/bin/pip install --no-cache-dir . \
 && /opt/katalyst/bin/python -m compileall -q /opt/katalyst/lib

FROM ${PYTHON_IMAGE}
# The agent shapes NICs (tc, from iproute2), classifies traffic by cgroup
# (nftables) and enters network namespaces (nsenter, from util-linux).
RUN apt-get update \
 && apt-get install -y --no-install-recommends iproute2 nftables util-linux \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 65532 --user-group --no-create-home --shell /usr/sbin/nologin katalyst
COPY --from=build /opt/katalyst /opt/katalyst
ENV PATH=/opt/katalyst/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# The controller and the extender run as this user. The agent's DaemonSet runs
# it as root (runAsUser: 0, privileged): cgroups, tc and nftables need it.
USER 65532:65532
CMD ["katalyst-controller", "--help"]
