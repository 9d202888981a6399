"""The one error type of the data layer: every bad input names its file and the problem."""
from __future__ import annotations

import os


class DataError(ValueError):
  """Bad or unusable input data.

  Attributes:
    path: the offending file or folder (str).
    problem: what is wrong with it, in words.
  """

  def __init__(self, path: str | os.PathLike, problem: str):
    self.path = os.fspath(path)
    self.problem = problem
    super().__init__(f"{self.path}: {problem}")

  def __reduce__(self):  # picklable across multiprocessing workers
    return (DataError, (self.path, self.problem))
