"""Helpers that let bundle configs find their own folder and their bundle-specific code.

MONAI's ConfigParser does not know which file it read, and `bundle_root: "."` breaks when a command
runs from another directory; so the root is taken from the `--config_file` on the command line,
falling back to this repository's copy. Programmatic users (MONAI Label) override `bundle_root`.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import sys
import zipfile
from pathlib import Path
from types import ModuleType

REPO_BUNDLES = Path(__file__).resolve().parent.parent / "bundles"


def _config_paths_from_argv(argv: list[str]) -> list[Path]:
    paths = []
    for i, arg in enumerate(argv):
        val = None
        if arg in ("--config_file", "--config-file") and i + 1 < len(argv):
            val = argv[i + 1]
        elif arg.startswith("--config_file="):
            val = arg.split("=", 1)[1]
        if val is None:
            continue
        items = [val]
        if val.strip().startswith("["):
            try:
                items = [str(x) for x in ast.literal_eval(val)]  # literal only: never evaluates code
            except (ValueError, SyntaxError):
                items = []
        paths += [Path(x) for x in items]
    return paths


def find_bundle_root(name: str, argv: list[str] | None = None) -> str:
    """Folder of bundle `name`: from the command line's config files, else the repository's copy."""
    for cfg in _config_paths_from_argv(list(sys.argv if argv is None else argv)):
        root = cfg.resolve().parent.parent
        if root.name == name and (root / "configs").is_dir():
            return str(root)
        sibling = root.parent / name  # a chained bundle sits beside the one the user ran
        if (sibling / "configs").is_dir():
            return str(sibling)
    return str(REPO_BUNDLES / name)


def load_scripts(bundle_root: str | Path, alias: str) -> ModuleType:
    """Import `<bundle_root>/scripts` as module `alias` (unique per bundle, so chained bundles don't clash).

    Configs call it as `$brainspade.bundle.load_scripts(@bundle_root, '<alias>')`: MONAI 1.6.1 parses any `$`
    expression containing the word "import" as an import statement, which fails on `@` references."""
    if alias in sys.modules:
        return sys.modules[alias]
    init = Path(bundle_root) / "scripts" / "__init__.py"
    spec = importlib.util.spec_from_file_location(alias, init, submodule_search_locations=[str(init.parent)])
    if spec is None or spec.loader is None:
        raise ImportError(f"no scripts package at {init}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[alias] = module
    spec.loader.exec_module(module)
    return module


# the same function under a name a config expression can call: MONAI 1.6.1 parses any `$` expression that holds
# the word "import" as an import statement (exported bundles load their scripts through this name)


def bundle_config(bundle_root: str | Path, names: str | list[str], overrides: dict | None = None):
    """A MONAI ConfigParser over config file(s) `names` of the bundle at `bundle_root` (layered in order), with
    `bundle_root` and `overrides` set: how a config reuses another one (label_ldm's inference.yaml reads its
    common.yaml; brainspade3d chains label_ldm's inference.yaml) without copying it."""
    from monai.bundle import ConfigParser

    files = [str(Path(bundle_root) / "configs" / n) for n in ([names] if isinstance(names, str) else names)]
    parser = ConfigParser()
    parser.read_config(files if len(files) > 1 else files[0])
    parser.update({"bundle_root": str(bundle_root), **dict(overrides or {})})
    return parser


def bundle_version(bundle_root: str | Path) -> str:
    """The bundle's version from its configs/metadata.json (recorded in every output's sidecar JSON)."""
    meta = Path(bundle_root) / "configs" / "metadata.json"
    return str(json.loads(meta.read_text(encoding="utf-8"))["version"])


_STEP = re.compile(r"(?:epoch|iteration)=(\d+)")


def latest_checkpoint(ckpt_dir: str | Path, pattern: str = "*.pt") -> str | None:
    """The checkpoint a restarted training run resumes from: the newest complete file matching `pattern`, or None.

    Newest by modification time, because Ignite's final checkpoint (`save_final`) carries no step number;
    ties (files written or copied within the clock's resolution) go to the higher epoch/iteration number
    in the name. Incomplete files are skipped, with a warning: MONAI's CheckpointSaver writes in place (not
    atomically), so a run killed while saving leaves a truncated file, and the training configs keep two
    checkpoints (`n_saved: 2`) so that the one before it survives. `torch.save` writes a zip archive whose
    directory comes last, so a truncated file is not a valid zip. Where no file is complete, the newest is
    returned all the same, for the caller's checkpoint check to refuse with a clear message. Every bundle's
    training configs resume through this one rule.
    """
    d = Path(ckpt_dir)
    files = [p for p in d.glob(pattern) if p.is_file()] if d.is_dir() else []

    def key(p: Path) -> tuple[float, int]:
        m = _STEP.search(p.name)
        return p.stat().st_mtime, int(m.group(1)) if m else -1

    ordered = sorted(files, key=key, reverse=True)
    for path in ordered:
        if zipfile.is_zipfile(path):
            return str(path)
        print(
            f"warning: skipping incomplete checkpoint {str(path)!r} (interrupted while being written)", file=sys.stderr
        )
    # none complete: the newest, so that the loader's own check names the damaged file (no silent fresh start)
    return str(ordered[0]) if ordered else None
