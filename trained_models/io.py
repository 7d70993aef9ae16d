"""The atomic writers moved to :mod:`languages.io` (the one package every other imports, so that
:mod:`probe` and :mod:`analyses` need not import :mod:`trained_models` to save a file); the names
are kept here for code that still imports them from this module."""
from languages.io import (StagedDir, atomic_save_safetensors, atomic_write, atomic_write_dir,  # noqa: F401
                          atomic_write_json, atomic_write_text, check_writable, recover_dir)
