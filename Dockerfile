# One image for every ridehail component; docker-compose.yml picks the command
# (`ridehail api`, `worker`, `consumers`, `relay`, `db upgrade`).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The packages and their metadata only (.dockerignore keeps tests, docs and local state
# out); wheels exist for every dependency, so no compiler is needed.
COPY pyproject.toml README.md ./
COPY ridehail ./ridehail
COPY api ./api
COPY events ./events
COPY workflows ./workflows
COPY activities ./activities
RUN pip install . \
    && useradd --system --uid 10001 --no-create-home --home-dir /app ridehail

USER ridehail

# Configuration comes only from RIDEHAIL_* environment variables (docs/CONTRACT.md).
ENTRYPOINT ["ridehail"]
CMD ["--help"]
