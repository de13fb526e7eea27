"""duogen.platform: what the stages run on (settings, storage, tracking, launching, the CLI)."""

if __name__ == "platform":  # pragma: no cover - only when Python starts in the repository root
    # Started in the repository root, this folder shadows the standard library's `platform`
    # (torch imports it).
    # Load the real module and let the import system hand that out instead of this package.
    import importlib.util as _util
    import sys as _sys
    import sysconfig as _sysconfig
    from pathlib import Path as _Path

    _spec = _util.spec_from_file_location("platform", _Path(_sysconfig.get_paths()["stdlib"]) / "platform.py")
    _module = _util.module_from_spec(_spec)
    _spec.loader.exec_module(_module)
    _sys.modules["platform"] = _module
