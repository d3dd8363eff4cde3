# paychan connector / worker image: the locked Python deps and the package, nothing else.
FROM python:3.11-slim
WORKDIR /app
RUN pip install --no-cache-dir uv==0.13.8
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY connector connector
COPY workflows workflows
COPY activities activities
COPY worker worker
COPY contracts contracts
COPY examples examples
RUN uv sync --frozen --no-dev
ENV PATH="/app/.venv/bin:$PATH"
ENTRYPOINT ["paychan"]
CMD ["--help"]
