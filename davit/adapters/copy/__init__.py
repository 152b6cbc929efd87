"""`repository.copy`: snapshots copied from one repository into another, chunks and trees alike."""
