"""Getting a version's files: Cloud Storage or local paths, the cache, user packages."""
