"""storage: the only code that talks to MongoDB and the S3 object store."""
