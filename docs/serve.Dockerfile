# An image that serves one trained run with `kit serve` (see docs/serve.md).
#
# Lay out the build folder:  kit/  (this repository)   run/  (a run directory, e.g. runs/run-1)
#   docker build -f serve.Dockerfile -t my-model .
#   docker run --rm -p 8000:8000 my-model
#   docker stop -t 60 CONTAINER      (SIGTERM: answers every request taken, then exits 0)
FROM python:3.11-slim

# kit with its serving extra (or install kit from your own package index).
COPY kit/ /opt/kit/
RUN pip install --no-cache-dir "/opt/kit[serve]"

# A run directory's record and model folder are all kit serve needs (no checkpoints, logs or data).
COPY run/run.json /srv/run/run.json
COPY run/model/ /srv/run/model/

EXPOSE 8000
# Ready only once the model is loaded and warmed up.
HEALTHCHECK --start-period=120s --interval=10s \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=5)"
CMD ["kit", "serve", "/srv/run", "--host", "0.0.0.0", "--port", "8000"]
