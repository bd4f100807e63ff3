# syntax=docker/dockerfile:1
#
# tracer: one image for the API (`tracer serve`), the rq workers (`tracer worker`)
# and the one-shot migration (`tracer db upgrade`). See docs/deploy.md.
#
#   docker build -t tracer .
#   docker compose up -d --build

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------
# build: turn the project and every dependency into wheels. Nothing from this
# stage reaches the runtime image except the wheels themselves.
# ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src

# Exactly what `pip install .` needs: metadata (README.md is the package's
# readme) plus the packages listed in [tool.setuptools.packages.find].
COPY pyproject.toml README.md ./
COPY tracer ./tracer
COPY api ./api
COPY workers ./workers
COPY migrations ./migrations

RUN --mount=type=cache,target=/root/.cache/pip \
    pip wheel --wheel-dir /wheels ".[server]"

# ---------------------------------------------------------------------------
# runtime: slim Python, the installed wheels, an unprivileged user.
# ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore

RUN groupadd --system --gid 10001 tracer \
 && useradd --system --uid 10001 --gid tracer \
        --home-dir /home/tracer --create-home --shell /usr/sbin/nologin tracer

# The wheels are bind-mounted from the build stage, so they never become a layer.
# Nothing to pin: --no-index installs exactly the wheels built above.
# hadolint ignore=DL3013
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels "tracer[server]"

USER tracer
WORKDIR /home/tracer

EXPOSE 8000

# No curl in the slim image: ask the API itself with the standard library.
# urlopen raises on 503 (Postgres or Redis unreachable), so the check fails then too.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/api/v1/health', timeout=4)"]

CMD ["tracer", "serve", "--host", "0.0.0.0", "--port", "8000"]
