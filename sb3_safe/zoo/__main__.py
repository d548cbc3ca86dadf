"""``python -m sb3_safe.zoo <script> [zoo arguments]``: the RL Zoo with sb3-safe registered explicitly.

``<script>`` is one of rl_zoo3's scripts (``train``, ``enjoy``, ``plot_train``,
``plot_from_file``, ``all_plots``; the plot scripts need seaborn); the remaining
arguments go to it unchanged. Unlike
``python -m rl_zoo3.train``, this entry point does not rely on the start-up hook: it
calls :func:`sb3_safe.zoo.register_with_zoo` itself, so it also works when the hook is
switched off (``SB3_SAFE_ZOO_HOOK=0``) or the ``.pth`` file was not installed.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from sb3_safe.zoo.integration import explain_unavailable_algo, register_with_zoo

# script -> "module:function" of rl_zoo3 (imported lazily: the plot scripts need seaborn)
SCRIPTS: dict[str, str] = {
    "train": "rl_zoo3.train:train",
    "enjoy": "rl_zoo3.enjoy:enjoy",
    "plot_train": "rl_zoo3.plots:plot_train",
    "plot_from_file": "rl_zoo3.plots:plot_from_file",
    "all_plots": "rl_zoo3.plots:all_plots",
}


def main(argv: Sequence[str] | None = None) -> None:
    """Run one rl_zoo3 script with sb3-safe's algorithms, envs and hyper-parameters registered.

    :param argv: the arguments after the program name (default: ``sys.argv[1:]``)
    :raises SystemExit: with a usage message when the script name is missing or unknown, or
        when the requested sb3-safe algorithm cannot be imported
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    if not arguments or arguments[0] not in SCRIPTS:
        given = repr(arguments[0]) if arguments else "nothing"
        raise SystemExit(f"usage: python -m sb3_safe.zoo {{{','.join(SCRIPTS)}}} [zoo arguments]; got {given}")
    script, zoo_arguments = arguments[0], arguments[1:]
    explanation = explain_unavailable_algo(zoo_arguments)
    if explanation is not None:
        raise SystemExit(explanation)
    register_with_zoo()
    module_name, _, function_name = SCRIPTS[script].partition(":")
    run_script = getattr(importlib.import_module(module_name), function_name)
    # The zoo scripts parse sys.argv themselves.
    sys.argv = [f"python -m sb3_safe.zoo {script}", *zoo_arguments]
    run_script()


if __name__ == "__main__":
    main()
