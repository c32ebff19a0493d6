# telenet hub: HTTP/WebSocket 8080, DICOM 11112 (AE TELENET), HL7 MLLP 2575.
# Build: docker build -t telenet .      Run with PostgreSQL and an Orthanc PACS: see docker-compose.yml, docs/deploy.md.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# tzdata: routing and fees work in Asia/Shanghai (zoneinfo needs the system time zone database).
RUN apt-get update \
    && apt-get install -y --no-install-recommends tzdata \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 telenet \
    && useradd --system --uid 10001 --gid telenet --home-dir /var/lib/telenet --no-create-home \
       --shell /usr/sbin/nologin telenet \
    && install -d -o telenet -g telenet -m 0750 /var/lib/telenet

WORKDIR /opt/telenet
COPY pyproject.toml README.md ./
COPY telenet ./telenet
COPY gateways ./gateways
COPY schemas ./schemas
COPY fixtures ./fixtures
COPY deploy/entrypoint.sh deploy/demo-pacs.json ./deploy/
# Editable install: telenet reads schemas/ next to the package, from this source tree.
RUN pip install -e '.[postgres]' && chmod 0755 deploy/entrypoint.sh

# Listen on every interface inside the container; publish only what each site needs (docker-compose.yml).
ENV TELENET_VAR_DIR=/var/lib/telenet \
    TELENET_HTTP_HOST=0.0.0.0 \
    TELENET_HTTP_PORT=8080 \
    TELENET_DICOM_HOST=0.0.0.0 \
    TELENET_DICOM_PORT=11112 \
    TELENET_HL7_HOST=0.0.0.0 \
    TELENET_HL7_PORT=2575 \
    TMPDIR=/var/lib/telenet/tmp

USER telenet
# SQLite file (when no PostgreSQL), received DICOM files and, unless TELENET_SECRET_FILE says otherwise, the secret.
VOLUME ["/var/lib/telenet"]
EXPOSE 8080 11112 2575

HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('TELENET_HTTP_PORT', '8080'), timeout=4)"

# entrypoint.sh: read the PostgreSQL password from PGPASSWORD_FILE, run `telenet db upgrade`, then `telenet "$@"`.
ENTRYPOINT ["/opt/telenet/deploy/entrypoint.sh"]
CMD ["serve"]
