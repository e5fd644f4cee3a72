"""The Kommo API v4 client: plain Python, no Dagster. HTTP, paging, rate limit and retries."""
