"""BUILD lists every module in its package's py_library and every test, and
the source tree Bazel runs from maps the folders to their package names."""

import glob
import os
import subprocess
import sys

from tests.conftest import REPO

PACKAGES = ("rankup_tf", "trainer", "serving", "data", "benchmarks")


def _targets():
  targets = []

  def rule(kind):
    def record(**kwargs):
      targets.append((kind, kwargs))
    return record

  namespace = {"py_library": rule("py_library"), "py_test": rule("py_test"),
               "load": lambda *a: None, "package": lambda **k: None,
               "requirement": lambda name: name,
               "glob": lambda *a, **k: []}
  with open(os.path.join(REPO, "BUILD")) as f:
    exec(compile(f.read(), "BUILD", "exec"), namespace)  # Starlark subset
  return targets


def _py_files(folder):
  return sorted(os.path.relpath(p, REPO) for p in glob.glob(
      os.path.join(REPO, folder, "**", "*.py"), recursive=True))


def test_every_package_module_is_in_its_py_library():
  libraries = {t["name"]: set(t["srcs"]) for kind, t in _targets()
               if kind == "py_library"}
  for package in PACKAGES:
    assert package in libraries, f"BUILD has no py_library {package!r}"
    missing = set(_py_files(package)) - libraries[package]
    assert not missing, f"BUILD's py_library {package!r} misses {missing}"
    stale = {s for s in libraries[package]
             if not os.path.exists(os.path.join(REPO, s))}
    assert not stale, f"BUILD's py_library {package!r} names absent {stale}"


def test_every_test_file_has_a_py_test():
  tests = {t["srcs"][0]: t for kind, t in _targets() if kind == "py_test"}
  for path in _py_files("tests"):
    if os.path.basename(path).startswith("test_"):
      assert path in tests, f"BUILD has no py_test for {path}"
  stale = [s for s in tests if not os.path.exists(os.path.join(REPO, s))]
  assert not stale, f"BUILD has py_tests for absent files {stale}"


def test_a_source_tree_maps_the_folders_without_an_install():
  """Bazel runs the code from its runfiles, a copy of the source tree with
  no install: rankup_tf.trainer/serving/data must still be the folders."""
  script = ("import sys; sys.path.insert(0, sys.argv[1]); "
            "import importlib.util as u; print(*(u.find_spec(f'rankup_tf.{n}')"
            ".origin for n in ('trainer', 'serving', 'data', 'layers')))")
  # -S: no site-packages, so no editable install to map the names.
  result = subprocess.run([sys.executable, "-S", "-c", script, REPO],
                          capture_output=True, text=True, check=True,
                          cwd=os.path.dirname(REPO))
  assert result.stdout.split() == [
      os.path.join(REPO, "trainer", "__init__.py"),
      os.path.join(REPO, "serving", "__init__.py"),
      os.path.join(REPO, "data", "__init__.py"),
      os.path.join(REPO, "rankup_tf", "layers", "__init__.py")]
