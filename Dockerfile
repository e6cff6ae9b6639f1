# Gateway: the standalone proxy (`gateway serve`) on an embedded SQLite store in /data.
#   docker build -t gateway .
#   docker run -p 8000:8000 -p 127.0.0.1:8001:8001 -v gateway-data:/data \
#     -e GATEWAY_SECRET=... -e GATEWAY_UPSTREAM__URL=http://api.internal:9000 gateway
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GATEWAY_SERVER__LISTEN=0.0.0.0:8000 \
    GATEWAY_SERVER__ADMIN_LISTEN=0.0.0.0:8001 \
    GATEWAY_STORAGE__URL=sqlite:////data/gateway.db

# An unprivileged user that owns only the data directory.
RUN groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid gateway --home-dir /data --no-create-home gateway \
    && mkdir /data \
    && chown gateway:gateway /data

WORKDIR /app
COPY pyproject.toml README.md ./
COPY requirements/lock.txt ./requirements/lock.txt
COPY gateway ./gateway
RUN pip install --no-cache-dir -c requirements/lock.txt . && rm -rf /app

WORKDIR /data
VOLUME ["/data"]
USER 10001:10001
EXPOSE 8000 8001

# Liveness from the admin listener at the address the gateway uses (server.admin_listen
# from the environment or config, or `serve --admin-listen`); slim images have no curl.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-m", "gateway.healthcheck"]

ENTRYPOINT ["gateway"]
CMD ["serve"]
