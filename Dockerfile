FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY crypto crypto
COPY proxy proxy
RUN pip install --no-cache-dir . && useradd --system --create-home byok \
    && mkdir -p /var/lib/byok-proxy && chown byok /var/lib/byok-proxy
USER byok
ENV BYOK_PROXY_DATA_DIR=/var/lib/byok-proxy
EXPOSE 8080
CMD ["byok-proxy", "serve"]
