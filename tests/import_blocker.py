"""A ``sitecustomize.py`` that makes packages absent for a child interpreter (the accelerator
images lack TensorFlow, TFDS, librosa, ...): ``import x`` raises ModuleNotFoundError and
``importlib.util.find_spec(x)`` is None, as on a machine without them."""
import pathlib

_SOURCE = '''
import sys
BLOCKED = {blocked!r}
class _Hide:
  def __init__(self, inner):
    self.inner = inner
  def find_spec(self, name, path=None, target=None):
    if name.split(".")[0] in BLOCKED:
      return None
    f = getattr(self.inner, "find_spec", None)
    return f(name, path, target) if f else None
  def __getattr__(self, attr):
    return getattr(self.inner, attr)
sys.meta_path[:] = [_Hide(f) for f in sys.meta_path]
'''


def write_blocker(folder, blocked) -> pathlib.Path:
  """Writes ``folder/sitecustomize.py`` hiding the top-level packages ``blocked``; put
  ``folder`` first on the child's PYTHONPATH. Returns the folder."""
  folder = pathlib.Path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  (folder / "sitecustomize.py").write_text(_SOURCE.format(blocked=tuple(blocked)))
  return folder
