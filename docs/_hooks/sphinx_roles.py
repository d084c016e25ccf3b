"""Griffe extension for the docs build: renders Sphinx roles in vaekit's docstrings as links.

vaekit's docstrings are Google style but cross-reference with Sphinx roles
(``:class:`Likelihood```, ``:meth:`~vaekit.models.base.VAE.encode```), which mkdocstrings
would print literally. This extension rewrites each role into an *optional* autoref: a link
when the target is rendered somewhere on the site, plain code otherwise, so a docstring that
mentions a module without an API page never breaks ``mkdocs build --strict``.

Loaded from ``mkdocs.yml`` (``plugins.mkdocstrings.handlers.python.options.extensions``);
excluded from the built site by ``exclude_docs``.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|mod|data|exc|obj|const):`(~?)([\w.]+)`")


def _lookup(root: griffe.Module, path: str) -> griffe.Object | None:
    """The object at a dotted path below ``root`` (following aliases), or None."""
    parts = path.split(".")
    if parts[0] != root.name:
        return None
    obj: Any = root
    for part in parts[1:]:
        try:
            obj = obj.members[part]
        except (KeyError, AttributeError):
            return None
        if isinstance(obj, griffe.Alias):
            try:
                obj = obj.final_target
            except (griffe.AliasResolutionError, griffe.CyclicAliasError):
                return None
    return obj


def _resolve(root: griffe.Module, scope: griffe.Object, name: str) -> str:
    """Canonical path of ``name`` as seen from ``scope``, or the best guess if unknown."""
    candidates = [name] if name.startswith(root.name + ".") else []
    current: griffe.Object | None = scope
    while current is not None:
        candidates.append(f"{current.path}.{name}")
        current = current.parent
    for path in candidates:
        found = _lookup(root, path)
        if found is not None:
            return found.path
    return candidates[0] if candidates else name


class SphinxRoles(griffe.Extension):
    """Turns ``:role:`target``` into optional autorefs in every docstring of the package."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        self._rewrite(pkg, pkg)

    # Older Griffe versions call this hook `on_package_loaded`; the rewrite is idempotent.
    on_package_loaded = on_package

    def _rewrite(self, root: griffe.Module, obj: griffe.Object) -> None:
        if obj.docstring is not None:
            scope = obj if obj.is_class or obj.is_module else (obj.parent or obj)

            def link(match: re.Match[str]) -> str:
                short, target = match.group(1), match.group(2)
                shown = target.rsplit(".", 1)[-1] if short else target
                path = _resolve(root, scope, target)
                return (
                    f'<autoref identifier="{html.escape(path)}" optional>'
                    f"<code>{html.escape(shown)}</code></autoref>"
                )

            obj.docstring.value = _ROLE.sub(link, obj.docstring.value)
        for member in obj.members.values():
            if not isinstance(member, griffe.Alias):
                self._rewrite(root, member)
