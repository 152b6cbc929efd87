"""The snapshot repository: content-addressed chunks in pack files, snapshots as manifests."""
