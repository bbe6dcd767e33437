"""The curation driver: sources through the four stages into a dataset (in-process or over gRPC)."""
