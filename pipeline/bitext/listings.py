"""Each input location of a mining run listed once.

The run's fingerprint (pipeline.bitext.resume) needs every side's listing, and so do the reads (a side's `uri`) and
the join (an `embeddings_uri`). Listed separately, a first attempt paid every LIST twice (on S3, one paginated LIST
per 1,000 objects), a side shared by source and target more, and a file that arrived between the two listings was
read but not in the fingerprint. One `Listings` per run hands every caller the same listing. No Ray.
"""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.config import StorageConfig
from pipeline.storage import ListedFile, Location, list_inputs


class Listings:
    """`list_inputs` per URI (or list of URIs), done once per run; the later calls get the first call's listing."""

    def __init__(self, storage: StorageConfig) -> None:
        self.storage = storage
        self._listed: dict[str | tuple[str, ...], tuple[Location, list[ListedFile]]] = {}

    def files(self, uri: str | Sequence[str], key: str) -> tuple[Location, list[ListedFile]]:
        """The listing root and its files (path, size, mtime, ctime), as `pipeline.storage.list_inputs`.

        Args:
            key: the config key the URI came from (`source.uri`, ...), for the errors of the first listing.

        Raises:
            FileNotFoundError / InvalidGlobError / InputNameError: as list_inputs, naming `key`.
        """
        name = uri if isinstance(uri, str) else tuple(uri)  # a list of locations (input.uri: [a, b]): hashable
        if name not in self._listed:
            self._listed[name] = list_inputs(uri, self.storage, key=key)
        return self._listed[name]

    def paths(self, uri: str | Sequence[str], key: str) -> tuple[Location, list[str]]:
        """`files` without sizes and times: the relative paths, as `pipeline.storage.list_files`."""
        root, listed = self.files(uri, key)
        return root, [f.path for f in listed]
