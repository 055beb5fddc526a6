"""The log-probability engine: batching, packing, response-only projection, caching."""
