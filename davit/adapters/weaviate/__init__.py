"""The Weaviate adapter: weaviate.backup, weaviate.restore and weaviate.clear on weaviate-client v4."""
