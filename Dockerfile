# One image for every ridehail component; docker-compose.yml picks the command
# (`ridehail api`, `worker`, `consumers`, `relay`, `db upgrade`).
# The base is pinned to an exact Python release on an exact Debian release, so a rebuild
# gets the same interpreter; move it on purpose (and run the tests) to take updates.
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The dependencies first, exactly as locked (versions and hashes: requirements.lock,
# compiled from pyproject.toml with `uv pip compile --generate-hashes`), in a layer of
# their own that a change to the code does not rebuild. Wheels exist for every one of
# them, so no compiler is needed.
COPY requirements.lock ./
RUN pip install --require-hashes --no-deps -r requirements.lock

# Then the packages and their metadata only (.dockerignore keeps tests, docs and local
# state out), without resolving anything again.
COPY pyproject.toml README.md ./
COPY ridehail ./ridehail
COPY api ./api
COPY events ./events
COPY workflows ./workflows
COPY activities ./activities
COPY store ./store
COPY infra ./infra
COPY domain ./domain
RUN pip install --no-deps . \
    && pip check \
    && useradd --system --uid 10001 --no-create-home --home-dir /app ridehail

USER ridehail

# Healthy = the component this container runs works: the API answers /healthz, the
# worker reaches Temporal and NATS, the consumers and relay reach NATS
# (ridehail/healthcheck.py). docker-compose.yml may ask more (the API's /readyz).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "ridehail.healthcheck"]

# Configuration comes only from RIDEHAIL_* environment variables (docs/CONTRACT.md).
ENTRYPOINT ["ridehail"]
CMD ["--help"]
