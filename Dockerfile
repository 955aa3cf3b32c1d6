# meterwax: the metering flows and their command line, as one image.
#
#   docker build -t meterwax .
#   docker run --rm meterwax --help
#
# python:3.11-slim because bytewax 0.21.1 ships wheels for CPython 3.8-3.12 only, built for
# glibc >= 2.31 (slim is Debian bookworm, glibc 2.36); there is no sdist, so Alpine/musl
# cannot install it.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# Only what the package is built from (see .dockerignore): tests, scripts and the local lake
# stay out of the image.
COPY pyproject.toml README.md ./
COPY meterwax ./meterwax
COPY flows ./flows
COPY operators ./operators
COPY sinks ./sinks
COPY bench ./bench
RUN pip install . && rm -rf /src

# Run as an unprivileged user; /lake and /state are where the compose file mounts the lake and
# the recovery store volumes (a new named volume takes its directory's owner from the image, so
# both must exist here and belong to meterwax, or the flow cannot write to them).
RUN useradd --create-home --uid 10001 meterwax && mkdir /lake /state && chown meterwax /lake /state
USER meterwax
WORKDIR /home/meterwax
VOLUME ["/lake", "/state"]

ENTRYPOINT ["meterwax"]
CMD ["--help"]
