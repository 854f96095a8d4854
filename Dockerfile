# One image for every role: the API (default command), the worker and the migrations
# (see docker-compose.yml for each command).
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    LOG_FORMAT=json \
    HOST=0.0.0.0
COPY pyproject.toml README.md ./
COPY core core
COPY service service
COPY worker worker
COPY migrations migrations
COPY trainsvc_client trainsvc_client
COPY examples examples
RUN pip install '.[keras]' \
    && useradd --create-home trainsvc \
    && mkdir -p /app/var \
    && chown trainsvc /app/var
USER trainsvc
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --retries=5 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["gunicorn", "--config", "python:service.gunicorn_conf", "service.app:create_app()"]
