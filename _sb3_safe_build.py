"""Build step of sb3-safe (``[tool.setuptools.cmdclass]`` in ``pyproject.toml``).

It ships two things a plain package build would not:

* ``sb3_safe_zoo_hook.pth`` at the root of site-packages, so that Python imports the
  tiny ``sb3_safe_zoo_hook`` module at start-up (the RL Zoo plug-in, ``docs/zoo.md``);
* a copy of the top-level ``hyperparams/*.yml`` inside the wheel as
  ``sb3_safe/zoo/hyperparams/`` (the top-level folder stays the single source).

A wheel (``pip install .``) installs everything under ``build_lib``. An editable
install (``pip install -e .``, PEP 660) installs only what lies in the unpacked
editable wheel, which setuptools' ``editable_wheel`` exposes as the ``install``
command's ``install_lib``; the package itself stays in the source tree, where
``sb3_safe.zoo.config_files`` reads ``hyperparams/`` directly.
"""

from __future__ import annotations

from pathlib import Path

from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
HOOK_PTH = "sb3_safe_zoo_hook.pth"
HYPERPARAMS_SOURCE = ROOT / "hyperparams"
HYPERPARAMS_TARGET = Path("sb3_safe", "zoo", "hyperparams")


class BuildPyWithZooHook(build_py):
    """setuptools' ``build_py`` plus the zoo start-up hook and the packaged hyper-parameter files."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            unpacked_wheel = Path(self.get_finalized_command("install").install_lib)
            self.copy_file(str(ROOT / HOOK_PTH), str(unpacked_wheel / HOOK_PTH))
            return
        for source, target in self._extra_files().items():
            self.mkpath(str(Path(target).parent))
            self.copy_file(source, target)

    def _extra_files(self) -> dict[str, str]:
        """Source -> build_lib path of the files added to a regular wheel."""
        build_lib = Path(self.build_lib)
        files = {str(ROOT / HOOK_PTH): str(build_lib / HOOK_PTH)}
        for yml in sorted(HYPERPARAMS_SOURCE.glob("*.yml")):
            files[str(yml)] = str(build_lib / HYPERPARAMS_TARGET / yml.name)
        return files

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:  # type: ignore[override]
        outputs = super().get_outputs(include_bytecode)
        if self.editable_mode:
            return outputs
        return [*outputs, *self._extra_files().values()]
