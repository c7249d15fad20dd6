"""Write a self-contained copy of a bundle, as the Model Zoo and MONAI Label expect one: nothing imported from an
installed `brainspade` package (it is on no package index).

    python -m brainspade.export --bundle segmenter --output_dir dist/
    python -m brainspade.export --bundle all --output_dir dist/

writes `<output_dir>/<bundle>/` (configs, docs, models, scripts, LICENSE) with the shared code vendored as
`scripts/brainspade_lib/` (its own imports are relative already). What changes in the copy, and why:

- scripts: `from brainspade.X import Y` becomes `from .brainspade_lib.X import Y` (the scripts package is loaded
  under the bundle's own alias, e.g. `segmenter_scripts`, so the vendored code is loaded once per bundle, as
  `segmenter_scripts.brainspade_lib`, and configs reach the same modules as `@scripts.brainspade_lib.X`);
- configs: the `brainspade` imports go; `bundle_root` is `--bundle_root` when given (MONAI Label, the Zoo), else
  the folder above the `configs/` of the first `--config_file` on the command line (MONAI's own rule), else `.`;
  the scripts are loaded through the vendored `bundle.load_scripts`; a chained bundle (brainspade3d's label_ldm)
  is the sibling folder of the same export, so exporting brainspade3d exports label_ldm beside it;
- metadata: `brainspade` leaves the package lists.

The repository keeps the one copy of the code; an export is generated, never committed (tests/test_zoo_export.py).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

from .cli import run_guarded
from .errors import InputError

PACKAGE = Path(__file__).resolve().parent
BUNDLES_DIR = PACKAGE.parent / "bundles"
BUNDLE_NAMES = ("label_ldm", "brainspade3d", "segmenter")
LIB = "brainspade_lib"
# bundles another bundle's configs load from the sibling folder: brainspade3d's inference chains label_ldm
CHAINED = {"brainspade3d": ("label_ldm",)}
BUNDLE_PARTS = ("configs", "docs", "models", "scripts", "LICENSE")
# modules of the shared package that exist only for this repository (export, metadata generation)
NOT_VENDORED = ("export.py",)
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")

# the exported configs' bundle folder (ids added to every config that defines `bundle_root`)
CONFIG_FILES_ARGV = (
    "$[f.strip(chr(34) + chr(39)) for i, a in enumerate(sys.argv) "
    "if a.split('=', 1)[0] in ('--config_file', '--config-file') "
    "for f in (a.split('=', 1)[1] if '=' in a else ''.join(sys.argv[i + 1:i + 2]))"
    ".replace(',', ' ').replace('[', ' ').replace(']', ' ').split()]"
)
BUNDLE_ROOT = (
    "$next((os.path.dirname(d) for d in (os.path.dirname(os.path.abspath(f)) for f in @config_files_argv) "
    "if os.path.basename(d) == 'configs' and os.path.isdir(os.path.join(os.path.dirname(d), 'scripts', "
    f"{LIB!r}))), '.')"
)
SCRIPTS_LOADER = f"$runpy.run_path(os.path.join(@bundle_root, 'scripts', {LIB!r}, 'bundle.py'))['load_scripts']"

_FROM_IMPORT = re.compile(r"^(\s*)from brainspade((?:\.\w+)*) import ", re.M)
_PLAIN_IMPORT = re.compile(r"^\s*import brainspade\b", re.M)
_CFG_IMPORT = re.compile(r"^\s*- \$(?:import brainspade(?:\.\w+)*|from brainspade\.\w+ import .*)\s*\n", re.M)
_FIND_ROOT = re.compile(r"""^(\s*)([\w#]+): "\$brainspade\.bundle\.find_bundle_root\('(\w+)'\)"(.*)$""", re.M)
_LOAD_SCRIPTS = re.compile(r"""^scripts: "\$brainspade\.bundle\.load_scripts\(@bundle_root, '(\w+)'\)"(.*)$""", re.M)
_TARGET = re.compile(r"""_target_: brainspade\.([\w.]+)""")
_EXPR = re.compile(r'"\$[^"\n]*"')
_LIB_USE = re.compile(r"(?<![\w.@])brainspade\.(\w+)")


def _q(expr: str) -> str:
    """A YAML double-quoted scalar (JSON's escapes are YAML's)."""
    return json.dumps(expr)


def rewrite_script(text: str) -> str:
    """A bundle script's `brainspade` imports, pointed at the vendored copy (relative: the scripts package)."""
    if _PLAIN_IMPORT.search(text):
        raise ValueError("`import brainspade...` in a bundle script: use `from brainspade.x import y`")
    return _FROM_IMPORT.sub(lambda m: f"{m.group(1)}from .{LIB}{m.group(2)} import ", text)


def rewrite_lib(text: str, depth: int) -> str:
    """A vendored module's absolute `brainspade` imports made relative (`depth` = its folder depth in the package)."""
    if _PLAIN_IMPORT.search(text):
        raise ValueError("`import brainspade...` inside the shared package: use relative imports")
    dots = "." * (depth + 1)
    return _FROM_IMPORT.sub(lambda m: f"{m.group(1)}from {dots}{m.group(2)[1:]} import ", text)


def rewrite_config(text: str, bundle: str) -> tuple[str, set[str]]:
    """A config without `brainspade`: returns the new text and the shared modules its expressions use."""
    used: set[str] = set()
    text = _CFG_IMPORT.sub("", text)

    def root(m: re.Match) -> str:
        indent, key, name, rest = m.groups()
        if key == "bundle_root":
            return (
                f"{indent}# the bundle folder: --bundle_root, else the folder above the first --config_file's configs/ "
                f"(MONAI's rule), else '.'\n{indent}config_files_argv: {_q(CONFIG_FILES_ARGV)}\n"
                f"{indent}bundle_root: {_q(BUNDLE_ROOT)}{rest}"
            )
        # another bundle of the same export: its sibling folder
        return f"{indent}{key}: {_q(f'$os.path.join(os.path.dirname(os.path.abspath(@bundle_root)), {name!r})')}{rest}"

    text = _FIND_ROOT.sub(root, text)
    text = _LOAD_SCRIPTS.sub(
        lambda m: f"scripts_loader: {_q(SCRIPTS_LOADER)}\nscripts: "
        f"{_q(f'$@scripts_loader(@bundle_root, {m.group(1)!r})')}{m.group(2)}",
        text,
    )

    def lib(m: re.Match) -> str:
        used.add(m.group(1))
        return f"@scripts.{LIB}.{m.group(1)}"

    def target(m: re.Match) -> str:
        module, _, rest = m.group(1).partition(".")
        used.add(module)
        return f'_target_: "$@scripts.{LIB}.{m.group(1)}"'

    text = _TARGET.sub(target, text)
    text = _EXPR.sub(lambda m: _LIB_USE.sub(lib, m.group(0)), text)
    if "config_files_argv" in text or "scripts_loader" in text:
        text = _add_imports(text, ("os", "sys", "runpy"))
    return text, used


def _add_imports(text: str, modules: tuple[str, ...]) -> str:
    m = re.search(r"^imports:\n((?:\s+- .*\n)*)", text, re.M)
    if m is None:
        return "imports:\n" + "".join(f"  - $import {mod}\n" for mod in modules) + text
    have = m.group(1)
    extra = "".join(f"  - $import {mod}\n" for mod in modules if f"$import {mod}\n" not in have)
    return text[: m.end()] + extra + text[m.end() :]


def _vendor(dest: Path) -> None:
    for src in sorted(PACKAGE.rglob("*.py")):
        rel = src.relative_to(PACKAGE)
        if "__pycache__" in rel.parts or rel.name in NOT_VENDORED:
            continue
        out = dest / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(rewrite_lib(src.read_text(encoding="utf-8"), len(rel.parts) - 1), encoding="utf-8")


def export_bundle(bundle: str, output_dir: Path, bundles_dir: Path = BUNDLES_DIR) -> Path:
    """Write `<output_dir>/<bundle>/`, self-contained; returns its path."""
    src, dst = Path(bundles_dir) / bundle, Path(output_dir) / bundle
    if dst.exists():
        shutil.rmtree(dst)
    for part in BUNDLE_PARTS:
        if (src / part).is_dir():
            shutil.copytree(src / part, dst / part, ignore=IGNORED)
        elif (src / part).is_file():
            shutil.copy2(src / part, dst / part)
    for py in (dst / "scripts").glob("*.py"):
        py.write_text(rewrite_script(py.read_text(encoding="utf-8")), encoding="utf-8")
    _vendor(dst / "scripts" / LIB)
    used: set[str] = set()
    for cfg in (dst / "configs").glob("*.yaml"):
        text, mods = rewrite_config(cfg.read_text(encoding="utf-8"), bundle)
        cfg.write_text(text, encoding="utf-8")
        used |= mods
    init = dst / "scripts" / "__init__.py"
    init.write_text(
        init.read_text(encoding="utf-8") + "\n# the shared modules the configs reach as @scripts."
        f"{LIB}.<module> (exported bundle)\nfrom .{LIB} import {', '.join(sorted(used | {'bundle'}))}"
        "  # noqa: E402,F401\n",
        encoding="utf-8",
    )
    meta_file = dst / "configs" / "metadata.json"
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    for key in ("required_packages_version", "optional_packages_version"):
        if isinstance(meta.get(key), dict):
            meta[key].pop("brainspade", None)
    meta_file.write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return dst


def export(bundle: str, output_dir: str | Path) -> list[Path]:
    """Export `bundle` (or `all`) and the bundles it chains; refuses an output folder inside the repository's bundles."""
    names = BUNDLE_NAMES if bundle == "all" else (bundle,)
    if bundle != "all" and bundle not in BUNDLE_NAMES:
        raise InputError(f"unknown bundle {bundle!r}; accepted: {', '.join(BUNDLE_NAMES)}, all")
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"--output_dir {str(out)!r} is a file; accepted: a new or existing folder")
    if out.resolve() == BUNDLES_DIR.resolve() or BUNDLES_DIR.resolve() in out.resolve().parents:
        raise InputError(f"--output_dir {str(out)!r} is inside the repository's bundles/; accepted: a folder elsewhere")
    todo = list(dict.fromkeys(n for name in names for n in (name, *CHAINED.get(name, ()))))
    out.mkdir(parents=True, exist_ok=True)
    return [export_bundle(n, out) for n in todo]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m brainspade.export", description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", required=True, help=f"{', '.join(BUNDLE_NAMES)} or all")
    ap.add_argument("--output_dir", required=True, help="folder to write <bundle>/ into (an existing copy is replaced)")
    args = ap.parse_args(argv)
    for path in run_guarded(export, args.bundle, args.output_dir):
        print(f"exported {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
