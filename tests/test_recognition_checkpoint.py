"""One recognition checkpoint loader for the runtime camera and the exporter: complete weights or an error."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from metagait_edge.checkpoint import CheckpointError, save_checkpoint  # noqa: E402
from metagait_edge.commands.export import load_recognition  # noqa: E402
from metagait_edge.config import to_dict  # noqa: E402
from metagait_edge.models.metagait import MetaGait, MetaGaitConfig  # noqa: E402
from metagait_edge.recognition.checkpoint import load_recognition_checkpoint  # noqa: E402
from metagait_edge.runtime.camera import load_recognition_model  # noqa: E402


def _model() -> MetaGait:
    torch.manual_seed(3)
    return MetaGait(MetaGaitConfig.cpu(channels=(8, 16, 32), num_classes=0))


def _save(tmp_path, name, model, state) -> str:
    save_checkpoint(tmp_path / name, state, {"model": to_dict(model.config)}, model_class="MetaGait")
    return str(tmp_path / name)


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("prefix", ["", "model."])
def test_every_loader_gives_the_saved_weights_with_or_without_the_wrapper_prefix(tmp_path, prefix):
    model = _model()
    path = _save(tmp_path, "rec", model, {prefix + k: v for k, v in model.state_dict().items()})
    for loaded in (load_recognition_checkpoint(path), load_recognition_model(path), load_recognition(path)):
        assert _same_weights(loaded, model)
    assert load_recognition_model(path).source.endswith("rec.safetensors")


def test_a_checkpoint_with_missing_weights_is_refused_naming_them(tmp_path):
    model = _model()
    state = model.state_dict()
    dropped = sorted(k for k in state if k.endswith(".weight"))[0]
    path = _save(tmp_path, "partial", model, {k: v for k, v in state.items() if k != dropped})
    for load in (load_recognition_checkpoint, load_recognition_model, load_recognition):
        with pytest.raises(CheckpointError, match=rf"1 weight\(s\) missing: {dropped}"):
            load(path)


def test_a_checkpoint_with_unexpected_or_misshapen_weights_is_refused(tmp_path):
    model = _model()
    state = dict(model.state_dict())
    extra = _save(tmp_path, "extra", model, {**state, "head.surplus": torch.zeros(3)})
    with pytest.raises(CheckpointError, match=r"unexpected weight\(s\): head.surplus"):
        load_recognition_model(extra)
    name = next(k for k, v in state.items() if v.ndim > 1)
    state[name] = torch.zeros(*state[name].shape[:-1], state[name].shape[-1] + 1)
    with pytest.raises(CheckpointError, match="do not fit MetaGait"):
        load_recognition_checkpoint(_save(tmp_path, "shape", model, state))


def test_torch_backend_merges_a_weight_subset_over_the_model_and_refuses_unknown_names():
    from metagait_edge.deploy.backends import TorchBackend
    from metagait_edge.deploy.parity import example_inputs

    model = _model().eval()
    backend = TorchBackend(model, "recognition")
    x = example_inputs("recognition", model, 1, seed=0)
    before = backend.run(x)["embeddings"]
    name = next(k for k, v in model.state_dict().items() if k.endswith(".weight") and v.ndim > 1)
    backend.swap_weights({name: torch.zeros_like(model.state_dict()[name])})
    after = backend.run(x)["embeddings"]
    assert torch.equal(backend._module.state_dict()[name], torch.zeros_like(model.state_dict()[name]))
    others = [k for k in model.state_dict() if k != name]
    assert all(torch.equal(backend._module.state_dict()[k], model.state_dict()[k]) for k in others)
    assert not (before == after).all()
    with pytest.raises(KeyError, match="nope"):
        backend.swap_weights({"nope": torch.zeros(1)})
