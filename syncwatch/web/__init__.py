"""The status page: read-only HTML views of the snapshot and the history store."""
