"""forkcast's lake (issue 16): Delta Lake tables in S3 for dataset snapshots, the served log and training tables.

Everything that reads or writes a lake table goes through this package, so the S3 options, the table URIs and
the snapshot layout are decided once (``storage``, ``datasets``) and imported by datagen, the trainer and the
feature loader.
"""
