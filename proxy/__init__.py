"""The S3 proxy: HTTP server, S3 protocol and the upstream client."""
