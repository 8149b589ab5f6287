# syntax=docker/dockerfile:1
# Herald image: one image for every role (`herald node | router | control | drain`).
#
#   docker build -t herald:0.1.0 .
#   docker run --rm -p 8000:8000 -e HERALD_JWT_SECRET=... -e HERALD_API_KEY=... herald:0.1.0 node
#
# Stage 1 builds wheels for Herald and every dependency (binary wheels for the compiled ones:
# uvloop, orjson, hiredis, msgpack, cryptography) and installs them into a virtualenv.
# Stage 2 copies only that virtualenv onto a clean slim image and runs as uid 10001.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Only what the wheel is built from (the package-dir mapping of pyproject.toml); .dockerignore
# keeps tests, charts and caches out of the build context.
COPY pyproject.toml README.md ./
COPY herald/ herald/
COPY core/ core/
COPY node/ node/
COPY router/ router/
COPY control/ control/
COPY loadtest/ loadtest/
RUN pip wheel --wheel-dir /wheels --prefer-binary \
        --only-binary=uvloop,orjson,hiredis,msgpack,cryptography . \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-index --find-links /wheels herald \
 && /opt/venv/bin/herald --version

FROM ${PYTHON_IMAGE} AS runtime
# tini reaps the preStop hook's processes and forwards signals; Herald itself drains on SIGTERM.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 herald \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin herald
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HERALD_HOST=0.0.0.0
USER 10001:10001
WORKDIR /tmp
# node, router, control (one per process: choose with the command)
EXPOSE 8000 8001 8002
# No HEALTHCHECK: the port depends on the role, and Kubernetes uses the chart's probes
# (/healthz liveness, /readyz readiness) instead.
ENTRYPOINT ["/usr/bin/tini", "--", "herald"]
CMD ["node"]
