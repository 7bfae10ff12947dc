"""Component registries: registration, duplicate and unknown names, field descriptions, the build
signature of each kind, how the built-ins load, plugins."""

from __future__ import annotations

import importlib.metadata
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Literal

import pytest
from pydantic import Field, ValidationError

import zonkey.core.contracts.registry as registry_mod
from zonkey.core.contracts.registry import (
    ENTRY_POINT_GROUP,
    KINDS,
    ComponentConfig,
    DuplicateComponentError,
    RegistryError,
    UnknownComponentError,
    load_plugins,
    register,
    registry,
)
from zonkey.core.recipe import validate_recipe

BUILTIN_ATTENTION = {"reference", "sdpa", "flex", "hard"}


@pytest.fixture
def scratch():
    """Registers through ``scratch(kind, name)`` and unregisters everything afterwards."""
    made: list[tuple[str, str]] = []

    def reg(kind: str, name: str):
        made.append((kind, name))
        return register(kind, name)

    yield reg
    for kind, name in made:
        registry(kind).unregister(name)


def test_every_kind_has_a_registry():
    assert set(registry_mod.REGISTRIES) == set(registry_mod.ALL_KINDS) == set(KINDS) | {"prior"}
    for kind in registry_mod.ALL_KINDS:
        assert registry(kind).kind == kind


def test_builtin_attention_entries_are_registered():
    assert BUILTIN_ATTENTION <= set(registry("attention").names())
    assert registry("attention").names() == sorted(registry("attention").names())


def test_register_get_and_config(scratch):
    @scratch("attention", "zz_scratch")
    class ScratchConfig(ComponentConfig):
        """A scratch component.

        Second paragraph, not part of the one-line doc.
        """

        name: Literal["zz_scratch"] = "zz_scratch"
        width: int = Field(3, ge=1, description="how wide")

    reg = registry("attention")
    assert reg.get("zz_scratch") is ScratchConfig
    assert "zz_scratch" in reg and "zz_scratch" in list(reg)
    assert ScratchConfig.kind == "attention" and ScratchConfig.registered_name == "zz_scratch"

    cfg = reg.config("zz_scratch", width=5)
    assert isinstance(cfg, ScratchConfig) and cfg.width == 5
    with pytest.raises(ValidationError):
        reg.config("zz_scratch", width=0)
    with pytest.raises(ValidationError):
        reg.config("zz_scratch", colour="red")  # extra="forbid"
    with pytest.raises(ValidationError):
        cfg.width = 7  # frozen

    entry = reg.entry("zz_scratch")
    assert entry.doc == "A scratch component."
    assert entry.fields() == {
        "width": {"type": "int", "default": 3, "required": False, "description": "how wide"}
    }


def test_duplicate_name_raises_naming_both_classes(scratch):
    @scratch("attention", "zz_dup")
    class FirstConfig(ComponentConfig):
        name: Literal["zz_dup"] = "zz_dup"

    class SecondConfig(ComponentConfig):
        name: Literal["zz_dup"] = "zz_dup"

    with pytest.raises(DuplicateComponentError) as info:
        register("attention", "zz_dup")(SecondConfig)
    msg = str(info.value)
    assert "zz_dup" in msg and "attention" in msg
    assert f"{FirstConfig.__module__}:{FirstConfig.__qualname__}" in msg
    assert f"{SecondConfig.__module__}:{SecondConfig.__qualname__}" in msg
    assert registry("attention").get("zz_dup") is FirstConfig  # the first one is kept


def test_registering_the_same_class_again_is_allowed(scratch):
    class AgainConfig(ComponentConfig):
        name: Literal["zz_again"] = "zz_again"

    scratch("attention", "zz_again")(AgainConfig)
    scratch("attention", "zz_again")(AgainConfig)  # a module imported twice (reload)
    assert registry("attention").get("zz_again") is AgainConfig


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(UnknownComponentError) as info:
        registry("attention").get("nonexistent")
    msg = str(info.value)
    assert "'nonexistent'" in msg
    for name in BUILTIN_ATTENTION:
        assert name in msg
    assert isinstance(info.value, KeyError)
    assert not msg.startswith('"')  # not KeyError's quoted repr


def test_unknown_kind_lists_the_kinds():
    with pytest.raises(UnknownComponentError) as info:
        registry("tokenizer")
    for kind in KINDS:
        assert kind in str(info.value)


def test_register_rejects_non_configs_and_configs_without_name():
    with pytest.raises(RegistryError, match="not a ComponentConfig"):
        register("attention", "zz_plain")(dict)

    class NoNameConfig(ComponentConfig):
        width: int = 1

    with pytest.raises(RegistryError, match="`name` field"):
        register("attention", "zz_noname")(NoNameConfig)
    assert "zz_noname" not in registry("attention")


def test_required_fields_are_described(scratch):
    @scratch("attention", "zz_required")
    class RequiredConfig(ComponentConfig):
        name: Literal["zz_required"] = "zz_required"
        window: int

    fields = registry("attention").entry("zz_required").fields()
    assert fields["window"]["required"] is True and fields["window"]["default"] is None


GOOD_PLUGIN = '''
from typing import Literal
from zonkey.core.contracts.registry import ComponentConfig, register


@register("attention", "zz_plugin_good")
class GoodPluginConfig(ComponentConfig):
    """Attention from a third-party package."""

    name: Literal["zz_plugin_good"] = "zz_plugin_good"
'''

CALLABLE_PLUGIN = '''
from typing import Literal
from zonkey.core.contracts.registry import ComponentConfig, register


def setup():
    @register("attention", "zz_plugin_callable")
    class CallablePluginConfig(ComponentConfig):
        name: Literal["zz_plugin_callable"] = "zz_plugin_callable"
'''

BAD_PLUGIN = 'raise RuntimeError("boom from a broken plugin")\n'


@pytest.fixture
def fake_plugins(tmp_path, monkeypatch):
    """Three entry points in the zonkey group: a broken module, a good module, a setup callable."""
    modules = {"zz_plugin_bad": BAD_PLUGIN, "zz_plugin_good": GOOD_PLUGIN, "zz_plugin_fn": CALLABLE_PLUGIN}
    for mod, src in modules.items():
        (tmp_path / f"{mod}.py").write_text(textwrap.dedent(src))
    monkeypatch.syspath_prepend(str(tmp_path))
    eps = [
        importlib.metadata.EntryPoint(name="broken", value="zz_plugin_bad", group=ENTRY_POINT_GROUP),
        importlib.metadata.EntryPoint(name="good", value="zz_plugin_good", group=ENTRY_POINT_GROUP),
        importlib.metadata.EntryPoint(name="fn", value="zz_plugin_fn:setup", group=ENTRY_POINT_GROUP),
    ]

    def entry_points(**params):
        return [ep for ep in eps if ep.group == params.get("group")]

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    monkeypatch.setattr(registry_mod, "_plugin_report", None)  # restored afterwards
    yield
    for name in ("zz_plugin_good", "zz_plugin_callable"):
        registry("attention").unregister(name)
    for mod in modules:
        sys.modules.pop(mod, None)


def test_plugins_load_and_a_broken_one_is_reported(fake_plugins):
    before = set(registry("attention").names())
    with pytest.warns(UserWarning, match="'broken'.*boom from a broken plugin"):
        report = load_plugins(reload=True)

    assert report.failed.keys() == {"broken"}
    assert "RuntimeError: boom from a broken plugin" in report.failed["broken"]
    assert report.loaded == ["good", "fn"]  # the broken one, listed first, did not stop the others
    after = set(registry("attention").names())
    assert after == before | {"zz_plugin_good", "zz_plugin_callable"}
    assert registry("attention").entry("zz_plugin_good").doc == "Attention from a third-party package."

    assert load_plugins() is report  # loaded once; later calls reuse the report

    # a plugin component validates in a recipe exactly like a built-in one
    recipe = validate_recipe({"model": {"attention": {"name": "zz_plugin_good"}, "levels": [{}]}})
    assert recipe.model.attention.name == "zz_plugin_good"


# ------------------------------------------------------------------------------ build signatures


def test_a_level_component_must_build_from_its_level_context_alone():
    class KwargsConfig(ComponentConfig):
        name: Literal["zz_kwargs"] = "zz_kwargs"

        def build(self, ctx, **_):
            return None

    class OptionalConfig(ComponentConfig):
        name: Literal["zz_optional"] = "zz_optional"

        def build(self, ctx=None):
            return None

    for kind, cls in (("splitter", KwargsConfig), ("stitcher", OptionalConfig)):
        with pytest.raises(RegistryError) as info:
            register(kind, cls.model_fields["name"].default)(cls)
        msg = str(info.value)
        assert f"{kind} component" in msg and "must define build(self, ctx)" in msg and "got build(" in msg
        assert cls.model_fields["name"].default not in registry(kind)


def test_an_attention_backend_builds_without_a_context():
    class CtxConfig(ComponentConfig):
        name: Literal["zz_ctx"] = "zz_ctx"

        def build(self, ctx):
            return None

    with pytest.raises(RegistryError, match=r"attention component 'zz_ctx' .* must define build\(self\); got build\(self, ctx\)"):
        register("attention", "zz_ctx")(CtxConfig)


def test_the_right_build_signature_registers(scratch):
    @scratch("compressor", "zz_right")
    class RightConfig(ComponentConfig):
        name: Literal["zz_right"] = "zz_right"

        def build(self, ctx):
            return ctx

    assert registry("compressor").config("zz_right").build("the context") == "the context"


def test_a_config_without_build_registers_and_refuses_to_build(scratch):
    @scratch("denoiser", "zz_fields_only")
    class FieldsOnlyConfig(ComponentConfig):
        name: Literal["zz_fields_only"] = "zz_fields_only"

    with pytest.raises(RegistryError, match="FieldsOnlyConfig does not define build"):
        registry("denoiser").config("zz_fields_only").build(None)


# ------------------------------------------------------------------------------------ built-ins


class _FakeDist:
    def __init__(self, name: str) -> None:
        self.metadata = {"Name": name}


class _FakeEntryPoint:
    def __init__(self, name: str, value: str, dist: str | None, loaded: list[str]) -> None:
        self.name, self.value, self.group = name, value, ENTRY_POINT_GROUP
        self.dist = None if dist is None else _FakeDist(dist)
        self._loaded = loaded

    def load(self):
        self._loaded.append(self.value)


@pytest.fixture
def builtins_unloaded(monkeypatch):
    """The registry as on first use: built-ins not loaded yet, imports recorded instead of made."""
    imported: list[str] = []
    monkeypatch.setattr(registry_mod, "_builtins_loaded", False)
    # the registry module's own view of importlib: other imports are unaffected
    monkeypatch.setattr(registry_mod, "importlib", SimpleNamespace(import_module=imported.append, metadata=importlib.metadata))
    return imported


def test_builtins_load_through_zonkeys_own_entry_point(builtins_unloaded, monkeypatch):
    loaded: list[str] = []
    eps = [_FakeEntryPoint("builtin", "zonkey.components", "zonkey", loaded),
           _FakeEntryPoint("other", "zz_other_plugin", "someone-else", loaded)]
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **params: eps)
    registry_mod.ensure_builtin_components()
    assert loaded == ["zonkey.components"]  # a third-party entry waits for load_plugins
    assert builtins_unloaded == []  # no import by name needed
    registry_mod.ensure_builtin_components()
    assert loaded == ["zonkey.components"]  # once


def test_builtins_are_imported_by_name_where_the_metadata_lacks_the_entry(builtins_unloaded, monkeypatch):
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **params: [])
    registry_mod.ensure_builtin_components()
    assert builtins_unloaded == [registry_mod.BUILTIN_MODULE] == ["zonkey.components"]


def test_load_plugins_does_not_report_zonkeys_own_entry(monkeypatch):
    loaded: list[str] = []
    eps = [_FakeEntryPoint("builtin", "zonkey.components", "zonkey", loaded),
           _FakeEntryPoint("third", "zz_third_plugin", "third-party", loaded)]
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **params: eps)
    monkeypatch.setattr(registry_mod, "_plugin_report", None)
    report = load_plugins(reload=True)
    assert report.loaded == ["third"] and loaded == ["zz_third_plugin"]


def test_the_package_declares_its_builtin_entry_point():
    tomllib = pytest.importorskip("tomllib")
    pyproject = tomllib.loads((Path(__file__).parents[3] / "pyproject.toml").read_text())
    group = pyproject["project"]["entry-points"][ENTRY_POINT_GROUP]
    assert registry_mod.BUILTIN_MODULE in group.values()
