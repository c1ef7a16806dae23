"""File helpers every layer uses, standard library only: atomic writes and path containment.

atomic.py   write_atomic / atomic_path (replace a file atomically), write_new / write_unique / stage (create a file
            without ever overwriting one, race-free under concurrent writers)
names.py    numbered_names: ComfyUI's 'x.png', 'x (1).png', ... candidates
contain.py  resolve_inside (a client-given relative name inside a root, real paths and symlinks included),
            clean_relative_name / clean_file_name, PathRefused
"""

from safefiles.atomic import Data, Staged, atomic_path, stage, write_atomic, write_new, write_unique
from safefiles.contain import (MAX_NAME_LENGTH, PathRefused, clean_file_name, clean_relative_name, is_within,
                               real_path_inside, resolve_inside)
from safefiles.names import numbered_names

__all__ = ["Data", "MAX_NAME_LENGTH", "PathRefused", "Staged", "atomic_path", "clean_file_name", "clean_relative_name",
           "is_within", "numbered_names", "real_path_inside", "resolve_inside", "stage", "write_atomic", "write_new",
           "write_unique"]
