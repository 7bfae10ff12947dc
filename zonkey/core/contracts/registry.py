"""Component registries: one per component kind, each mapping a short name to a config class.

A recipe names a component with ``name:``; the remaining keys of the node are validated against
that component's pydantic config class (``extra="forbid"``, frozen), whose ``build`` returns the
``torch.nn.Module``. ``build`` has one signature per kind, checked when a config is registered
(:data:`zonkey.core.contracts.protocols.BUILD_SIGNATURES`): ``build(ctx)`` with the level's
:class:`~zonkey.core.contracts.shapes.LevelContext` for level components, ``build()`` for attention backends,
which a model builds once and hands to its levels inside that context.

There are no dotted import paths in recipes: packages add components through the
``zonkey.components`` entry-point group. zonkey's own components are an entry of that group too
(``builtin = "zonkey.components"`` in ``pyproject.toml``), so core names no component module in an
import statement: :func:`ensure_builtin_components` loads zonkey's own entry on first use of a
registry, and imports :data:`BUILTIN_MODULE` by name where the package metadata is missing or
predates that entry (a source tree on ``sys.path``, an install made before it). Third-party entries
are loaded explicitly, once, by :func:`load_plugins`.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict
from torch import nn

from zonkey.core.contracts.protocols import BUILD_SIGNATURES
from zonkey.errors import ZonkeyError

#: The kinds every recipe has a node of (each with a default component).
KINDS: tuple[str, ...] = ("attention", "splitter", "compressor", "denoiser", "objective", "stitcher")
#: Kinds a recipe may leave out altogether (no default component): a level's sequence prior.
OPTIONAL_KINDS: tuple[str, ...] = ("prior",)
ALL_KINDS: tuple[str, ...] = KINDS + OPTIONAL_KINDS
ENTRY_POINT_GROUP = "zonkey.components"
DISTRIBUTION = "zonkey"  # the distribution whose own entry in the group holds the built-ins
BUILTIN_MODULE = "zonkey.components"  # imported by name when that entry cannot be found


class RegistryError(ZonkeyError):
    """Base class of registry errors."""


class DuplicateComponentError(RegistryError):
    """A name was registered twice for one kind."""


class UnknownComponentError(RegistryError, KeyError):
    """A recipe or caller asked for a name no component of that kind has."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ComponentConfig(BaseModel):
    """Base of every component's config: strict (unknown keys fail) and immutable.

    Subclasses declare their own fields with defaults and implement ``build`` with their kind's
    signature: ``build(self, ctx: LevelContext)`` for level components, ``build(self)`` for
    attention backends. The ``name`` field holds the registry name; the registry sets ``kind`` and
    ``registered_name`` when the class is registered.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=(), allow_inf_nan=False)

    kind: ClassVar[str] = ""
    registered_name: ClassVar[str] = ""

    def build(self, *args: Any, **kwargs: Any) -> nn.Module:
        """The component's module; each kind narrows the signature (see the class docstring).

        Raises:
            RegistryError: the config declares fields only (it validates in recipes but builds nothing).
        """
        raise RegistryError(f"{type(self).__name__} does not define build()")

    def fields_doc(self) -> dict[str, Any]:
        """The config's fields and their current values, without ``name``."""
        return {k: v for k, v in self.model_dump().items() if k != "name"}


C = TypeVar("C", bound=type[ComponentConfig])


@dataclass
class Entry:
    """One registered component: its name, config class and where the class was defined."""

    name: str
    config_cls: type[ComponentConfig]
    origin: str  # "module:qualname", for duplicate messages

    @property
    def doc(self) -> str:
        """The first paragraph of the config class's docstring."""
        return inspect.cleandoc(self.config_cls.__doc__ or "").split("\n\n")[0]

    def fields(self) -> dict[str, dict[str, Any]]:
        """Each config field but ``name``: its type, default, whether required, and description."""
        out: dict[str, dict[str, Any]] = {}
        for fname, f in self.config_cls.model_fields.items():
            if fname == "name":
                continue
            default = None if f.is_required() else f.get_default(call_default_factory=True)
            if isinstance(default, BaseModel):
                default = default.model_dump()
            out[fname] = {
                "type": _type_name(f.annotation),
                "default": default,
                "required": f.is_required(),
                "description": f.description or "",
            }
        return out


def _check_build_signature(kind: str, name: str, cls: type[ComponentConfig], origin: str) -> None:
    """Refuse a config whose own ``build`` does not take exactly its kind's parameters.

    A config that inherits the base ``build`` declares fields only; it registers (a recipe can name
    it) and fails when built.
    """
    build = cls.build
    if build is ComponentConfig.build:
        return
    expected = BUILD_SIGNATURES[kind]
    params = list(inspect.signature(build).parameters.values())[1:]  # after self
    plain = all(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD and p.default is inspect.Parameter.empty for p in params)
    if not plain or tuple(p.name for p in params) != expected:
        want = ", ".join(("self", *expected))
        raise RegistryError(f"{kind} component {name!r} ({origin}) must define build({want}); got build{inspect.signature(build)}")


def _type_name(tp: Any) -> str:
    if tp is None:
        return "None"
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


@dataclass
class Registry:
    """The entries of one component kind."""

    kind: str
    _entries: dict[str, Entry] = field(default_factory=dict)

    def register(self, name: str) -> Callable[[C], C]:
        """Class decorator registering a config class under ``name``.

        Raises:
            DuplicateComponentError: ``name`` is taken; the message names both classes.
        """

        def deco(cls: C) -> C:
            if not (isinstance(cls, type) and issubclass(cls, ComponentConfig)):
                raise RegistryError(f"{cls!r} registered as {self.kind} {name!r} is not a ComponentConfig subclass")
            origin = f"{cls.__module__}:{cls.__qualname__}"
            if name in self._entries:
                prev = self._entries[name].origin
                if prev == origin:  # the same module imported twice (e.g. reload): keep the newest
                    pass
                else:
                    raise DuplicateComponentError(
                        f"{self.kind} component {name!r} is registered twice: by {prev} and by {origin}"
                    )
            if "name" not in cls.model_fields:
                raise RegistryError(f"{origin} must declare a `name` field (Literal[{name!r}])")
            _check_build_signature(self.kind, name, cls, origin)
            cls.kind = self.kind
            cls.registered_name = name
            self._entries[name] = Entry(name=name, config_cls=cls, origin=origin)
            return cls

        return deco

    def unregister(self, name: str) -> None:
        """Remove an entry (for tests and interactive work)."""
        self._entries.pop(name, None)

    def get(self, name: str) -> type[ComponentConfig]:
        """The config class registered as ``name``.

        Raises:
            UnknownComponentError: no such name; the message lists the known ones.
        """
        ensure_builtin_components()
        try:
            return self._entries[name].config_cls
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "(none)"
            raise UnknownComponentError(f"unknown {self.kind} component {name!r}; known: {known}") from None

    def entry(self, name: str) -> Entry:
        """The entry registered as ``name``.

        Raises:
            UnknownComponentError: no such name.
        """
        self.get(name)
        return self._entries[name]

    def names(self) -> list[str]:
        """The registered names, sorted."""
        ensure_builtin_components()
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        """The entries, sorted by name."""
        return [self._entries[n] for n in self.names()]

    def config(self, name: str, **fields: Any) -> ComponentConfig:
        """Validate ``fields`` against the config class of ``name`` and return the config."""
        return self.get(name).model_validate({"name": name, **fields})

    def __contains__(self, name: object) -> bool:
        ensure_builtin_components()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


REGISTRIES: dict[str, Registry] = {kind: Registry(kind) for kind in ALL_KINDS}


def registry(kind: str) -> Registry:
    """The registry of one component kind.

    Raises:
        UnknownComponentError: ``kind`` is not one of :data:`ALL_KINDS`.
    """
    try:
        return REGISTRIES[kind]
    except KeyError:
        raise UnknownComponentError(f"unknown component kind {kind!r}; kinds: {', '.join(ALL_KINDS)}") from None


def register(kind: str, name: str) -> Callable[[C], C]:
    """Shorthand for ``registry(kind).register(name)``."""
    return registry(kind).register(name)


_builtins_loaded = False


def _builtin_entry_points() -> list[importlib.metadata.EntryPoint]:
    """The entries of zonkey's own distribution in :data:`ENTRY_POINT_GROUP` (none where its metadata is missing)."""
    own = []
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        if dist is not None and dist.metadata["Name"] == DISTRIBUTION:
            own.append(ep)
    return own


def ensure_builtin_components() -> None:
    """Load zonkey's own components once, so the built-in entries are registered.

    Through zonkey's entry in the ``zonkey.components`` group; where the installed metadata lacks
    it, by importing :data:`BUILTIN_MODULE` by name.
    """
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True  # set first: the components import this module
    try:
        entries = _builtin_entry_points()
        for ep in entries:
            ep.load()
        if not any(ep.value == BUILTIN_MODULE for ep in entries):
            importlib.import_module(BUILTIN_MODULE)
    except BaseException:
        _builtins_loaded = False  # retry (and fail loudly) next time instead of a half-filled registry
        raise


@dataclass
class PluginReport:
    """Which plugin entry points loaded, and why the others failed."""

    loaded: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


_plugin_report: PluginReport | None = None


def load_plugins(*, reload: bool = False) -> PluginReport:
    """Load third-party components from the ``zonkey.components`` entry-point group, once.

    Each entry point is a module (or callable) whose import registers components. A plugin that
    fails to import is reported by name (warning + :class:`PluginReport.failed`) and does not stop
    the others from loading.
    """
    global _plugin_report
    if _plugin_report is not None and not reload:
        return _plugin_report
    ensure_builtin_components()
    report = PluginReport()
    own = {(ep.name, ep.value) for ep in _builtin_entry_points()}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if (ep.name, ep.value) in own:  # the built-ins, loaded already
            continue
        try:
            obj = ep.load()
            if callable(obj) and not inspect.ismodule(obj) and not isinstance(obj, type):
                obj()
            report.loaded.append(ep.name)
        except Exception as exc:  # a broken plugin must not break the others
            msg = f"{type(exc).__name__}: {exc}"
            report.failed[ep.name] = msg
            warnings.warn(f"zonkey plugin {ep.name!r} ({ep.value}) failed to load: {msg}", stacklevel=2)
    _plugin_report = report
    return report
