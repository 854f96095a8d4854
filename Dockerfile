FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY service service
COPY worker worker
COPY migrations migrations
RUN pip install --no-cache-dir '.[keras]' && useradd --create-home trainsvc
USER trainsvc
ENV PYTHONUNBUFFERED=1
EXPOSE 8000
CMD ["gunicorn", "--bind", "0.0.0.0:8000", "--workers", "2", "service.app:create_app()"]
