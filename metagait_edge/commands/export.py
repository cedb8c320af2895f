"""``metagait-edge export``: ONNX export of the recognition model or the personalization TCN.

Writes the ONNX file, checks it (``onnx.checker``, TensorRT 10 operator allow-list, ONNX Runtime
parity with PyTorch on random and realistic inputs) and, with ``--golden DIR``, saves golden inputs and
outputs (npz; polygraphy JSON as well where polygraphy is installed) for the same check on the Jetson.
"""

from __future__ import annotations

import argparse

NAME = "export"
HELP = "export the recognition model or the personalization TCN to ONNX, check it and save golden data"

PRESETS = ("cpu", "casia_b", "edge")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", choices=("recognition", "tcn"), required=True, help="which network")
    parser.add_argument("--out", required=True, metavar="PATH", help="ONNX file to write")
    parser.add_argument("--checkpoint", metavar="PATH",
                        help="trained weights (safetensors + JSON sidecar); without it the weights are random "
                             "(for pipeline tests and benchmarks only)")
    parser.add_argument("--adapted", metavar="PATH",
                        help="tcn only: calibrated fast weights (safetensors, named like named_parameters()) to "
                             "export instead of the checkpoint's; the graph is identical, only weights differ")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17; default 17)")
    parser.add_argument("--golden", metavar="DIR", help="save golden inputs/outputs here for on-device checks")
    parser.add_argument("--preset", choices=PRESETS, default="cpu",
                        help="recognition without --checkpoint: model size (cpu, casia_b, edge; default cpu)")
    parser.add_argument("--channels", type=int, default=42,
                        help="tcn without --checkpoint: signal channels C (input 3C x 101; default 42)")
    parser.add_argument("--frames", type=int, default=30, help="recognition: frames traced (default 30)")
    parser.add_argument("--static-frames", action="store_true", help="recognition: fix the frame axis at --frames")


def load_recognition(checkpoint: str | None, preset: str = "cpu"):
    """MetaGait from a checkpoint (config from its sidecar) or a randomly initialised preset."""
    from metagait_edge.deploy.export import edge_metagait_config
    from metagait_edge.models.metagait import MetaGait, MetaGaitConfig
    from metagait_edge.recognition.checkpoint import load_recognition_checkpoint

    if checkpoint is None:
        cfg = {"cpu": MetaGaitConfig.cpu, "casia_b": MetaGaitConfig.casia_b, "edge": edge_metagait_config}[preset]()
        return MetaGait(cfg).eval()
    return load_recognition_checkpoint(checkpoint)


def load_tcn(checkpoint: str | None, channels: int = 42):
    """The personalization ``CycleModel`` from a personalization checkpoint (pooled or MAML) or random."""
    from metagait_edge.personalization.model import CycleModel, CycleModelConfig

    if checkpoint is None:
        import torch

        model = CycleModel(CycleModelConfig(channels=channels)).eval()
        # A fresh CycleModel's head is zero (output = template): give it small values so that parity
        # checks of a random-weight export exercise the whole TCN.
        with torch.no_grad():
            model.tcn.head.weight.copy_(0.05 * torch.randn(model.tcn.head.weight.shape,
                                                           generator=torch.Generator().manual_seed(0)))
        return model
    from metagait_edge.checkpoint import load_checkpoint
    from metagait_edge.config import ConfigError, from_dict
    from metagait_edge.personalization.config import PersonalizationConfig

    ck = load_checkpoint(checkpoint)
    try:
        config = from_dict(PersonalizationConfig, ck.config)
    except ConfigError as exc:
        raise ValueError(f"{ck.path}: config is not a personalization config: {exc}") from exc
    try:
        problem, n = ck.extra["problem"], len(ck.extra["channels"])
    except KeyError as exc:
        raise ValueError(f"{ck.path}: sidecar extra lacks {exc} (problem, channels)") from exc
    from metagait_edge.personalization.train import model_config

    model = CycleModel(model_config(config, problem, n))
    # A MAML checkpoint holds the model under "model." plus its learned inner learning rates.
    state = {k[len("model."):]: v for k, v in ck.state_dict.items() if k.startswith("model.")} or ck.state_dict
    model.load_state_dict(state)
    return model.eval()


def run(args: argparse.Namespace) -> int:
    import importlib.util
    from pathlib import Path

    import torch

    from metagait_edge.deploy import export as E, golden, parity

    torch.set_num_threads(1)
    if args.adapted and args.model != "tcn":
        raise ValueError("--adapted applies to --model tcn only")
    if args.model == "recognition":
        model = load_recognition(args.checkpoint, args.preset)
        report = E.export_recognition(model, args.out, opset=args.opset, frames=args.frames,
                                      dynamic_frames=not args.static_frames)
        params = None
    else:
        model = load_tcn(args.checkpoint, args.channels)
        params = None
        if args.adapted:
            from safetensors.torch import load_file

            if not Path(args.adapted).is_file():
                raise FileNotFoundError(f"--adapted: fast-weights file not found: {args.adapted}")
            params = load_file(args.adapted)
        report = E.export_tcn(model, args.out, params, opset=args.opset)
    if args.checkpoint is None:
        print("note     : random weights (no --checkpoint): for pipeline tests and benchmarks only")
    print(report.summary())
    print(f"ops      : {', '.join(report.ops)} (all in the TensorRT 10 allow-list)")
    for note in report.notes:
        print(f"note     : {note}")
    import onnxruntime as ort

    session = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    (in_name,), (out_name,) = report.inputs, report.outputs
    frames = args.frames
    atol, rtol = parity.FP32_ATOL[args.model], parity.FP32_RTOL
    for realistic in (False, True):
        x = parity.example_inputs(args.model, model, 2, realistic=realistic, seed=1)
        if args.model == "recognition" and frames != x.shape[1]:
            x = _frames(x, frames)
        want = parity.torch_reference(args.model, model, x, params)
        (got,) = session.run(None, {in_name: x})
        err = golden.compare({out_name: got}, {out_name: want}, atol, rtol, where=f"{report.path} vs PyTorch")
        kind = "realistic" if realistic else "random"
        print(f"parity   : onnxruntime vs torch on {kind} inputs {tuple(x.shape)}: max abs error "
              f"{err[out_name]:.2e} (tolerance {atol} + {rtol} * |ref|)")
        if args.golden and realistic:
            path = golden.save_golden(args.golden, Path(args.out).stem, {in_name: x}, {out_name: want}, atol=atol, rtol=rtol)
            print(f"golden   : {path}")
            if importlib.util.find_spec("polygraphy") is not None:
                from metagait_edge.deploy.golden import write_polygraphy_json

                for p in write_polygraphy_json(path):
                    print(f"golden   : {p}")
            else:
                print("golden   : polygraphy is not installed here; convert on the Jetson with "
                      "`python -m metagait_edge.deploy.golden " + str(path) + "`")
    return 0


def _frames(x, frames: int):
    import numpy as np

    reps = -(-frames // x.shape[1])
    return np.ascontiguousarray(np.concatenate([x] * reps, axis=1)[:, :frames])
