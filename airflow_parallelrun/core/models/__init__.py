"""The models a run names (``ParallelRunConfig(models=...)``), staged on each node where Azure scripts look.

:mod:`.refs` reads and checks the names, versions and sources; :mod:`.staging` puts them on a node
once (a local path used in place, a remote one downloaded into a cache shared by the node's
tasks) under Azure's layout ``<name>/<version>/<file or folder>``.
"""
