"""Hub save/load, offline: `zonkey push` against a recording stand-in for the upload, and
`zonkey.load("hf://...")` through the real `snapshot_download` reading a local hub cache."""

from __future__ import annotations

import builtins
import json
import shutil
import sys

import pytest
import torch
from typer.testing import CliRunner

import zonkey
from tests.helpers import train_micro_run
from zonkey import hub
from zonkey.cli.app import app

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("single_thread")
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = train_micro_run(tmp_path_factory.mktemp("hub"), steps=2)
    (run / "eval.json").write_text(json.dumps({"recon_acc": 0.5, "boundary": {"f1": 0.25}, "note": "x"}))
    return run


def _same_weights(a: zonkey.api.ZonkeyModel, b: zonkey.api.ZonkeyModel) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _fake_cache(root, staged, repo="org/micro"):
    """A hub cache as huggingface_hub lays it out: refs/main -> snapshots/<commit>/files."""
    folder = root / f"models--{repo.replace('/', '--')}"
    shutil.copytree(staged, folder / "snapshots" / COMMIT)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(COMMIT)
    (folder / "refs" / "v1").write_text(COMMIT)
    return root


def test_stage_writes_recipe_weights_state_and_a_card_with_the_eval_table(run_dir, tmp_path):
    files = hub.stage(run_dir, tmp_path / "out", repo="org/micro")
    assert "recipe.json" in files and "README.md" in files
    weights = [f for f in files if f.endswith(".safetensors")]
    assert weights and all(f.split("/")[-1] in ("model.safetensors", "ema.safetensors") for f in weights)
    assert not any("optimizer" in f or "rng" in f for f in files)
    state = json.loads((tmp_path / "out" / weights[0]).with_name("state.json").read_text())
    assert set(state["files"]) == {w.split("/")[-1] for w in weights}
    card = (tmp_path / "out" / "README.md").read_text()
    assert 'zonkey.load("hf://org/micro")' in card
    assert "| recon_acc | 0.5 |" in card and "| boundary.f1 | 0.25 |" in card and "note" not in card


def test_load_from_a_local_hub_cache_at_a_revision(run_dir, tmp_path):
    hub.stage(run_dir, tmp_path / "out")
    cache = _fake_cache(tmp_path / "cache", tmp_path / "out")
    local = zonkey.load(run_dir)
    for address in ("hf://org/micro", "hf://org/micro@v1"):
        path = hub.download(address, cache_dir=cache, local_files_only=True)
        assert path == cache / "models--org--micro" / "snapshots" / COMMIT
        assert _same_weights(zonkey.load(path), local)  # verified against state.json's SHA-256
    with pytest.raises(hub.HubError, match=r"hf://org/micro@nope: cannot download"):
        hub.download("hf://org/micro@nope", cache_dir=cache, local_files_only=True)


def test_load_hf_address_passes_repo_and_revision_to_snapshot_download(run_dir, tmp_path, monkeypatch):
    import huggingface_hub

    hub.stage(run_dir, tmp_path / "out")
    calls = []

    def fake_snapshot_download(**kw):
        calls.append(kw)
        return str(tmp_path / "out")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    model = zonkey.load("hf://org/micro@abc123")
    assert calls[0]["repo_id"] == "org/micro" and calls[0]["revision"] == "abc123"
    assert _same_weights(model, zonkey.load(run_dir))
    assert zonkey.sample(model, 1, steps=1) == zonkey.sample(run_dir, 1, steps=1)


@pytest.mark.parametrize("address", ["hf://", "hf://noslash", "hf://org/name@", "hf://a/b/c"])
def test_malformed_addresses_are_one_line_errors(address):
    with pytest.raises(hub.HubError, match="expected hf://org/name"):
        zonkey.load(address)


def test_missing_hub_package_is_a_one_line_error(monkeypatch):
    real_import = builtins.__import__

    def no_hub(name, *args, **kwargs):
        if name == "huggingface_hub":
            raise ImportError("No module named 'huggingface_hub'")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "huggingface_hub", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_hub)
    with pytest.raises(hub.HubError, match=r'pip install "zonkey\[hub\]"'):
        zonkey.load("hf://org/micro")


class _RecordingApi:
    calls: list[tuple[str, dict]] = []

    def __init__(self, token=None):
        self.token = token

    def create_repo(self, repo_id, **kw):
        self.calls.append(("create_repo", {"repo_id": repo_id, **kw}))

    def upload_folder(self, *, folder_path, **kw):
        files = sorted(p.relative_to(folder_path).as_posix() for p in __import__("pathlib").Path(folder_path).rglob("*")
                       if p.is_file())
        self.calls.append(("upload_folder", {**kw, "files": files}))
        return type("Info", (), {"commit_url": f"https://huggingface.co/{kw['repo_id']}/commit/{COMMIT}"})()


def test_push_command_uploads_recipe_weights_and_card(run_dir, monkeypatch):
    import huggingface_hub

    _RecordingApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", _RecordingApi)
    res = runner.invoke(app, ["push", str(run_dir), "org/micro", "--private"])
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == f"https://huggingface.co/org/micro/commit/{COMMIT}"
    (_, create), (_, upload) = _RecordingApi.calls
    assert create["repo_id"] == "org/micro" and create["private"] is True
    assert {"recipe.json", "README.md"} <= set(upload["files"])
    assert any(f.endswith("/model.safetensors") for f in upload["files"])


def test_push_errors_are_one_line(run_dir, tmp_path, monkeypatch):
    import huggingface_hub

    res = runner.invoke(app, ["push", str(tmp_path), "org/micro"])
    assert res.exit_code == 1 and "not a run directory" in res.stderr and "Traceback" not in res.output

    class Failing(_RecordingApi):
        def create_repo(self, repo_id, **kw):
            raise OSError("401 Client Error: Unauthorized\nfor url ...")

    monkeypatch.setattr(huggingface_hub, "HfApi", Failing)
    res = runner.invoke(app, ["push", str(run_dir), "org/micro"])
    assert res.exit_code == 1 and len(res.stderr.strip().splitlines()) == 1
    assert "org/micro: upload failed: 401 Client Error" in res.stderr


def test_cli_commands_take_a_hub_address(run_dir, tmp_path, monkeypatch):
    import huggingface_hub

    hub.stage(run_dir, tmp_path / "out")
    seen = []

    def fake_snapshot_download(**kw):
        seen.append((kw["repo_id"], kw["revision"]))
        return str(tmp_path / "out")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    res = runner.invoke(app, ["sample", "hf://org/micro@v1", "-n", "2", "--steps", "1", "--json"])
    assert res.exit_code == 0, res.output
    local = runner.invoke(app, ["sample", str(run_dir), "-n", "2", "--steps", "1", "--json"])
    assert seen == [("org/micro", "v1")] and res.stdout == local.stdout
