# One image for every role: web (gunicorn), worker, beat. The command picks the role.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY requirements.txt .
# The CPU build of torch: a plain `torch` requirement would pull several GB of CUDA libraries.
RUN pip install --no-cache-dir --extra-index-url https://download.pytorch.org/whl/cpu -r requirements.txt
COPY . .
RUN useradd --create-home modelhub && mkdir -p /data && chown modelhub /data
USER modelhub
ENV MODELHUB_DATA_DIR=/data
EXPOSE 8000
CMD ["gunicorn", "modelhub.wsgi", "--bind", "0.0.0.0:8000", "--workers", "2", "--threads", "4"]
