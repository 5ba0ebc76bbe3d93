# One image for the compose stack's demo app, its locust master and workers, and its DynamoDB
# Local readiness probe. docker-compose.yml builds it once, as gateway-local:dev; by hand:
#   docker build -t dynamodb-gateway .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The package first: its layer is rebuilt only when the package changes.
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN pip install ".[redis,load,emulator]"

COPY config ./config
COPY load_tests ./load_tests

RUN useradd --create-home --uid 10001 gateway
USER gateway

# 8080: the demo app; 8089: locust's web UI (master).
EXPOSE 8080 8089
CMD ["python", "load_tests/demo_app.py", "--host", "0.0.0.0", "--port", "8080"]
